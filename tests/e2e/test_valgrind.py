"""The agent under valgrind (memcheck), in eBPF mode: load the programs,
track onepanel through FOUND, worker events, STOP, run a syscall
investigation, reload the config, shut down. No errors (libbpf's partly
filled bpf() attribute unions are suppressed by tests/valgrind.supp), no
definite leaks.

Slow (valgrind), so it runs only in its own CI stage: ONESHIELD_VALGRIND=1."""
import os
import re
import signal
import subprocess

import pytest

from conftest import AGENT_BIN, ROOT, Sim, agent_yaml, free_port, sim_onepanel, wait_for

pytestmark = pytest.mark.skipif(os.environ.get("ONESHIELD_VALGRIND") != "1",
                                reason="valgrind stage only (ONESHIELD_VALGRIND=1)")


def test_agent_clean_under_valgrind(tmp_path):
    import requests
    sim = Sim(tmp_path, workers=2)
    sim.start()
    port = free_port()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(re.sub(r"rest_listen: 127\.0\.0\.1:\d+", f"rest_listen: 127.0.0.1:{port}",
                          agent_yaml(sim_onepanel(sim))))
    log = tmp_path / "valgrind.log"
    proc = subprocess.Popen(["valgrind", "--error-exitcode=99", "--leak-check=full",
                             "--errors-for-leak-kinds=definite", f"--log-file={log}",
                             f"--suppressions={os.path.join(ROOT, 'tests', 'valgrind.supp')}",
                             AGENT_BIN, "-c", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        def events(t):
            try:
                return requests.get(base + "/v1/events", params={"type": t}, timeout=10).json()["events"]
            except requests.ConnectionError:
                return None
        wait_for(lambda: events("ONEPANEL_FOUND_MESSAGE"), timeout=120, what="FOUND under valgrind")
        st = requests.get(base + "/v1/status", timeout=10).json()
        assert st["mode"] == ("procfs" if os.environ.get("ONESHIELD_FORCE_PROCFS") == "1" else "ebpf")
        if st["mode"] == "ebpf":
            r = requests.post(base + "/v1/probes/syscalls", json={"duration_s": 1}, timeout=10)
            assert r.status_code == 202, r.text
            wait_for(lambda: requests.get(base + "/v1/probes/syscalls", timeout=10).json()["state"] == "finished",
                     timeout=60, what="investigation finished")
        requests.get(base + "/metrics", timeout=10)
        pid = sim.proc.pid
        kids = [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
        os.kill(kids[0], signal.SIGKILL)
        wait_for(lambda: events("ONEPANEL_WORKER_START_MESSAGE"), timeout=60, what="worker respawned")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: events("AGENT_CONFIG_RELOADED_MESSAGE"), timeout=60, what="reload")
        sim.kill(signal.SIGKILL)
        wait_for(lambda: events("ONEPANEL_STOP_MESSAGE"), timeout=60, what="STOP")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sim.stop()
    out = log.read_text()
    assert rc == 0, out[-4000:]
    assert "ERROR SUMMARY: 0 errors" in out, out[-4000:]
