"""The README's first quick-start command, scripts/run.sh, as a newcomer runs
it: with no onepanel configured it starts the simulator and an agent
tracking it; status, metrics and the event stream answer, and killing the
simulator shows ONEPANEL_STOP on the stream at once (then FOUND again when
the script's supervisor restarts it)."""
import os
import signal
import subprocess

import pytest
import requests

from conftest import ROOT, SSE, anonymous, free_port, register_token, wait_for


@pytest.mark.skipif(os.path.exists("/etc/oneshield-agent/agent.yaml"),
                    reason="a real agent config exists: run.sh would use it")
def test_run_sh_demo(tmp_path):
    port = free_port()
    demo = tmp_path / "demo"
    env = dict(os.environ, DEMO_DIR=str(demo), DEMO_REST=f"127.0.0.1:{port}")
    p = subprocess.Popen(["bash", os.path.join(ROOT, "scripts", "run.sh")], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def running():
            # the agent writes it at start: wait for the whole token
            if not os.path.exists(demo / "token") or len(open(demo / "token").read()) != 65:
                return None
            register_token(f"127.0.0.1:{port}", demo / "token")
            try:
                st = requests.get(base + "/v1/status", timeout=5).json()
            except (requests.RequestException, ValueError):
                return None
            return st if st["onepanel"]["state"] == "running" else None

        st = wait_for(running, timeout=180, what="the demo agent tracking the simulator")
        pid = st["onepanel"]["pid"]
        assert st["config_path"] == str(demo / "agent.yaml")
        assert os.stat(demo / "token").st_mode & 0o777 == 0o600
        with anonymous():
            assert requests.get(base + "/v1/status", timeout=5).status_code == 401
        assert "onepanel_up 1" in requests.get(base + "/metrics", timeout=5).text
        s = SSE(port, f"/v1/events/stream?after={st['events']['last_seq']}")
        os.kill(pid, signal.SIGKILL)
        stop = s.next()["data"]
        assert stop["type"] == "ONEPANEL_STOP_MESSAGE" and stop["pid"] == pid and stop["signal"] == 9
        found = s.next()["data"]   # the script's supervisor starts it again
        assert found["type"] == "ONEPANEL_FOUND_MESSAGE" and found["pid"] != pid
        s.close()
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        out = p.communicate(timeout=60)[0].decode(errors="replace")
    assert 'curl -N -H "Authorization: Bearer $TOKEN" http://127.0.0.1:%d/v1/events/stream' % port in out
    assert f"TOKEN=$(cat {demo}/token)" in out
