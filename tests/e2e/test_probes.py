"""Syscall investigations: POST/GET /v1/probes/syscalls.

The "onepanel" here is a tiny C program built by the test: it performs an
exact number of getppid() (and failing close(-1)) syscalls when told, so the
investigation's counts can be checked exactly."""
import json
import os
import re
import signal
import subprocess

import pytest

from conftest import FORCE_PROCFS, agent_yaml, wait_for

TARGET_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void)
{
	char line[64];
	setvbuf(stdout, NULL, _IONBF, 0);
	/* "g N": N getppid; "c N": N close(-1) (EBADF) */
	while (fgets(line, sizeof(line), stdin)) {
		long n = atol(line + 2);
		for (long i = 0; i < n; i++) {
			if (line[0] == 'g')
				syscall(SYS_getppid);
			else
				syscall(SYS_close, -1);
		}
		fputs("done\n", stdout);
	}
	return 0;
}
"""


class Target:
    def __init__(self, tmp_path):
        src = tmp_path / "osb-target.c"
        src.write_text(TARGET_C)
        self.path = str(tmp_path / "osb-target")
        subprocess.run(["gcc", "-O1", "-o", self.path, str(src)], check=True)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([self.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self.proc.pid

    def do(self, what, n):
        self.proc.stdin.write(f"{what} {n}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "done\n"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def target(tmp_path):
    t = Target(tmp_path)
    yield t
    t.stop()


def bpftool_json(what):
    """bpftool's listing walks ids and then opens each: an object freed in
    between (another process exiting) makes it fail; list again."""
    for _ in range(20):
        r = subprocess.run(["bpftool", "-j", what, "show"], capture_output=True, text=True)
        if r.returncode == 0:
            return json.loads(r.stdout or "[]")
    raise AssertionError(f"bpftool {what} show kept failing: {r.stderr}")


def held_link_ids(pids=None):
    """BPF link ids held open by pids, from /proc/PID/fdinfo; by default by
    the processes this test session started (its children: the agents).
    Other agents on the machine (another test run) are not ours to count."""
    ids = set()
    me = str(os.getpid())
    for pid in map(str, pids) if pids is not None else filter(str.isdigit, os.listdir("/proc")):
        try:
            if pids is None:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] != me:
                        continue
            for fd in os.listdir(f"/proc/{pid}/fdinfo"):
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    m = re.search(r"^link_id:\s*(\d+)", f.read(), re.M)
                if m:
                    ids.add(int(m.group(1)))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return ids


def syscall_links(pids=None):
    """Kernel links of sysprobe programs held by pids (default: this
    session's agents)."""
    ours = {p["id"] for p in bpftool_json("prog") if p.get("name", "").startswith("sysprobe_")}
    held = held_link_ids(pids)
    return [l for l in bpftool_json("link") if l.get("prog_id") in ours and l.get("id") in held]


def by_name(res, name):
    return next((s for s in res["syscalls"] if s["name"] == name), None)


def post(a, body, raw=None):
    return a.post("/v1/probes/syscalls", data=raw if raw is not None else json.dumps(body),
                  headers={"Content-Type": "application/json"})


def test_investigation_counts_exactly_and_detaches_by_itself(tmp_path, target, agents):
    if FORCE_PROCFS:
        pytest.skip("eBPF is forced off by the environment")
    pid = target.start()
    a = agents(tmp_path, agent_yaml({"binary": target.path}))
    assert a.wait_event("ONEPANEL_FOUND_MESSAGE")["pid"] == pid
    assert a.get("/v1/probes/syscalls").json()["state"] == "idle"
    assert syscall_links() == []

    r = post(a, {"duration_s": 3})
    assert r.status_code == 202, r.text
    j = r.json()
    assert j["state"] == "running" and j["requested_s"] == 3 and j["targets"] == 1
    assert len(syscall_links()) == 4  # sys_enter, sys_exit, and fork/exit to follow new processes

    # a second start while one runs is refused, and changes nothing
    r2 = post(a, {"duration_s": 60})
    assert r2.status_code == 409 and "ends in" in r2.json()["error"]
    assert a.get("/v1/probes/syscalls").json()["requested_s"] == 3

    target.do("g", 1000)
    target.do("c", 77)
    res = a.get("/v1/probes/syscalls").json()
    g, c = by_name(res, "getppid"), by_name(res, "close")
    assert g["count"] == 1000 and g["errors"] == 0
    assert c["count"] == 77 and c["errors"] == 77
    assert g["p50_us"] <= g["p90_us"] <= g["p99_us"]
    assert sum(b["count"] for b in g["buckets"]) == 1000
    # while fresh, also in /metrics
    wait_for(lambda: 'onepanel_syscall_latency_seconds_count{syscall="getppid"} 1000' in a.get("/metrics").text,
             what="investigation in /metrics")
    assert 'onepanel_syscall_errors_total{syscall="close"} 77' in a.get("/metrics").text

    # it ends by itself: the tracepoints are gone, the results stay
    done = wait_for(lambda: (lambda j: j if j["state"] == "finished" else None)(a.get("/v1/probes/syscalls").json()),
                    what="the investigation to finish")
    assert syscall_links() == []
    assert done["ran_s"] >= 3 and "ended_at" in done
    target.do("g", 500)  # after the end: not counted
    assert by_name(a.get("/v1/probes/syscalls").json(), "getppid")["count"] == 1000
    assert a.get("/v1/status").json()["ebpf"]["syscall_investigation"] == "finished"

    # a new one starts from zero
    assert post(a, {"duration_s": 1}).status_code == 202
    target.do("g", 10)
    assert by_name(a.get("/v1/probes/syscalls").json(), "getppid")["count"] == 10
    wait_for(lambda: a.get("/v1/probes/syscalls").json()["state"] == "finished", what="second one finished")
    assert syscall_links() == []


def test_investigation_follows_workers(tmp_path, agents):
    """Workers forked by the master during an investigation are traced too."""
    if FORCE_PROCFS:
        pytest.skip("eBPF is forced off by the environment")
    src = tmp_path / "forker.c"
    src.write_text(r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void)
{
	char line[16];
	setvbuf(stdout, NULL, _IONBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		pid_t p = fork();
		if (p == 0) {
			for (int i = 0; i < 300; i++)
				syscall(SYS_getppid);
			_exit(0);
		}
		waitpid(p, NULL, 0);
		fputs("done\n", stdout);
	}
	return 0;
}
""")
    path = str(tmp_path / "osb-forker")
    subprocess.run(["gcc", "-O1", "-o", path, str(src)], check=True)
    p = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        a = agents(tmp_path, agent_yaml({"binary": path}))
        a.wait_event("ONEPANEL_FOUND_MESSAGE")
        assert post(a, {"duration_s": 60}).status_code == 202
        for _ in range(3):
            p.stdin.write("x\n")
            p.stdin.flush()
            assert p.stdout.readline() == "done\n"
        # each worker's start is seen before it runs: all 900 counted
        assert by_name(a.get("/v1/probes/syscalls").json(), "getppid")["count"] == 900
    finally:
        p.kill()
        p.wait()


def test_bad_requests_change_nothing(tmp_path, target, agents):
    target.start()
    a = agents(tmp_path, agent_yaml({"binary": target.path}, extra="ebpf:\n  syscall_probe_max_duration: 10s\n"))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    before = a.get("/v1/probes/syscalls").json()
    for raw in ["", "nope", "[]", "{}", '{"duration_s": "5"}', '{"duration_s": 0}', '{"duration_s": -1}',
                '{"duration_s": 11}', '{"duration_s": 1e308}', '{"duration_s": 5, "x": 1}', "{" * 5000,
                '{"duration_s": 5}' + " " * 70000]:
        r = post(a, None, raw=raw)
        assert r.status_code in (400, 413), (raw[:40], r.status_code, r.text)
        assert "error" in r.json()
    assert a.post("/v1/probes/syscalls?x=1", data='{"duration_s": 1}').status_code == 400
    assert a.request("DELETE", "/v1/probes/syscalls").status_code == 405
    assert a.get("/v1/probes/syscalls").json()["state"] == before["state"]
    assert syscall_links() == []
    assert a.get("/healthz").status_code == 200


def test_refused_without_onepanel_or_without_ebpf(tmp_path, target, agents):
    a = agents(tmp_path, agent_yaml({"binary": target.path}))
    a.wait_event("AGENT_START_MESSAGE")
    r = post(a, {"duration_s": 1})
    assert r.status_code == 503
    assert ("not running" in r.json()["error"]) if not FORCE_PROCFS else ("eBPF" in r.json()["error"])
    d = tmp_path / "procfs"
    d.mkdir()
    target.start()
    b = agents(d, agent_yaml({"binary": target.path}, extra="ebpf:\n  enabled: false\n"))
    b.wait_event("ONEPANEL_FOUND_MESSAGE")
    r = post(b, {"duration_s": 1})
    assert r.status_code == 503 and "eBPF mode" in r.json()["error"]
    assert b.get("/v1/probes/syscalls").json()["state"] == "unavailable"
    assert syscall_links() == []


def test_always_on(tmp_path, target, agents):
    if FORCE_PROCFS:
        pytest.skip("eBPF is forced off by the environment")
    target.start()
    a = agents(tmp_path, agent_yaml({"binary": target.path}, extra="ebpf:\n  syscall_probe_always_on: true\n"))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    assert a.get("/v1/probes/syscalls").json()["state"] == "always_on"
    target.do("g", 42)
    assert by_name(a.get("/v1/probes/syscalls").json(), "getppid")["count"] == 42
    assert post(a, {"duration_s": 1}).status_code == 409
    # switched off by a config reload: detached
    text = open(a.config_path).read().replace("syscall_probe_always_on: true", "syscall_probe_always_on: false")
    open(a.config_path, "w").write(text)
    seq = a.last_seq()
    a.proc.send_signal(signal.SIGHUP)
    a.wait_event("AGENT_CONFIG_RELOADED_MESSAGE", after=seq)
    assert a.get("/v1/probes/syscalls").json()["state"] == "finished"
    assert syscall_links() == []
