"""Config management (issue 4) against the onepanel simulator: GET /v1/config,
GET /v1/config/file and POST /v1/config/apply, black-box.

The simulator's config file lives alone in the allowed dir (tmp/conf); its
logs, pid file and control file stay in tmp/run, outside it, so "nothing
changed" can be checked as "the allowed dir is exactly as before" (content,
mode, owner, file type, no stray temp files).

"Nothing was signalled" is never checked by waiting for a SIGHUP that does
not come: a later operation that does signal (an apply, or the test's own
SIGHUP) is awaited instead, and then exactly one SIGHUP must be in the log.

Run: make BUILD=... all && AGENT_BIN=... SIM_BIN=... /usr/bin/python3 -m pytest -q tests/e2e/test_config_apply.py
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from conftest import DEADLINE, SIM_BIN, SSE, agent_yaml, wait_for, yq
from simhelpers import Sim, pid_gone, render_config

# one POST may run a validator and wait for a reload (slow under ASan)
APPLY_TIMEOUT = max(120.0, 4 * DEADLINE)
SIGHUP_RX = re.compile(r"\[notice\] \d+#\d+: signal 1 \(SIGHUP\) received, reconfiguring$", re.M)
HEX_RX = re.compile(r"[0-9a-f]{8,}")
FILE_KEYS = ("path", "action", "existed", "sha256_before", "sha256_after")

OK_EVENTS = ["ONEPANEL_RELOAD_SUCCESS_MESSAGE", "CONFIG_APPLY_SUCCESS_MESSAGE"]
RELOAD_FAIL_EVENTS = ["ONEPANEL_RELOAD_FAILED_MESSAGE", "CONFIG_ROLLBACK_SUCCESS_MESSAGE",
                      "CONFIG_APPLY_FAILURE_MESSAGE"]


# ---------------------------------------------------------------- helpers

def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class ConfSim(Sim):
    """onepanel-sim whose config file is alone in conf_dir (the allowed dir)."""

    def __init__(self, tmp_path, conf_dir=None, conf_name="onepanel.conf", **directives):
        d = {"message": "v1", "workers": 2}
        d.update(directives)
        super().__init__(Path(tmp_path) / "run", **d)
        os.unlink(self.config_path)
        self.conf_dir = Path(conf_dir) if conf_dir else Path(tmp_path) / "conf"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.conf_dir / conf_name
        self.write_config()

    def text(self, **changes) -> str:
        """The config text with changes, without writing it."""
        d = dict(self.directives)
        d.update(changes)
        return render_config(d)

    def log_since(self, mark: int) -> str:
        with open(self.error_log, "rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")

    def sighups(self, mark: int) -> int:
        return len(SIGHUP_RX.findall(self.log_since(mark)))

    def serves(self, message: str) -> bool:
        r = self.get("/")
        return r.status_code == 200 and f"message: {message}\n" in r.text


def onepanel_cfg(sim: ConfSim, **over) -> dict:
    d = {
        "binary": SIM_BIN,
        "pid_file": yq(sim.pid_file),
        "config_file": yq(sim.config_path),
        "allowed_dirs": f"[{yq(sim.conf_dir)}]",
        "validate_command": yq(f"{SIM_BIN} -t -c {{config}}"),
        "reload_timeout": "20s",
        "access_logs": f"[{{ path: {yq(sim.access_log)}, format: combined }}]",
        "error_logs": f"[{{ path: {yq(sim.error_log)} }}]",
    }
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


@pytest.fixture
def sims():
    made = []

    def make(*a, **kw):
        s = ConfSim(*a, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def session():
    s = requests.Session()
    s.trust_env = False
    return s


def post_apply(a, body, raw=False):
    """POST /v1/config/apply; body is a dict (sent as JSON) or bytes (raw=True)."""
    with session() as s:
        if raw:
            r = s.post(a.base + "/v1/config/apply", data=body,
                       headers={"Content-Type": "application/json"}, timeout=APPLY_TIMEOUT)
        else:
            r = s.post(a.base + "/v1/config/apply", json=body, timeout=APPLY_TIMEOUT)
    return r


def apply(a, files, **opts):
    r = post_apply(a, {"files": files, **opts})
    try:
        j = r.json()
    except ValueError:
        raise AssertionError(f"non-JSON answer {r.status_code}: {r.text[:500]!r}")
    return r.status_code, j


def check_result_shape(j):
    assert HEX_RX.fullmatch(j["correlation_id"]), j
    assert isinstance(j["status"], str) and isinstance(j["message"], str), j
    assert isinstance(j["reloaded"], bool), j
    assert isinstance(j["events"], list) and all(isinstance(s, int) for s in j["events"]), j
    assert isinstance(j["files"], list), j


def get_json(a, endpoint, **params):
    with session() as s:
        r = s.get(a.base + endpoint, params=params, timeout=30)
    return r.status_code, r.json()


def list_config(a):
    code, j = get_json(a, "/v1/config")
    assert code == 200, j
    return j


def all_events(a, after):
    out = []
    while True:
        evs = a.get("/v1/events", params={"after": after, "limit": 100000}).json()["events"]
        if not evs:
            return out
        out.extend(evs)
        after = evs[-1]["seq"]


def apply_events(a, j, after):
    """The events of one apply: those carrying its correlation id since
    `after`; they must be exactly the seqs the result lists."""
    cid = j["correlation_id"]
    mine = [e for e in all_events(a, after) if e.get("correlation_id") == cid]
    assert [e["seq"] for e in mine] == j["events"], (j["events"], mine)
    return mine


def types(evs):
    return [e["type"] for e in evs]


def snapshot(root) -> dict:
    """Everything below root: files by content/mode/owner, links by target,
    other nodes by type. Symlinks are never followed."""
    root = str(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read(), st.st_mode, st.st_uid, st.st_gid)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode)
            else:
                out[rel] = ("node", st.st_mode, st.st_rdev)
    return out


def assert_same(before: dict, after: dict):
    """Byte-identical trees, with a readable diff."""
    if before == after:
        return
    added = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    raise AssertionError(f"tree changed: added {added}, removed {gone}, changed {changed}")


def mode_bits(m):
    """The listing's mode: an integer or an octal string."""
    if isinstance(m, str):
        return int(m, 8)
    return m


def start_agent(agents, tmp_path, sim, **over):
    a = agents(tmp_path, agent_yaml(onepanel_cfg(sim, **over)))
    if sim.running():
        a.wait_event("ONEPANEL_FOUND_MESSAGE", pred=lambda e: e["pid"] == sim.pid)
    return a


def wait_sighups(sim, mark, n):
    """Wait until n SIGHUPs are in the log since mark, then require exactly n."""
    wait_for(lambda: sim.sighups(mark) >= n, what=f"{n} SIGHUP(s) in the simulator's log")
    got = sim.sighups(mark)
    assert got == n, f"{got} SIGHUPs since the mark, expected {n}:\n{sim.log_since(mark)}"


def live_procs(pred) -> list[int]:
    """Live processes whose raw /proc/PID/cmdline satisfies pred."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read()
        except OSError:
            continue
        if pred(cmd) and not pid_gone(int(p)):
            out.append(int(p))
    return out


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# ---------------------------------------------------------------- listing and reading

def test_list_and_read_files(tmp_path, sims, agents):
    sim = sims(tmp_path)
    conf = sim.conf_dir
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP-SECRET-CONTENT\n")
    (conf / "sub" / "deeper").mkdir(parents=True)
    (conf / "sub" / "deeper" / "x.conf").write_text("x\n")
    (conf / "empty.conf").write_bytes(b"")
    blob = bytes((i * 37 + 11) % 256 for i in range(3000)) + b"\xff\xfe"
    (conf / "blob.bin").write_bytes(blob)
    (conf / "utf8.conf").write_text("h\u00e9llo \u2713\n", encoding="utf-8")
    os.chmod(conf / "utf8.conf", 0o600)
    os.symlink(sim.config_path, conf / "link.conf")                 # symlink inside
    os.symlink(outside / "secret.txt", conf / "evil.conf")          # symlink outside
    os.symlink(outside, conf / "outdir")                            # symlinked directory
    os.mkfifo(conf / "fifo")
    (tmp_path / "conf-evil").mkdir()
    (tmp_path / "conf-evil" / "f.conf").write_text("prefix sibling\n")
    a = start_agent(agents, tmp_path, sim)

    j = list_config(a)
    assert j["truncated"] is False
    real = os.path.realpath(conf)
    want = sorted(os.path.join(real, p) for p in
                  ("blob.bin", "empty.conf", "onepanel.conf", "sub/deeper/x.conf", "utf8.conf"))
    assert [f["path"] for f in j["files"]] == want
    for f in j["files"]:
        st = os.lstat(f["path"])
        data = open(f["path"], "rb").read()
        assert f["size"] == st.st_size == len(data)
        assert f["sha256"] == sha(data)
        assert mode_bits(f["mode"]) == stat.S_IMODE(st.st_mode), f
        assert f["mtime_unix_nano"] == st.st_mtime_ns, f

    # text, non-UTF-8, empty
    cfg = sim.config_path.read_bytes()
    code, f = get_json(a, "/v1/config/file", path=str(sim.config_path))
    assert code == 200, f
    assert f["content"] == cfg.decode() and "content_base64" not in f
    assert f["sha256"] == sha(cfg) and f["size"] == len(cfg)
    assert f["path"] == os.path.join(real, "onepanel.conf")
    code, f = get_json(a, "/v1/config/file", path=str(conf / "utf8.conf"))
    assert code == 200 and f["content"] == "h\u00e9llo \u2713\n", f
    code, f = get_json(a, "/v1/config/file", path=str(conf / "blob.bin"))
    assert code == 200, f
    assert "content" not in f and base64.b64decode(f["content_base64"]) == blob
    assert f["sha256"] == sha(blob) and f["size"] == len(blob)
    code, f = get_json(a, "/v1/config/file", path=str(conf / "empty.conf"))
    assert code == 200 and f["content"] == "" and f["size"] == 0, f
    code, f = get_json(a, "/v1/config/file", path=str(conf / "sub" / "deeper" / "x.conf"))
    assert code == 200 and f["content"] == "x\n", f

    # refusals
    for p, codes in [
        (outside / "secret.txt", {403}),               # absolute, outside
        (tmp_path / "conf-evil" / "f.conf", {403}),    # prefix of the allowed dir, but a sibling
        (conf / "evil.conf", {403}),                   # symlink (to outside)
        (conf / "link.conf", {403}),                   # symlink (to inside)
        (conf / "outdir" / "secret.txt", {403}),       # symlinked parent
        (conf / "sub", {403}),                         # directory
        (conf / "fifo", {403}),                        # FIFO: refused, and must not block
        (conf / "nope.conf", {404}),
        (f"{conf}/../outside/secret.txt", {400, 403}),
        ("onepanel.conf", {400}),                      # relative
        ("", {400}),
    ]:
        code, body = get_json(a, "/v1/config/file", path=str(p))
        assert code in codes, (p, code, body)
        assert "TOP-SECRET-CONTENT" not in json.dumps(body), body
    with session() as s:
        assert s.get(a.base + "/v1/config/file", timeout=30).status_code == 400
    assert a.get("/healthz").status_code == 200


# ---------------------------------------------------------------- the happy path

def test_apply_changes_message_and_reports(tmp_path, sims, agents):
    sim = sims(tmp_path)
    sim.start()
    a = start_agent(agents, tmp_path, sim)
    conf = sim.config_path
    os.chmod(conf, 0o640)
    os.chown(conf, 4321, 4322)
    old = conf.read_bytes()
    new = sim.text(message="v2").encode()
    old_workers = sim.wait_workers(2)
    assert sim.serves("v1")
    before = a.last_seq()
    mark = sim.error_mark()
    stream = SSE(a.port, f"/v1/events/stream?after={before}&type={','.join(OK_EVENTS)}")
    assert stream.status == 200

    code, j = apply(a, [{"path": str(conf), "content": new.decode()}])
    assert code == 200, j
    check_result_shape(j)
    assert j["status"] == "applied" and j["reloaded"] is True, j
    v = j["validator"]
    assert v["exit_code"] == 0 and v["timed_out"] is False and "syntax is ok" in v["output"], v
    assert [{k: f[k] for k in FILE_KEYS} for f in j["files"]] == [
        {"path": os.path.realpath(conf), "action": "write", "existed": True,
         "sha256_before": sha(old), "sha256_after": sha(new)}]

    # the simulator reloaded once and serves the new message from new workers
    sim.wait_message("v2", timeout=DEADLINE)
    sim.wait_workers(2, exclude=old_workers, timeout=DEADLINE)
    wait_sighups(sim, mark, 1)
    st = a.get("/v1/status").json()["onepanel"]
    assert st["state"] == "running" and st["pid"] == sim.pid

    # events: reload success then apply success, with the correlation id,
    # exactly the ones the result names; the validator run is no restart
    evs = apply_events(a, j, before)
    assert types(evs) == OK_EVENTS
    others = [e["type"] for e in all_events(a, before) if e.get("correlation_id") != j["correlation_id"]]
    assert "ONEPANEL_STOP_MESSAGE" not in others and "ONEPANEL_FOUND_MESSAGE" not in others, others
    got = [stream.next(), stream.next()]
    stream.close()
    assert [e["event"] for e in got] == OK_EVENTS
    assert [e["id"] for e in got] == j["events"]
    assert all(e["data"]["correlation_id"] == j["correlation_id"] for e in got)

    # audit-logged: who, what, outcome
    a.log.wait_line(rf"audit: config apply {j['correlation_id']} from rest:127\.0\.0\.1.*: applied; "
                    rf"files: {re.escape(os.path.realpath(conf))} {sha(old)[:12]}->{sha(new)[:12]}")

    # the file: new content, same mode and owner, no temp files left
    st = os.lstat(conf)
    assert conf.read_bytes() == new
    assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == (4321, 4322)
    assert sorted(os.listdir(sim.conf_dir)) == ["onepanel.conf"]

    # the API shows it
    entry = [f for f in list_config(a)["files"] if f["path"] == os.path.realpath(conf)]
    assert entry and entry[0]["sha256"] == sha(new) and entry[0]["size"] == len(new)
    code, f = get_json(a, "/v1/config/file", path=str(conf))
    assert code == 200 and f["content"] == new.decode() and f["sha256"] == sha(new), f

    # a second apply gets its own correlation id
    code, j2 = apply(a, [{"path": str(conf), "content": sim.text(message="v3")}])
    assert code == 200 and j2["status"] == "applied", j2
    assert j2["correlation_id"] != j["correlation_id"]
    sim.wait_message("v3", timeout=DEADLINE)


def test_dry_run_validates_and_changes_nothing(tmp_path, sims, agents):
    sim = sims(tmp_path)
    sim.start()
    a = start_agent(agents, tmp_path, sim)
    before_tree = snapshot(sim.conf_dir)
    before = a.last_seq()
    mark = sim.error_mark()

    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2")},
                        {"path": str(sim.conf_dir / "new.conf"), "content": "new\n"}], dry_run=True)
    assert code == 200, j
    check_result_shape(j)
    assert j["status"] == "dry_run_ok" and j["reloaded"] is False, j
    assert j["validator"]["exit_code"] == 0 and "syntax is ok" in j["validator"]["output"], j
    assert_same(before_tree, snapshot(sim.conf_dir))
    assert sim.serves("v1")
    apply_events(a, j, before)

    # a dry run of a bad config says so, and changes nothing either
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text() + "bogus_directive on;\n"}],
                    dry_run=True)
    assert code == 422 and j["status"] == "invalid", j
    assert_same(before_tree, snapshot(sim.conf_dir))

    # barrier: a real apply signals once, so the dry runs signalled nothing
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v3")}])
    assert code == 200 and j["status"] == "applied", j
    sim.wait_message("v3", timeout=DEADLINE)
    wait_sighups(sim, mark, 1)


# ---------------------------------------------------------------- validation failures

def test_invalid_config_restores_files(tmp_path, sims, agents):
    sim = sims(tmp_path)
    sim.start()
    a = start_agent(agents, tmp_path, sim)
    conf = sim.config_path
    os.chmod(conf, 0o600)
    (sim.conf_dir / "extra.conf").write_text("keep me\n")
    old = conf.read_bytes()
    before_tree = snapshot(sim.conf_dir)
    before = a.last_seq()
    mark = sim.error_mark()
    bad = sim.text(message="v2") + "bogus_directive on;\n"

    code, j = apply(a, [{"path": str(conf), "content": bad},
                        {"path": str(sim.conf_dir / "extra.conf"), "content": "changed\n"}])
    assert code == 422, j
    check_result_shape(j)
    assert j["status"] == "invalid" and j["reloaded"] is False, j
    v = j["validator"]
    assert v["exit_code"] == 1 and v["timed_out"] is False, v
    assert '[emerg] unknown directive "bogus_directive"' in v["output"], v

    # byte for byte as before (content, mode, owner), sha256 too
    assert conf.read_bytes() == old and sha(conf.read_bytes()) == sha(old)
    assert_same(before_tree, snapshot(sim.conf_dir))
    entry = [f for f in list_config(a)["files"] if f["path"] == os.path.realpath(conf)]
    assert entry[0]["sha256"] == sha(old)
    assert sim.serves("v1")

    evs = apply_events(a, j, before)
    assert types(evs) == ["CONFIG_APPLY_FAILURE_MESSAGE"]
    assert "[emerg]" in json.dumps(evs[0]["fields"]), evs[0]
    assert "bogus_directive" in json.dumps(evs[0]["fields"]), evs[0]

    # barrier: the next good apply is the only SIGHUP
    code, j = apply(a, [{"path": str(conf), "content": sim.text(message="v3")}])
    assert code == 200 and j["status"] == "applied", j
    sim.wait_message("v3", timeout=DEADLINE)
    wait_sighups(sim, mark, 1)


def test_new_file_removed_when_apply_fails(tmp_path, sims, agents):
    sim = sims(tmp_path)
    (sim.conf_dir / "sites").mkdir()
    a = start_agent(agents, tmp_path, sim)
    before_tree = snapshot(sim.conf_dir)
    new = sim.conf_dir / "sites" / "new.conf"
    code, j = apply(a, [{"path": str(new), "content": "brand new\n"},
                        {"path": str(sim.config_path), "content": "bogus_directive on;\n"}])
    assert code == 422 and j["status"] == "invalid", j
    assert not new.exists()
    assert_same(before_tree, snapshot(sim.conf_dir))
    f = [x for x in j["files"] if x["path"] == os.path.realpath(new)]
    assert f and f[0]["existed"] is False and f[0]["action"] == "write", j["files"]


def test_deleted_file_restored_when_apply_fails(tmp_path, sims, agents):
    sim = sims(tmp_path)
    extra = sim.conf_dir / "extra.conf"
    extra.write_bytes(b"keep\x00me\n")
    os.chmod(extra, 0o604)
    os.chown(extra, 1234, 1235)
    a = start_agent(agents, tmp_path, sim)
    before_tree = snapshot(sim.conf_dir)
    code, j = apply(a, [{"path": str(extra), "delete": True},
                        {"path": str(sim.config_path), "content": "bogus_directive on;\n"}])
    assert code == 422 and j["status"] == "invalid", j
    assert_same(before_tree, snapshot(sim.conf_dir))


def test_delete_file(tmp_path, sims, agents):
    sim = sims(tmp_path)
    sim.start()
    extra = sim.conf_dir / "extra.conf"
    extra.write_text("to be deleted\n")
    a = start_agent(agents, tmp_path, sim)
    before = a.last_seq()
    code, j = apply(a, [{"path": str(extra), "delete": True}])
    assert code == 200 and j["status"] == "applied" and j["reloaded"] is True, j
    assert not os.path.lexists(extra)
    assert sorted(os.listdir(sim.conf_dir)) == ["onepanel.conf"]
    f = j["files"]
    assert len(f) == 1 and f[0]["path"] == os.path.realpath(extra), f
    assert f[0]["action"] == "delete" and f[0]["existed"] is True, f
    assert f[0]["sha256_before"] == sha(b"to be deleted\n") and not f[0]["sha256_after"], f
    assert types(apply_events(a, j, before)) == OK_EVENTS
    assert os.path.realpath(extra) not in [x["path"] for x in list_config(a)["files"]]
    code, _ = get_json(a, "/v1/config/file", path=str(extra))
    assert code == 404
    assert sim.serves("v1")


# ---------------------------------------------------------------- reload failures

@pytest.mark.parametrize("workers", [2, 0])
def test_reload_failure_rolls_back(tmp_path, sims, agents, workers):
    """workers 0: no new generation to wait for, the agent must still see
    the [emerg] the failed reload logs."""
    sim = sims(tmp_path, workers=workers)
    sim.start()
    a = start_agent(agents, tmp_path, sim)
    if workers:
        sim.wait_workers(workers)
    master = sim.pid
    before_tree = snapshot(sim.conf_dir)
    before = a.last_seq()
    mark = sim.error_mark()
    new = sim.conf_dir / "new.conf"

    # passes -t, fails when the master applies it
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2", fail_reload=True)},
                        {"path": str(new), "content": "added\n"}])
    assert code == 422, j
    check_result_shape(j)
    assert j["status"] == "reload_failed_rolled_back", j
    assert j["validator"]["exit_code"] == 0, j

    # old files back, the new one gone
    assert_same(before_tree, snapshot(sim.conf_dir))
    # the reload did fail in the simulator, then it was signalled again and
    # reloaded the old configuration
    assert re.search(r"\[emerg\] \d+#\d+: bind\(\) to .* failed", sim.log_since(mark))
    wait_sighups(sim, mark, 2)
    sim.wait_error_log(r"reconfigured, generation \d+$", since=mark, timeout=DEADLINE)
    assert sim.running() and sim.pid == master
    if workers:
        sim.wait_workers(workers, timeout=DEADLINE)
        for _ in range(5):
            assert sim.serves("v1")

    evs = apply_events(a, j, before)
    assert types(evs) == RELOAD_FAIL_EVENTS, evs
    st = a.get("/v1/status").json()["onepanel"]
    assert st["state"] == "running" and st["pid"] == master


def test_rollback_reload_fails_too(tmp_path, sims, agents):
    """The running config itself cannot be reloaded (fail_reload is ignored
    at startup): the apply's reload fails, the files go back, the rollback
    reload fails as well -> rollback_failed, 500; onepanel keeps serving."""
    sim = sims(tmp_path, fail_reload=True)
    sim.start()
    a = start_agent(agents, tmp_path, sim)
    sim.wait_workers(2)
    tree = snapshot(sim.conf_dir)
    before = a.last_seq()
    mark = sim.error_mark()
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2")}])
    assert code == 500, j
    assert j["status"] == "rollback_failed", j
    assert_same(tree, snapshot(sim.conf_dir))
    wait_sighups(sim, mark, 2)
    assert sim.running() and sim.serves("v1")
    assert types(apply_events(a, j, before)) == ["ONEPANEL_RELOAD_FAILED_MESSAGE",
                                                 "CONFIG_ROLLBACK_FAILURE_MESSAGE",
                                                 "CONFIG_APPLY_FAILURE_MESSAGE"]


def test_onepanel_not_running_applies_without_reload(tmp_path, sims, agents):
    sim = sims(tmp_path)
    a = start_agent(agents, tmp_path, sim)
    assert a.get("/v1/status").json()["onepanel"]["state"] == "stopped"
    before = a.last_seq()
    new = sim.text(message="v2")
    code, j = apply(a, [{"path": str(sim.config_path), "content": new}])
    assert code == 200, j
    check_result_shape(j)
    assert j["status"] == "applied" and j["reloaded"] is False, j
    assert "not running" in j["message"].lower(), j
    assert j["validator"]["exit_code"] == 0, j
    assert sim.config_path.read_text() == new
    evs = apply_events(a, j, before)
    assert "ONEPANEL_RELOAD_SUCCESS_MESSAGE" not in types(evs)
    assert types(evs)[-1:] == ["CONFIG_APPLY_SUCCESS_MESSAGE"], evs
    # and the file is what onepanel starts with
    sim.start()
    assert sim.serves("v2")


def test_reload_false_writes_without_signal(tmp_path, sims, agents):
    sim = sims(tmp_path)
    sim.start()
    a = start_agent(agents, tmp_path, sim)
    mark = sim.error_mark()
    before = a.last_seq()
    new = sim.text(message="v2")
    code, j = apply(a, [{"path": str(sim.config_path), "content": new}], reload=False)
    assert code == 200, j
    check_result_shape(j)
    assert j["status"] == "applied" and j["reloaded"] is False and j["message"], j
    assert sim.config_path.read_text() == new
    assert sim.serves("v1")
    evs = apply_events(a, j, before)
    assert "ONEPANEL_RELOAD_SUCCESS_MESSAGE" not in types(evs)
    assert types(evs)[-1:] == ["CONFIG_APPLY_SUCCESS_MESSAGE"], evs
    # barrier: our own SIGHUP is the only one, and brings the new message
    sim.signal(signal.SIGHUP)
    sim.wait_message("v2", timeout=DEADLINE)
    wait_sighups(sim, mark, 1)


# ---------------------------------------------------------------- content encodings

def test_binary_content_base64_round_trips(tmp_path, sims, agents):
    sim = sims(tmp_path)
    sim.start()
    (sim.conf_dir / "data").mkdir()
    a = start_agent(agents, tmp_path, sim)
    blob = bytes(range(256)) + bytes((i * 131 + 7) % 256 for i in range(10000)) + b"\xc3\x28\xff"
    b64 = base64.b64encode(blob).decode()
    text = "h\u00e9llo \u2713 \U0001F600\n"
    bpath = sim.conf_dir / "data" / "blob.bin"
    tpath = sim.conf_dir / "data" / "text.conf"
    code, j = apply(a, [{"path": str(bpath), "content_base64": b64},
                        {"path": str(tpath), "content": text},
                        {"path": str(sim.conf_dir / "data" / "empty"), "content_base64": ""}])
    assert code == 200 and j["status"] == "applied", j
    assert bpath.read_bytes() == blob
    assert tpath.read_bytes() == text.encode("utf-8")
    assert (sim.conf_dir / "data" / "empty").read_bytes() == b""
    assert stat.S_IMODE(os.lstat(bpath).st_mode) == 0o644     # new files: 0644
    bf = [f for f in j["files"] if f["path"] == os.path.realpath(bpath)][0]
    assert bf["existed"] is False and bf["sha256_after"] == sha(blob), bf

    code, f = get_json(a, "/v1/config/file", path=str(bpath))
    assert code == 200, f
    assert "content" not in f and f["content_base64"] == b64, {k: f[k] for k in f if k != "content_base64"}
    assert f["sha256"] == sha(blob) and f["size"] == len(blob)
    code, f = get_json(a, "/v1/config/file", path=str(tpath))
    assert code == 200 and f["content"] == text, f

    # valid UTF-8 sent as base64 comes back as text
    code, j = apply(a, [{"path": str(tpath), "content_base64": base64.b64encode(b"plain\n").decode()}])
    assert code == 200, j
    code, f = get_json(a, "/v1/config/file", path=str(tpath))
    assert code == 200 and f["content"] == "plain\n", f


# ---------------------------------------------------------------- path attacks

@pytest.fixture
def attack_env(tmp_path, sims):
    sim = sims(tmp_path)
    conf = sim.conf_dir
    out = tmp_path / "outside"
    out.mkdir()
    (out / "target.txt").write_text("outside original\n")
    (conf / "sub").mkdir()
    os.symlink(out / "target.txt", conf / "link.conf")
    os.symlink(out / "newfile.txt", conf / "dangling.conf")
    os.symlink(out, conf / "outlink")
    os.mkfifo(conf / "fifo")
    os.mknod(conf / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (tmp_path / "conf-evil").mkdir()
    return sim, conf, out


ATTACKS = {
    "dotdot-escape": lambda c, o: {"path": f"{c}/../outside/evil.conf", "content": "x"},
    "dotdot-overwrite": lambda c, o: {"path": f"{c}/../outside/target.txt", "content": "x"},
    "dotdot-inside": lambda c, o: {"path": f"{c}/sub/../onepanel.conf", "content": "x"},
    "absolute-outside": lambda c, o: {"path": f"{o}/evil.conf", "content": "x"},
    "absolute-outside-existing": lambda c, o: {"path": f"{o}/target.txt", "content": "x"},
    "etc": lambda c, o: {"path": "/etc/oneshield-pwned.conf", "content": "x"},
    "prefix-sibling": lambda c, o: {"path": f"{c}-evil/x.conf", "content": "x"},
    "symlink-final": lambda c, o: {"path": f"{c}/link.conf", "content": "x"},
    "symlink-final-dangling": lambda c, o: {"path": f"{c}/dangling.conf", "content": "x"},
    "symlink-parent-new": lambda c, o: {"path": f"{c}/outlink/evil.conf", "content": "x"},
    "symlink-parent-existing": lambda c, o: {"path": f"{c}/outlink/target.txt", "content": "x"},
    "directory": lambda c, o: {"path": f"{c}/sub", "content": "x"},
    "allowed-dir-itself": lambda c, o: {"path": f"{c}", "content": "x"},
    "fifo": lambda c, o: {"path": f"{c}/fifo", "content": "x"},
    "device": lambda c, o: {"path": f"{c}/null", "content": "x"},
    "delete-symlink": lambda c, o: {"path": f"{c}/link.conf", "delete": True},
    "delete-outside": lambda c, o: {"path": f"{o}/target.txt", "delete": True},
    "delete-directory": lambda c, o: {"path": f"{c}/sub", "delete": True},
    "delete-device": lambda c, o: {"path": f"{c}/null", "delete": True},
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_path_attack_rejected_and_nothing_written(tmp_path, attack_env, agents, name):
    sim, conf, out = attack_env
    a = start_agent(agents, tmp_path, sim)
    trees = (snapshot(conf), snapshot(out), snapshot(tmp_path / "conf-evil"))
    good = conf / "good.conf"
    bad = ATTACKS[name](conf, out)
    # a good entry first: all or nothing
    code, j = apply(a, [{"path": str(good), "content": "good\n"}, bad])
    assert code == 403, j
    assert j["status"] == "rejected", j
    assert not good.exists()
    assert_same(trees[0], snapshot(conf))
    assert_same(trees[1], snapshot(out))
    assert_same(trees[2], snapshot(tmp_path / "conf-evil"))
    assert not os.path.exists("/etc/oneshield-pwned.conf")
    assert a.get("/healthz").status_code == 200


# ---------------------------------------------------------------- malformed requests

def _mal(conf):
    good = {"path": f"{conf}/good.conf", "content": "good\n"}
    p = f"{conf}/x.conf"
    return {
        "not-json": b"{",
        "empty-body": b"",
        "trailing-garbage": json.dumps({"files": [good]}).encode() + b" x",
        "array": json.dumps([good]).encode(),
        "no-files": b"{}",
        "files-not-array": json.dumps({"files": "x"}).encode(),
        "entry-not-object": json.dumps({"files": [good, 5]}).encode(),
        "entry-null": json.dumps({"files": [good, None]}).encode(),
        "missing-path": json.dumps({"files": [good, {"content": "x"}]}).encode(),
        "path-not-string": json.dumps({"files": [good, {"path": 5, "content": "x"}]}).encode(),
        "content-not-string": json.dumps({"files": [good, {"path": p, "content": 5}]}).encode(),
        "b64-not-string": json.dumps({"files": [good, {"path": p, "content_base64": ["eA=="]}]}).encode(),
        "no-content": json.dumps({"files": [good, {"path": p}]}).encode(),
        "both-contents": json.dumps({"files": [good, {"path": p, "content": "x",
                                                      "content_base64": "eA=="}]}).encode(),
        "bad-b64-chars": json.dumps({"files": [good, {"path": p, "content_base64": "!!!!"}]}).encode(),
        "bad-b64-length": json.dumps({"files": [good, {"path": p, "content_base64": "eA="}]}).encode(),
        "bad-b64-unpadded": json.dumps({"files": [good, {"path": p, "content_base64": "eA"}]}).encode(),
        "bad-b64-space": json.dumps({"files": [good, {"path": p, "content_base64": "eA= ="}]}).encode(),
        "delete-not-bool": json.dumps({"files": [good, {"path": p, "delete": "yes"}]}).encode(),
        "dry-run-not-bool": json.dumps({"files": [good], "dry_run": "yes"}).encode(),
        "reload-not-bool": json.dumps({"files": [good], "reload": 1}).encode(),
        "relative-path": json.dumps({"files": [good, {"path": "x.conf", "content": "x"}]}).encode(),
        "duplicate-path": json.dumps({"files": [good, {"path": p, "content": "a"},
                                                {"path": p, "content": "b"}]}).encode(),
        "duplicate-write-delete": json.dumps({"files": [{"path": p, "content": "a"},
                                                        {"path": p, "delete": True}]}).encode(),
    }


MALFORMED = sorted(_mal("/c"))


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_request_400_and_nothing_written(tmp_path, sims, agents, name):
    sim = sims(tmp_path)
    a = start_agent(agents, tmp_path, sim)
    tree = snapshot(sim.conf_dir)
    r = post_apply(a, _mal(sim.conf_dir)[name], raw=True)
    assert r.status_code == 400, r.text
    j = r.json()
    assert j["status"] == "malformed", j
    assert_same(tree, snapshot(sim.conf_dir))
    assert a.get("/healthz").status_code == 200


# ---------------------------------------------------------------- limits

MIB = 1 << 20


@pytest.mark.parametrize("name", ["file-5MiB", "file-4MiB+1", "files-300", "files-257", "total-17.5MiB"])
def test_too_large_413_and_nothing_written(tmp_path, sims, agents, name):
    sim = sims(tmp_path)
    a = start_agent(agents, tmp_path, sim)
    c = sim.conf_dir
    files = {
        "file-5MiB": lambda: [{"path": f"{c}/big", "content": "a" * (5 * MIB)}],
        "file-4MiB+1": lambda: [{"path": f"{c}/big", "content": "a" * (4 * MIB + 1)}],
        "files-300": lambda: [{"path": f"{c}/f{i}", "content": "x"} for i in range(300)],
        "files-257": lambda: [{"path": f"{c}/f{i}", "content": "x"} for i in range(257)],
        "total-17.5MiB": lambda: [{"path": f"{c}/f{i}", "content": "a" * (3 * MIB + MIB // 2)}
                                  for i in range(5)],
    }[name]()
    tree = snapshot(c)
    code, j = apply(a, files)
    assert code == 413, j
    assert j["status"] == "too_large", j
    assert_same(tree, snapshot(c))


def test_limits_are_inclusive(tmp_path, sims, agents):
    """Exactly 4 MiB in one file, and exactly 256 files, are allowed."""
    sim = sims(tmp_path)
    a = start_agent(agents, tmp_path, sim)
    c = sim.conf_dir
    big = bytes((i * 7) % 256 for i in range(4 * MIB))
    code, j = apply(a, [{"path": f"{c}/big.bin", "content_base64": base64.b64encode(big).decode()}])
    assert code == 200 and j["status"] == "applied", j
    assert (c / "big.bin").read_bytes() == big
    (c / "many").mkdir()
    code, j = apply(a, [{"path": f"{c}/many/f{i:03d}", "content": f"{i}\n"} for i in range(256)])
    assert code == 200 and j["status"] == "applied", {k: j[k] for k in j if k != "files"}
    assert sorted(os.listdir(c / "many")) == [f"f{i:03d}" for i in range(256)]
    assert all((c / "many" / f"f{i:03d}").read_text() == f"{i}\n" for i in range(256))


# ---------------------------------------------------------------- validator faults

def test_validator_timeout_restores_files(tmp_path, sims, agents):
    sim = sims(tmp_path)
    sim.start()
    script = write_script(tmp_path / "hang.sh", "echo validating\nsleep 300\n")
    a = start_agent(agents, tmp_path, sim, validate_command=yq(f"{script} {{config}}"),
                    validate_timeout="1s")
    tree = snapshot(sim.conf_dir)
    before = a.last_seq()
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2")},
                        {"path": str(sim.conf_dir / "new.conf"), "content": "n\n"}])
    assert code == 422, j
    check_result_shape(j)
    assert j["status"] == "invalid", j
    assert j["validator"]["timed_out"] is True, j
    assert "validating" in j["validator"]["output"], j
    assert_same(tree, snapshot(sim.conf_dir))
    assert sim.serves("v1")
    assert types(apply_events(a, j, before)) == ["CONFIG_APPLY_FAILURE_MESSAGE"]

    # the validator and its child (the sleep) were killed
    wait_for(lambda: not live_procs(lambda cmd: str(script).encode() in cmd or cmd == b"sleep\x00300\x00"),
             what="the hung validator and its sleep to be killed")


def test_busy_while_validating(tmp_path, sims, agents):
    """A validator that waits for the test: a second apply meanwhile gets 409
    and changes nothing; the API stays responsive; the first then finishes."""
    sim = sims(tmp_path)
    sim.start()
    started, release = tmp_path / "started", tmp_path / "release"
    script = write_script(tmp_path / "gate.sh",
                          f"touch '{started}'\n"
                          f"while [ ! -e '{release}' ]; do sleep 0.05; done\n"
                          f"exec {SIM_BIN} -t -c \"$1\"\n")
    a = start_agent(agents, tmp_path, sim, validate_command=yq(f"{script} {{config}}"),
                    validate_timeout="120s")
    out = {}
    t = threading.Thread(target=lambda: out.update(r=apply(a, [{"path": str(sim.config_path),
                                                                 "content": sim.text(message="first")}])))
    t.start()
    try:
        wait_for(started.exists, what="the validator to start")
        code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="second")},
                            {"path": str(sim.conf_dir / "second.conf"), "content": "2\n"}])
        assert code == 409 and j["status"] == "busy", j
        assert a.get("/healthz").status_code == 200
        assert list_config(a)["truncated"] is False
        assert not (sim.conf_dir / "second.conf").exists()
    finally:
        release.touch()
        t.join(APPLY_TIMEOUT)
    code, j = out["r"]
    assert code == 200 and j["status"] == "applied", j
    sim.wait_message("first", timeout=DEADLINE)
    assert "message first;" in sim.config_path.read_text()


def test_validator_missing(tmp_path, sims, agents):
    sim = sims(tmp_path)
    sim.start()
    missing = "/nonexistent-oneshield/bin/validator"
    a = start_agent(agents, tmp_path, sim, validate_command=yq(f"{missing} -t -c {{config}}"))
    tree = snapshot(sim.conf_dir)
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2")}])
    assert code == 422, j
    check_result_shape(j)
    assert j["status"] == "invalid", j
    text = j["message"] + json.dumps(j.get("validator"))
    assert missing in text, j
    assert "No such file" in text or "not found" in text.lower() or "does not exist" in text, j
    assert_same(tree, snapshot(sim.conf_dir))
    assert sim.serves("v1")


def test_validator_killed_by_signal(tmp_path, sims, agents):
    sim = sims(tmp_path)
    script = write_script(tmp_path / "segv.sh", "echo about to crash\nkill -SEGV $$\n")
    a = start_agent(agents, tmp_path, sim, validate_command=yq(f"{script} {{config}}"))
    tree = snapshot(sim.conf_dir)
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2")}])
    assert code == 422 and j["status"] == "invalid", j
    v = j["validator"]
    assert v["signal"] == signal.SIGSEGV and "exit_code" not in v and v["timed_out"] is False, v
    assert "about to crash" in v["output"], v
    assert_same(tree, snapshot(sim.conf_dir))


@pytest.mark.parametrize("level", ["emerg", "alert", "crit"])
def test_validator_critical_output_fails_despite_exit_0(tmp_path, sims, agents, level):
    sim = sims(tmp_path)
    sim.start()
    script = write_script(tmp_path / "v.sh", f"echo 'validator: [{level}] something is wrong' >&2\nexit 0\n")
    a = start_agent(agents, tmp_path, sim, validate_command=yq(f"{script} {{config}}"))
    tree = snapshot(sim.conf_dir)
    before = a.last_seq()
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2")}])
    assert code == 422 and j["status"] == "invalid", j
    assert j["validator"]["exit_code"] == 0 and f"[{level}] something is wrong" in j["validator"]["output"], j
    assert_same(tree, snapshot(sim.conf_dir))
    assert sim.serves("v1")
    assert types(apply_events(a, j, before)) == ["CONFIG_APPLY_FAILURE_MESSAGE"]


def test_onepanel_dies_during_apply(tmp_path, sims, agents):
    """The validator kills onepanel's master and succeeds: the apply must
    not claim success, the files go back, and the stop is reported."""
    sim = sims(tmp_path)
    sim.start()
    script = write_script(tmp_path / "killer.sh", f"kill -9 \"$(cat '{sim.pid_file}')\"\nexit 0\n")
    a = start_agent(agents, tmp_path, sim, validate_command=yq(f"{script} {{config}}"))
    pid = sim.pid
    # reap the master as soon as it dies, as its real parent (init) would
    threading.Thread(target=sim.proc.wait, daemon=True).start()
    tree = snapshot(sim.conf_dir)
    before = a.last_seq()
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2")}])
    print("onepanel died during apply ->", code, j)
    assert j["status"] != "applied" and code != 200, j
    assert j["status"] in ("reload_failed_rolled_back", "rollback_failed"), j
    assert code == {"reload_failed_rolled_back": 422, "rollback_failed": 500}[j["status"]]
    assert_same(tree, snapshot(sim.conf_dir))
    a.wait_event("ONEPANEL_STOP_MESSAGE", after=before, pred=lambda e: e["pid"] == pid)
    assert sim.wait_exit() == -signal.SIGKILL
    evs = apply_events(a, j, before)
    assert "CONFIG_APPLY_SUCCESS_MESSAGE" not in types(evs)
    assert types(evs)[-1] == "CONFIG_APPLY_FAILURE_MESSAGE", evs


# ---------------------------------------------------------------- concurrency

def test_concurrent_applies_one_at_a_time(tmp_path, sims, agents):
    sim = sims(tmp_path)
    sim.start()
    a = start_agent(agents, tmp_path, sim)
    mark = sim.error_mark()
    before = a.last_seq()
    c = sim.conf_dir
    n = 50

    def submission(i):
        return [{"path": str(sim.config_path), "content": sim.text(message=f"sub{i}")},
                {"path": f"{c}/a.txt", "content": f"sub{i} a\n"},
                {"path": f"{c}/b.txt", "content": f"sub{i} b\n"}]

    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = apply(a, submission(i))
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = (None, repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(APPLY_TIMEOUT)
    codes = [r[0] for r in results]
    assert set(codes) <= {200, 409}, [r for r in results if r[0] not in (200, 409)]
    ok = [i for i in range(n) if codes[i] == 200]
    assert ok, "no apply succeeded"
    assert all(results[i][1]["status"] == "applied" for i in ok)
    assert all(results[i][1]["status"] == "busy" for i in range(n) if codes[i] == 409)
    print(f"{len(ok)} of {n} concurrent applies went through, {n - len(ok)} got 409")

    # the files are one complete submission, one that was applied
    conf_msg = re.search(r"^message (sub\d+);$", sim.config_path.read_text(), re.M).group(1)
    a_txt = (c / "a.txt").read_text()
    b_txt = (c / "b.txt").read_text()
    k = int(conf_msg[3:])
    assert (a_txt, b_txt) == (f"sub{k} a\n", f"sub{k} b\n"), (conf_msg, a_txt, b_txt)
    assert k in ok
    assert sorted(os.listdir(c)) == ["a.txt", "b.txt", "onepanel.conf"]
    sim.wait_message(f"sub{k}", timeout=DEADLINE)

    # never interleaved: each apply's events form one block, and the
    # simulator got exactly one SIGHUP per applied submission
    ok_cids = {results[i][1]["correlation_id"] for i in ok}
    assert len(ok_cids) == len(ok)
    cids = [e["correlation_id"] for e in all_events(a, before) if e.get("correlation_id") in ok_cids]
    blocks = [cid for i, cid in enumerate(cids) if i == 0 or cids[i - 1] != cid]
    assert len(blocks) == len(set(blocks)) == len(ok), blocks
    for i in ok:
        assert types(apply_events(a, results[i][1], before)) == OK_EVENTS
    wait_sighups(sim, mark, len(ok))


# ---------------------------------------------------------------- no shell anywhere

def test_config_path_with_shell_metacharacters(tmp_path, sims, agents):
    pwned = Path("/tmp/pwned")
    if pwned.exists():
        pwned.unlink()
    weird_dir = tmp_path / "it's a \"dir\" $(touch /tmp/pwned) `touch /tmp/pwned`; touch x"
    name = "on e;'q'\"$(touch x)\"|&<>*?.conf"
    sim = sims(tmp_path, conf_dir=weird_dir, conf_name=name)
    sim.start()
    a = start_agent(agents, tmp_path, sim)
    before = a.last_seq()
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2")}])
    assert code == 200 and j["status"] == "applied" and j["reloaded"] is True, j
    # one argv word: the validator names the file exactly
    assert f"the configuration file {sim.config_path} syntax is ok" in j["validator"]["output"], j
    sim.wait_message("v2", timeout=DEADLINE)
    assert types(apply_events(a, j, before)) == OK_EVENTS
    paths = [f["path"] for f in list_config(a)["files"]]
    assert paths == [os.path.realpath(sim.config_path)]
    code, f = get_json(a, "/v1/config/file", path=str(sim.config_path))
    assert code == 200 and "message v2;" in f["content"], f
    # and a failing validation of the same path
    code, j = apply(a, [{"path": str(sim.config_path), "content": "bogus_directive on;\n"}])
    assert code == 422 and str(sim.config_path) in j["validator"]["output"], j
    assert not pwned.exists()
    assert not (Path.cwd() / "x").exists() and not (Path("/") / "x").exists()


# ---------------------------------------------------------------- disk full

@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "conf"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        if "permission denied" in r.stderr.lower() or "not permitted" in r.stderr.lower():
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        raise AssertionError(f"mount failed: {r.stderr}")
    yield mnt
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_disk_full_mid_write_keeps_old_files(tmp_path, small_tmpfs, sims, agents):
    sim = sims(tmp_path, conf_dir=small_tmpfs)
    (small_tmpfs / "keep.conf").write_text("keep me\n" * 100)
    sim.start()
    a = start_agent(agents, tmp_path, sim)
    tree = snapshot(small_tmpfs)
    before = a.last_seq()
    mark = sim.error_mark()
    free_before = os.statvfs(small_tmpfs).f_bfree

    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2")},
                        {"path": str(small_tmpfs / "keep.conf"), "content": "changed\n"},
                        {"path": str(small_tmpfs / "big.bin"),
                         "content_base64": base64.b64encode(os.urandom(200 * 1024)).decode()}])
    print("disk full ->", code, j.get("status"), j.get("message"))
    assert not 200 <= code < 300, j
    assert j["status"] not in ("applied", "dry_run_ok"), j
    assert_same(tree, snapshot(small_tmpfs))          # also: no temp files left
    assert os.statvfs(small_tmpfs).f_bfree == free_before
    assert sim.serves("v1")
    evs = apply_events(a, j, before)
    assert types(evs)[-1:] == ["CONFIG_APPLY_FAILURE_MESSAGE"], evs

    # the agent is fine afterwards: a fitting apply goes through, with the
    # only SIGHUP
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v3")}])
    assert code == 200 and j["status"] == "applied", j
    sim.wait_message("v3", timeout=DEADLINE)
    wait_sighups(sim, mark, 1)
