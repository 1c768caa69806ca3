"""Least privilege (issue 8 §3), black-box: the capabilities the agent keeps
after start (userspace/privs.h), what they are kept for, and what the
validate_command sees.

Every thread of the agent is checked, not only the main one: capabilities,
the bounding set and no_new_privs belong to a thread, and the gRPC plugin
runs threads of its own.

A onepanel running as another user (nobody, with its files in a directory
only nobody may read) needs each kept capability but the eBPF ones; taking
one of them away from the agent before it starts (setpriv --bounding-set)
must break the feature it is kept for. The eBPF ones are shown needed after
start by the investigation and the SIGHUP tests (bpf() refuses tracing
programs without CAP_BPF and CAP_PERFMON).

Run: cd tests/e2e && /usr/bin/python3 -m pytest -q test_privileges.py
(and again with ONESHIELD_FORCE_PROCFS=1 for the tests that follow the mode
of the environment).
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from unittest import mock

import pytest

from conftest import (AGENT_BIN, DEADLINE, EXPECT_MODE, FORCE_PROCFS, SIM_BIN, LogFile, agent_yaml, have,
                      register_config_token, wait_for, with_token_file)
from test_config_apply import ConfSim, apply, onepanel_cfg, sims, write_script, yq  # noqa: F401 (sims: fixture)

# userspace/privs.h, PRIVS_KEEP
KEPT = ["cap_chown", "cap_dac_override", "cap_fowner", "cap_kill", "cap_net_bind_service", "cap_sys_ptrace",
        "cap_perfmon", "cap_bpf"]
CAP_NUM = {"cap_chown": 0, "cap_dac_override": 1, "cap_fowner": 3, "cap_kill": 5, "cap_net_bind_service": 10,
           "cap_sys_ptrace": 19, "cap_perfmon": 38, "cap_bpf": 39}
KEEP_MASK = sum(1 << CAP_NUM[c] for c in KEPT)
CAP_SETPCAP, CAP_SYS_ADMIN, CAP_NET_ADMIN = 8, 21, 12

needs_setpriv = pytest.mark.skipif(not have("setpriv"), reason="setpriv missing (package util-linux)")


def status_fields(path):
    with open(path) as f:
        text = f.read()
    out = {}
    for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        out[k] = int(re.search(rf"^{k}:\s*([0-9a-f]+)$", text, re.M).group(1), 16)
    out["NoNewPrivs"] = int(re.search(r"^NoNewPrivs:\s*(\d+)$", text, re.M).group(1))
    out["Uid"] = [int(x) for x in re.search(r"^Uid:\s*(.*)$", text, re.M).group(1).split()]
    return out


def thread_sets(pid):
    """{tid: fields} for every thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = status_fields(f"/proc/{pid}/task/{tid}/status")
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return out


def my_caps():
    return status_fields("/proc/self/status")


def status(a):
    return a.get("/v1/status").json()


# ---------------------------------------------------------------- the kept set

@pytest.mark.parametrize("mode", ["ebpf", "procfs"])
def test_every_thread_keeps_exactly_the_documented_set(tmp_path, sims, agents, monkeypatch, mode):
    if mode == "procfs":
        monkeypatch.setenv("ONESHIELD_FORCE_PROCFS", "1")
    elif FORCE_PROCFS:
        pytest.skip("eBPF is forced off by the environment")
    mine = my_caps()
    assert mine["CapEff"] & (1 << CAP_SETPCAP), "the test needs to run as root"
    sim = sims(tmp_path)
    sim.start()
    a = agents(tmp_path, agent_yaml(onepanel_cfg(sim), grpc=True))
    a.wait_event("ONEPANEL_FOUND_MESSAGE", pred=lambda e: e["pid"] == sim.pid)
    st = status(a)
    assert st["mode"] == mode, st
    if mode == "procfs":
        # bound before the drop, without CAP_NET_ADMIN afterwards
        assert st["onepanel"]["tracking"] == "proc_connector", st["onepanel"]

    threads = thread_sets(a.proc.pid)
    assert len(threads) > 1, "the gRPC plugin runs threads; all of them are checked"
    want = KEEP_MASK & mine["CapPrm"]
    for tid, f in threads.items():
        assert f["CapEff"] == want, (tid, hex(f["CapEff"]))
        assert f["CapPrm"] == want, (tid, hex(f["CapPrm"]))
        assert f["CapBnd"] == KEEP_MASK & mine["CapBnd"], (tid, hex(f["CapBnd"]))
        assert f["CapInh"] == 0 and f["CapAmb"] == 0, (tid, f)
        assert f["NoNewPrivs"] == 1, (tid, f)
        assert not f["CapEff"] & (1 << CAP_SYS_ADMIN | 1 << CAP_NET_ADMIN | 1 << CAP_SETPCAP)

    sec = st["security"]
    assert sec == {"drop_capabilities": True, "capabilities": KEPT, "bounding_set": KEPT, "no_new_privs": True}
    line = a.log.wait_line(r"capabilities: kept (\S+); bounding set (\S+); no_new_privs")
    assert line.group(1) == line.group(2) == ",".join(KEPT)
    assert len(re.findall(r"capabilities: kept", a.log.text())) == 1


def test_drop_can_be_turned_off(tmp_path, agents):
    mine = my_caps()
    a = agents(tmp_path, agent_yaml(extra="security:\n  drop_capabilities: false\n"))
    a.log.wait_line(r"capabilities: all kept \(security.drop_capabilities is false\)")
    f = status_fields(f"/proc/{a.proc.pid}/status")
    assert f["CapEff"] == mine["CapEff"] and f["CapBnd"] == mine["CapBnd"] and f["NoNewPrivs"] == 0
    sec = status(a)["security"]
    assert sec["drop_capabilities"] is False and sec["no_new_privs"] is False
    assert "cap_sys_admin" in sec["capabilities"]


def test_drop_setting_takes_effect_at_next_start_only(tmp_path, agents):
    a = agents(tmp_path, agent_yaml())
    a.log.wait_line(r"capabilities: kept")
    cfg = Path(a.config_path)
    cfg.write_text(cfg.read_text() + "security:\n  drop_capabilities: false\n")
    a.proc.send_signal(signal.SIGHUP)
    a.wait_event("AGENT_CONFIG_RELOADED_MESSAGE")
    a.log.wait_line(r"security\.drop_capabilities takes effect at the next start")
    assert status_fields(f"/proc/{a.proc.pid}/status")["CapEff"] == KEEP_MASK & my_caps()["CapPrm"]


# ---------------------------------------------------------------- eBPF after the drop

def test_investigation_and_sighup_reload_bpf_after_the_drop(tmp_path, sims, agents):
    """An investigation loads and attaches its programs after the drop; a
    SIGHUP turns the scheduler-delay programs off and on again, and a changed
    onepanel identity reopens the process-event programs."""
    if FORCE_PROCFS:
        pytest.skip("eBPF is forced off by the environment")
    sim = sims(tmp_path, access_rate=50)
    sim.start()
    cfg = onepanel_cfg(sim)
    a = agents(tmp_path, agent_yaml(cfg))
    a.wait_event("ONEPANEL_FOUND_MESSAGE", pred=lambda e: e["pid"] == sim.pid)
    a.log.wait_line(r"capabilities: kept")
    st = status(a)
    sched = st["ebpf"]["scheduler_delay"]
    assert st["mode"] == "ebpf" and sched != "off", st["ebpf"]

    r = a.post("/v1/probes/syscalls", json={"duration_s": 1})
    assert r.status_code == 202, r.text

    def finished():
        j = a.get("/v1/probes/syscalls").json()
        return j if j["state"] == "finished" else None
    j = wait_for(finished, what="the investigation to finish")
    assert j["targets"] >= 1 and sum(s["count"] for s in j["syscalls"]) > 0, j

    port_line = f"  rest_listen: 127.0.0.1:{a.port}\n"

    def reload(onepanel, extra=""):
        before = a.last_seq()
        Path(a.config_path).write_text(
            with_token_file(re.sub(r"  rest_listen: .*\n", port_line, agent_yaml(onepanel)) + extra, a.token_file))
        a.proc.send_signal(signal.SIGHUP)
        a.wait_event("AGENT_CONFIG_RELOADED_MESSAGE", after=before)
        return before

    for on in (False, True):
        reload(cfg, f"ebpf:\n  scheduler_delay: {'true' if on else 'false'}\n")
        got = status(a)["ebpf"]
        assert got["scheduler_delay"] == (sched if on else "off"), got
    wait_for(lambda: re.search(r"^onepanel_runqueue_latency_seconds_count\S* [1-9]", a.get("/metrics").text, re.M),
             what="scheduler delay samples after the SIGHUP")

    # identity by name instead of binary: the process-event programs are reloaded
    by_name = {k: v for k, v in dict(cfg, binary=None, name="onepanel-sim").items() if v is not None}
    before = reload(by_name)
    found = a.wait_event("ONEPANEL_FOUND_MESSAGE", after=before, pred=lambda e: e["pid"] == sim.pid)
    st = status(a)
    assert st["mode"] == "ebpf" and st["onepanel"]["tracking"] == "ebpf", st
    assert found["fields"]["tracking"] == "ebpf"


def test_sighup_keeps_the_proc_connector(tmp_path, sims, agents, monkeypatch):
    """procfs mode: a changed identity looks for onepanel again through the
    connector bound before the drop (opening one needs CAP_NET_ADMIN on
    kernels before 6.6), not through /proc rescans."""
    monkeypatch.setenv("ONESHIELD_FORCE_PROCFS", "1")
    sim = sims(tmp_path)
    sim.start()
    cfg = onepanel_cfg(sim)
    a = agents(tmp_path, agent_yaml(cfg))
    a.wait_event("ONEPANEL_FOUND_MESSAGE", pred=lambda e: e["pid"] == sim.pid)
    assert status(a)["onepanel"]["tracking"] == "proc_connector"
    port_line = f"  rest_listen: 127.0.0.1:{a.port}\n"
    by_name = {k: v for k, v in dict(cfg, binary=None, name="onepanel-sim").items() if v is not None}
    before = a.last_seq()
    Path(a.config_path).write_text(
        with_token_file(re.sub(r"  rest_listen: .*\n", port_line, agent_yaml(by_name)), a.token_file))
    a.proc.send_signal(signal.SIGHUP)
    a.wait_event("AGENT_CONFIG_RELOADED_MESSAGE", after=before)
    a.wait_event("ONEPANEL_FOUND_MESSAGE", after=before, pred=lambda e: e["pid"] == sim.pid)
    assert status(a)["onepanel"]["tracking"] == "proc_connector"
    # and it still sees the master go and come back without polling
    before = a.last_seq()
    sim.stop()
    a.wait_event("ONEPANEL_STOP_MESSAGE", after=before)
    sim.start()
    a.wait_event("ONEPANEL_FOUND_MESSAGE", after=before, pred=lambda e: e["pid"] == sim.pid)
    assert status(a)["onepanel"]["tracking"] == "proc_connector"


# ---------------------------------------------------------------- the validator's view

def test_validator_sees_clean_env_no_fds_own_group_and_kept_caps(tmp_path, sims, agents):
    sim = sims(tmp_path)
    sim.start()
    out = tmp_path / "seen"
    out.mkdir()
    script = write_script(tmp_path / "inspect.sh",
                          f"o='{out}'\n"
                          # first, and without a redirection, which the shell
                          # would make on its own descriptors
                          "echo fds-begin; ls -l /proc/$$/fd; echo fds-end\n"
                          "echo $$ > \"$o/pid\"\n"
                          "tr '\\0' '\\n' < /proc/$$/environ > \"$o/env\"\n"
                          "cat /proc/$$/stat > \"$o/stat\"\n"
                          "cat /proc/$$/status > \"$o/status\"\n"
                          "cat /proc/$$/limits > \"$o/limits\"\n"
                          f"exec {SIM_BIN} -t -c \"$1\"\n")
    a = agents(tmp_path, agent_yaml(onepanel_cfg(sim, validate_command=yq(f"{script} {{config}}")), grpc=True))
    a.wait_event("ONEPANEL_FOUND_MESSAGE", pred=lambda e: e["pid"] == sim.pid)
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2")}])
    assert code == 200 and j["status"] == "applied", j

    pid = int((out / "pid").read_text())
    # fds: 0 = /dev/null, 1 and 2 = the agent's output pipe; anything else
    # is the shell's own descriptor of the script it reads
    fds = {}
    listing = j["validator"]["output"].split("fds-begin\n", 1)[1].split("fds-end\n", 1)[0]
    for ln in listing.splitlines():
        m = re.search(r" (\d+) -> (.*)$", ln)
        if m:
            fds[int(m.group(1))] = m.group(2)
    assert fds[0] == "/dev/null", fds
    assert fds[1].startswith("pipe:") and fds[2] == fds[1], fds
    assert all(t == str(script) for fd, t in fds.items() if fd > 2), fds

    env = [ln for ln in (out / "env").read_text().splitlines() if ln]
    assert env == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"], env

    stat_f = (out / "stat").read_text().rsplit(")", 1)[1].split()
    pgrp, sid = int(stat_f[2]), int(stat_f[3])
    assert pgrp == pid, "the validator leads its own process group"
    assert pgrp != os.getpgid(a.proc.pid)
    assert sid == os.getsid(a.proc.pid), "same session: only the group is new"

    seen = {}
    for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        seen[k] = int(re.search(rf"^{k}:\s*([0-9a-f]+)$", (out / "status").read_text(), re.M).group(1), 16)
    nnp = int(re.search(r"^NoNewPrivs:\s*(\d+)$", (out / "status").read_text(), re.M).group(1))
    agent = status_fields(f"/proc/{a.proc.pid}/status")
    for k in ("CapPrm", "CapEff", "CapBnd"):
        assert seen[k] & ~agent["CapEff"] == 0, (k, hex(seen[k]), hex(agent["CapEff"]))
        assert seen[k] & ~KEEP_MASK == 0, (k, hex(seen[k]))
    assert seen["CapInh"] == 0 and seen["CapAmb"] == 0 and nnp == 1, seen
    limits = (out / "limits").read_text()
    assert re.search(r"^Max core file size\s+0\s+0\s", limits, re.M), limits


# ---------------------------------------------------------------- a onepanel of another user

class ForeignSim(ConfSim):
    """onepanel-sim running as nobody; its run and conf directories belong to
    nobody, the conf directory with mode 0700 and the config file 0600 (the
    run directory stays readable: the pid file there tells this master from
    other onepanel-sims on the host)."""

    def __init__(self, root: Path, **kw):
        super().__init__(root, **kw)
        nobody = pwd.getpwnam("nobody")
        for d in (self.dir, self.conf_dir):
            for p in [d, *d.rglob("*")]:
                os.chown(p, nobody.pw_uid, nobody.pw_gid)
        self.conf_dir.chmod(0o700)
        self.config_path.chmod(0o600)

    def start(self, *a, **kw):
        real = subprocess.Popen

        def as_nobody(cmd, **pkw):
            return real(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all",
                         *cmd], **pkw)
        with mock.patch.object(subprocess, "Popen", as_nobody):
            return super().start(*a, **kw)


@pytest.fixture
def foreign_root():
    # not under pytest's tmp_path: its parents are 0700 root, closed to nobody
    d = Path(tempfile.mkdtemp(prefix="oneshield-priv-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start_bounded(tmp_path, cfg_text, drop_cap=None):
    """The agent, optionally started without one capability (as a unit's
    CapabilityBoundingSet would do); returns (proc, log, base)."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(cfg_text)
    cmd = [AGENT_BIN, "-c", str(cfg), "-v"]
    if drop_cap:
        cmd = ["setpriv", f"--bounding-set=-{drop_cap.removeprefix('cap_')}", "--inh-caps=-all", *cmd]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = LogFile(p.stderr)
    m = log.wait_line(r"REST API listening on http://([0-9.]+:\d+)")
    register_config_token(m.group(1), cfg_text)
    return p, log, "http://" + m.group(1)


class Bounded:
    """Just enough of conftest.Agent for apply() and status polling."""

    def __init__(self, proc, log, base):
        self.proc, self.log, self.base = proc, log, base

    def get(self, path, **kw):
        import requests
        return requests.get(self.base + path, timeout=10, **kw)


# which kept capability a onepanel of another user needs, and where it shows
WITHOUT = ["cap_sys_ptrace", "cap_kill", "cap_chown", "cap_fowner", "cap_dac_override", "cap_net_bind_service"]


@needs_setpriv
@pytest.mark.parametrize("drop_cap", [None, *WITHOUT], ids=["kept-set", *(f"without-{c}" for c in WITHOUT)])
def test_each_kept_capability_is_needed(tmp_path, foreign_root, drop_cap):
    """With the kept set, a onepanel run by nobody is identified (its /proc
    entries), its files are rewritten with their owner and mode, the
    validator binds a privileged port, and it is reloaded. Without any one
    of those capabilities the matching step fails and nothing changes."""
    nobody = pwd.getpwnam("nobody")
    sim = ForeignSim(foreign_root)
    sim.start()
    # a free privileged port for the validator (EADDRINUSE would also mean
    # "allowed": bind checks the privilege first)
    s = socket.socket()
    port = next(p for p in range(1000, 600, -1) if s.connect_ex(("127.0.0.1", p)) != 0)
    s.close()
    script = write_script(tmp_path / "bind.sh",
                          f"/usr/bin/python3 -c 'import socket; socket.socket().bind((\"127.0.0.1\", {port}))' "
                          "|| { echo 'validator: [emerg] bind refused'; exit 1; }\n"
                          f"exec {SIM_BIN} -t -c \"$1\"\n")
    cfg = agent_yaml(onepanel_cfg(sim, validate_command=yq(f"{script} {{config}}")))
    p, log, base = start_bounded(tmp_path, cfg, drop_cap)
    a = Bounded(p, log, base)
    try:
        log.wait_line(r"capabilities: kept")
        st0 = a.get("/v1/status").json()
        if drop_cap != "cap_sys_ptrace":
            st = wait_for(lambda: (lambda s: s if s["onepanel"]["state"] == "running" else None)(
                a.get("/v1/status").json()), what="onepanel (nobody's) found")
            assert st["onepanel"]["pid"] == sim.pid
            fds = re.compile(r"^onepanel_open_fds\S* [1-9]", re.M)
            if drop_cap != "cap_dac_override":
                wait_for(lambda: fds.search(a.get("/metrics").text), what="nobody's open fds counted")
            else:
                # /proc/PID/fd is 0500 and belongs to the process's user
                n = a.get("/v1/status").json()["metrics"]["collections"]
                wait_for(lambda: a.get("/v1/status").json()["metrics"]["collections"] >= n + 3,
                         what="three more collections")
                assert not fds.search(a.get("/metrics").text)
        else:
            # several collections later, still not identified: /proc/PID/exe
            # of another user's process needs CAP_SYS_PTRACE
            n = st0["metrics"]["collections"]
            wait_for(lambda: a.get("/v1/status").json()["metrics"]["collections"] >= n + 3,
                     what="three more collections")
            assert a.get("/v1/status").json()["onepanel"]["state"] != "running"
            return

        before = sim.config_path.read_bytes()
        code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2")}])
        st = os.stat(sim.config_path)
        if drop_cap is None:
            assert code == 200 and j["status"] == "applied", j
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, nobody.pw_gid, 0o600)
            sim.wait_message("v2", timeout=DEADLINE)
        else:
            assert j["status"] != "applied", (drop_cap, j)
            assert sim.config_path.read_bytes() == before
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, 0o600)
            want_status, want_msg = {
                "cap_kill": ("reload_failed_rolled_back", "cannot signal onepanel"),
                "cap_chown": ("write_failed", "chown: Operation not permitted"),
                "cap_fowner": ("write_failed", "chmod: Operation not permitted"),
                "cap_dac_override": ("rejected", "Permission denied"),
                "cap_net_bind_service": ("invalid", "bind refused"),
            }[drop_cap]
            assert j["status"] == want_status, j
            assert want_msg in j["message"] + str(j.get("validator", {}).get("output")), j
            print(drop_cap, "->", code, j["status"], j.get("message"))
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        print(log.text()[-4000:])
        sim.stop()
