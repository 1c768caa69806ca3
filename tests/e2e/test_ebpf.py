"""Process tracking through eBPF (and the same behaviour in procfs mode).

The whole e2e suite runs in eBPF mode and again with ONESHIELD_FORCE_PROCFS=1;
these tests check what differs (mode, reasons, BPF metrics) and what must
not (FOUND/STOP/WORKER events with the right pid, exit code and signal, pid
reuse)."""
import os
import shutil
import signal
import subprocess

import pytest

from conftest import (EXPECT_MODE, EXPECT_TRACKING, FORCE_PROCFS, SIM_BIN, SSE, Sim, agent_yaml, sim_onepanel,
                      wait_for)


def metric(a, name, default=None):
    """Value of the first sample of a family in /metrics (labels ignored)."""
    for line in a.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return default


@pytest.fixture
def sim2(tmp_path):
    s = Sim(tmp_path, name="sim2", workers=2)
    yield s
    s.stop()


def test_mode_and_reason_in_status(tmp_path, sim, agents):
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    st = a.get("/v1/status").json()
    assert st["mode"] == EXPECT_MODE
    assert st["onepanel"]["tracking"] == EXPECT_TRACKING
    start = a.events(types=["AGENT_START_MESSAGE"])[0]
    assert start["fields"]["mode"] == EXPECT_MODE
    if FORCE_PROCFS:
        assert "ONESHIELD_FORCE_PROCFS" in st["mode_reason"]
        assert start["fields"]["mode_reason"] == st["mode_reason"]
        assert st["ebpf"]["process_events"] == "off"
        assert st["ebpf"]["process_events_transport"] == "off"
        assert st["ebpf"]["scheduler_delay"] == "off"
    else:
        assert "mode_reason" not in st
        assert st["ebpf"]["process_events"] in ("tp_btf", "raw_tp", "tp")
        assert st["ebpf"]["process_events_transport"] == "ringbuf"  # this kernel has one
        assert st["ebpf"]["scheduler_delay"] != "off", st["ebpf"]


def test_config_switch_forces_procfs_with_same_events(tmp_path, sim, agents):
    """ebpf.enabled: false gives procfs mode, says why, and FOUND/STOP carry
    the same facts (pid, signal)."""
    pid = sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim), extra="ebpf:\n  enabled: false\n"))
    found = a.wait_event("ONEPANEL_FOUND_MESSAGE")
    assert found["pid"] == pid and found["fields"]["tracking"] == "proc_connector"
    st = a.get("/v1/status").json()
    assert st["mode"] == "procfs"
    assert st["mode_reason"] in ("ebpf.enabled is false in the configuration", "forced by ONESHIELD_FORCE_PROCFS=1")
    sim.kill(signal.SIGKILL)
    stop = a.wait_event("ONEPANEL_STOP_MESSAGE")
    assert stop["pid"] == pid and stop["signal"] == 9
    assert "oneshield_agent_bpf_host_execs_total" not in a.get("/metrics").text


def test_sighup_switches_mode(tmp_path, sim, agents):
    """Turning eBPF off (and on) by reloading the agent's config: the master
    is looked for again through the new source."""
    if FORCE_PROCFS:
        pytest.skip("eBPF is forced off by the environment")
    pid = sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    with open(a.config_path, "a") as f:
        f.write("ebpf:\n  enabled: false\n")
    seq = a.last_seq()
    a.proc.send_signal(signal.SIGHUP)
    a.wait_event("AGENT_CONFIG_RELOADED_MESSAGE", after=seq)
    st = a.get("/v1/status").json()
    assert st["mode"] == "procfs" and st["onepanel"]["tracking"] == "proc_connector"
    assert st["onepanel"]["pid"] == pid
    sim.kill(signal.SIGKILL)
    assert a.wait_event("ONEPANEL_STOP_MESSAGE", after=seq)["signal"] == 9


@pytest.mark.parametrize("cmd,code,sig", [("exit 3", 3, None), ("crash", None, 11)])
def test_stop_exit_code_and_signal(tmp_path, sim, agents, cmd, code, sig):
    pid = sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    seq = a.last_seq()
    sim.command(cmd)
    stop = a.wait_event("ONEPANEL_STOP_MESSAGE", after=seq)
    assert stop["pid"] == pid
    if code is not None:
        assert stop["exit_code"] == code and "signal" not in stop
    else:
        assert stop["signal"] == sig
    last = a.get("/v1/status").json()["onepanel"]["last_exit"]
    assert last == ({"exit_code": code} if code is not None else {"signal": sig})


def test_worker_killed_and_respawned(tmp_path, sim2, agents):
    """A worker killed with SIGKILL: WORKER_STOP (signal 9, warning) and the
    master's replacement: WORKER_START, with the master as ppid."""
    pid = sim2.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim2)))
    found = a.wait_event("ONEPANEL_FOUND_MESSAGE")
    wait_for(lambda: a.get("/v1/status").json()["onepanel"].get("workers") == 2, what="2 workers")
    kids = [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    assert len(kids) == 2
    # (the simulator also logs the death as an [alert]: a CRITICAL_ERROR)
    s = SSE(a.port, f"/v1/events/stream?after={a.last_seq()}"
                    "&type=ONEPANEL_WORKER_START_MESSAGE,ONEPANEL_WORKER_STOP_MESSAGE")
    os.kill(kids[0], signal.SIGKILL)
    e1, e2 = s.next(), s.next()
    s.close()
    assert e1["event"] == "ONEPANEL_WORKER_STOP_MESSAGE"
    d = e1["data"]
    assert d["pid"] == kids[0] and d["signal"] == 9 and d["level"] == "warning" and d["fields"]["ppid"] == str(pid)
    assert e2["event"] == "ONEPANEL_WORKER_START_MESSAGE"
    d = e2["data"]
    assert d["fields"]["ppid"] == str(pid) and d["pid"] not in kids
    new = {int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()}
    assert d["pid"] in new
    st = a.get("/v1/status").json()["onepanel"]
    assert st["workers"] == 2 and st["pid"] == found["pid"]


def test_stop_comes_before_orphaned_workers(tmp_path, sim2, agents):
    """Master killed: its workers die of PR_SET_PDEATHSIG after it. Those are
    not reported as worker stops; the STOP is the next event."""
    pid = sim2.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim2)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    wait_for(lambda: a.get("/v1/status").json()["onepanel"].get("workers") == 2, what="2 workers")
    kids = [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    s = SSE(a.port, f"/v1/events/stream?after={a.last_seq()}")
    sim2.kill(signal.SIGKILL)
    for k in kids:  # the orphans are gone (reaped by init) before we look
        wait_for(lambda: not os.path.exists(f"/proc/{k}/stat") or
                 open(f"/proc/{k}/stat").read().rsplit(")", 1)[1].split()[0] in "ZX",
                 what=f"orphaned worker {k} gone")
    e = s.next()
    assert e["event"] == "ONEPANEL_STOP_MESSAGE" and e["data"]["pid"] == pid
    pid2 = sim2.start()
    e = s.next()
    s.close()
    assert e["event"] == "ONEPANEL_FOUND_MESSAGE" and e["data"]["pid"] == pid2


def _occupy_pid(pid):
    """Start a process (not onepanel) that gets exactly this pid, through
    /proc/sys/kernel/ns_last_pid; None if other forks on the host win the
    race every time."""
    for _ in range(200):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        p = subprocess.Popen(["sleep", "600"])
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
    return None


def test_pid_reuse_is_not_onepanel(tmp_path, sim, agents):
    """The master dies by SIGKILL and leaves its pid file; another program
    gets the same pid. The agent does not take it for onepanel, and the next
    real start is found with its own pid."""
    pid = sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim) | {"pid_file": sim.pid_file}))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    seq = a.last_seq()
    sim.kill(signal.SIGKILL)
    stop = a.wait_event("ONEPANEL_STOP_MESSAGE", after=seq)
    assert open(sim.pid_file).read().strip() == str(pid)  # stale pid file left behind
    squatter = _occupy_pid(pid)
    if squatter is None:
        pytest.skip(f"could not get pid {pid} back for the test")
    try:
        # a fresh agent reads the stale pid file: it names the squatter,
        # which is not onepanel
        d = tmp_path / "second"
        d.mkdir()
        b = agents(d, agent_yaml(sim_onepanel(sim) | {"pid_file": sim.pid_file}))
        b.wait_event("AGENT_START_MESSAGE")
        st = b.get("/v1/status").json()["onepanel"]
        assert st["state"] == "stopped"
        assert not b.events(types=["ONEPANEL_FOUND_MESSAGE"])
        # and the first agent did not take it either
        assert a.get("/v1/status").json()["onepanel"]["state"] == "stopped"
        pid2 = sim.start()
        for ag in (a, b):
            found = ag.wait_event("ONEPANEL_FOUND_MESSAGE", after=stop["seq"] if ag is a else 0)
            assert found["pid"] == pid2 != pid
    finally:
        squatter.kill()
        squatter.wait()


def test_bpf_metrics(tmp_path, sim2, agents):
    """eBPF mode exports host process counters, loss counters, BPF self-cost,
    and the scheduler delay of onepanel's processes."""
    if FORCE_PROCFS:
        pytest.skip("eBPF is forced off by the environment")
    sim2.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim2)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    wait_for(lambda: metric(a, "oneshield_agent_bpf_host_execs_total") is not None, what="BPF counters")
    before = metric(a, "oneshield_agent_bpf_host_execs_total")
    for _ in range(20):
        subprocess.run(["/bin/true"], check=True)
    wait_for(lambda: metric(a, "oneshield_agent_bpf_host_execs_total") >= before + 20, what="20 more execs counted")
    assert metric(a, "oneshield_agent_bpf_ringbuf_drops_total") == 0
    text = a.get("/metrics").text
    assert 'oneshield_agent_bpf_prog_runs_total{prog="' in text
    # the workers serve HTTP: each request wakes one, so run-queue latency
    # of onepanel's processes gets samples
    port = int(open(sim2.error_log).read().split("listening on 127.0.0.1:")[1].split()[0])
    import http.client
    for _ in range(50):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/")
        assert c.getresponse().status == 200
        c.close()
    wait_for(lambda: (metric(a, "onepanel_runqueue_latency_seconds_count") or 0) > 0,
             what="run-queue latency samples")
    assert metric(a, "onepanel_offcpu_seconds_count") > 0


def test_bpf_stats_when_enabled(tmp_path, sim, agents):
    """With kernel.bpf_stats_enabled=1 the programs' run counts and times
    are exported (the agent never turns it on itself)."""
    if FORCE_PROCFS:
        pytest.skip("eBPF is forced off by the environment")
    path = "/proc/sys/kernel/bpf_stats_enabled"
    old = open(path).read().strip()
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    try:
        with open(path, "w") as f:
            f.write("1")
        for _ in range(5):
            subprocess.run(["/bin/true"], check=True)

        def runs():
            total = 0.0
            for line in a.get("/metrics").text.splitlines():
                if line.startswith("oneshield_agent_bpf_prog_runs_total{") and "pl_" in line:
                    total += float(line.rsplit(" ", 1)[1])
            return total
        wait_for(lambda: runs() >= 5, what="program run counts")
    finally:
        with open(path, "w") as f:
            f.write(old)


def test_pid_namespace_falls_back_to_procfs(tmp_path):
    """In a PID namespace of its own (a container) eBPF programs would report
    host pids: the agent runs in procfs mode and says why."""
    import json
    import urllib.request
    from conftest import AGENT_BIN, free_port, register_token
    if not shutil.which("unshare"):
        pytest.skip("unshare not installed")
    port = free_port()
    cfg = tmp_path / "a.yaml"
    token = tmp_path / "token"
    cfg.write_text(f"onepanel:\n  name: osb-nothing\napi:\n  rest_listen: 127.0.0.1:{port}\n  grpc_listen: off\n"
                   f"  token_file: {token}\n")
    p = subprocess.Popen(["unshare", "-p", "-f", "--mount-proc", AGENT_BIN, "-c", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def status():
            if not token.exists() or len(token.read_text()) != 65:
                return None   # the agent writes it at start
            register_token(f"127.0.0.1:{port}", token)
            try:
                return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=5).read())
            except OSError:
                return None
        st = wait_for(status, what="agent in a PID namespace answering")
        assert st["pid"] == 1
        assert st["mode"] == "procfs"
        assert "PID namespace" in st["mode_reason"] or FORCE_PROCFS
        # as PID 1 it still stops on SIGTERM (docker stop): unshare passes
        # nothing on, so signal the agent through its host pid
        kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
        os.kill(int(kids[0]), signal.SIGTERM)
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
