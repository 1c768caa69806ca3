"""Black-box tests of the agent against the onepanel simulator."""
import os
import signal
import subprocess

import pytest
import requests

from conftest import AGENT_BIN, EXPECT_MODE, EXPECT_TRACKING, SIM_BIN, SSE, Sim, agent_yaml, have, sim_onepanel, wait_for


def test_version_and_help():
    r = subprocess.run([AGENT_BIN, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("oneshield-agent ")
    r = subprocess.run([AGENT_BIN, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "-c, --config" in r.stdout
    r = subprocess.run([AGENT_BIN, "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2


def test_help_and_man_page_cover_every_flag_and_variable():
    """Every long option of main.c's getopt table and every variable the
    agent reads with getenv() is in --help and in the man page; so is the
    kept capability set (userspace/privs.h)."""
    import glob
    import re
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main = open(os.path.join(root, "userspace", "main.c")).read()
    table = main.split("static const struct option opts[]", 1)[1].split("};", 1)[0]
    longs = re.findall(r'\{ "([a-z-]+)",', table)
    assert {"config", "test", "verbose", "version", "help"} <= set(longs), longs
    env = set()
    for f in glob.glob(os.path.join(root, "userspace", "*.c")):
        env |= set(re.findall(r'getenv\("([A-Z_]+)"\)', open(f).read()))
    env.discard("SPOOL_CRC_SOFTWARE")  # spool.c's test knob; the agent does not open a spool yet
    assert "ONESHIELD_FORCE_PROCFS" in env
    text = subprocess.run([AGENT_BIN, "--help"], capture_output=True, text=True).stdout
    man = open(os.path.join(root, "man", "oneshield-agent.8")).read().replace("\\-", "-").replace("\\(em", "")
    caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_PTRACE",
            "CAP_PERFMON", "CAP_BPF"]
    for word in [f"--{o}" for o in longs] + sorted(env) + caps + ["no_new_privs"]:
        assert word in text, f"--help lacks {word}"
        assert word in man, f"the man page lacks {word}"


def test_config_check_ok(tmp_path, sim):
    p = tmp_path / "a.yaml"
    p.write_text(agent_yaml(sim_onepanel(sim)))
    r = subprocess.run([AGENT_BIN, "-t", "-c", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


@pytest.mark.parametrize("text,line,needle", [
    ("api:\n  rest_listen: 127.0.0.1:9440\nbogus: 1\n", 3, "bogus"),
    ("metrics:\n  interval: abc\n", 2, "interval"),
    ("onepanel:\n  binary: relative/path\n", 2, "binary"),
    ("api:\n  rest_listen: 127.0.0.1:70000\n", 2, "rest_listen"),
    ("onepanel:\n  binary: /usr/sbin/nginx\n  reload_signal: FOO\n", 3, "reload_signal"),
])
def test_bad_config_refused_with_file_line(tmp_path, text, line, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    for args in (["-t", "-c", str(p)], ["-c", str(p)]):
        r = subprocess.run([AGENT_BIN, *args], capture_output=True, text=True, timeout=20)
        assert r.returncode != 0
        assert f"{p}:{line}:" in r.stderr, r.stderr
        assert needle in r.stderr


def test_missing_config_file_refused(tmp_path):
    r = subprocess.run([AGENT_BIN, "-c", str(tmp_path / "nope.yaml")], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "nope.yaml" in r.stderr


def test_start_found_status_and_clean_stop(tmp_path, sim, agents):
    pid = sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    found = a.wait_event("ONEPANEL_FOUND_MESSAGE")
    assert found["pid"] == pid
    assert found["fields"]["exe"] == os.path.realpath(SIM_BIN)
    evs = a.events()
    assert evs[0]["type"] == "AGENT_START_MESSAGE" and evs[0]["seq"] == 1
    # consecutive sequence numbers
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))

    st = a.get("/v1/status").json()
    assert st["mode"] == EXPECT_MODE
    assert st["onepanel"]["state"] == "running"
    assert st["onepanel"]["pid"] == pid
    assert st["onepanel"]["tracking"] == EXPECT_TRACKING
    assert st["config_path"] == a.config_path
    assert a.get("/healthz").json() == {"status": "ok"}

    s = SSE(a.port, "/v1/events/stream?type=AGENT_STOP_MESSAGE")
    assert s.status == 200
    assert a.stop() == 0
    e = s.next()
    assert e["event"] == "AGENT_STOP_MESSAGE"
    assert s.closed.wait(10), "stream did not end at shutdown"


@pytest.mark.parametrize("how,expect", [
    ("sigkill", {"signal": 9}),
    ("exit3", {"exit_code": 3}),
    ("panic", {"exit_code": 2}),
    ("sigterm", {"exit_code": 0}),
])
def test_stop_reports_exit_status(tmp_path, sim, agents, how, expect):
    pid = sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    s = SSE(a.port, f"/v1/events/stream?type=ONEPANEL_STOP_MESSAGE&after={a.last_seq()}")
    if how == "sigkill":
        sim.kill(signal.SIGKILL)
    elif how == "sigterm":
        sim.kill(signal.SIGTERM)
    elif how == "exit3":
        sim.command("exit 3")
        sim.proc.wait(timeout=20)
    elif how == "panic":
        sim.kill(signal.SIGUSR2)
    e = s.next()["data"]
    assert e["type"] == "ONEPANEL_STOP_MESSAGE"
    assert e["pid"] == pid
    for k, v in expect.items():
        assert e.get(k) == v, e
    other = {"signal", "exit_code"} - set(expect)
    assert not (other & set(e)), e
    st = a.get("/v1/status").json()["onepanel"]
    assert st["state"] == "stopped"
    s.close()


def test_restart_is_stop_then_found(tmp_path, sim, agents):
    pid1 = sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    s = SSE(a.port, f"/v1/events/stream?after={a.last_seq()}")
    sim.kill(signal.SIGKILL)
    pid2 = sim.start()
    assert pid1 != pid2
    stop, _ = s.wait_type("ONEPANEL_STOP_MESSAGE")
    found, _ = s.wait_type("ONEPANEL_FOUND_MESSAGE")
    assert stop["data"]["pid"] == pid1
    assert found["data"]["pid"] == pid2
    assert found["id"] > stop["id"]
    assert found["data"]["fields"]["found_by"] in ("exec", "exec_pending", "pid_file")
    st = a.get("/v1/status").json()["onepanel"]
    assert st["pid"] == pid2 and st["restarts"] == 1
    m = a.get("/metrics").text
    wait_for(lambda: "onepanel_restarts_total 1" in a.get("/metrics").text, what="restart counter")
    assert "onepanel_up" in m


def test_onepanel_started_after_agent(tmp_path, sim, agents):
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    st = a.get("/v1/status").json()["onepanel"]
    assert st["configured"] and st["state"] == "stopped"
    wait_for(lambda: "onepanel_up 0" in a.get("/metrics").text, what="onepanel_up 0")
    pid = sim.start()
    found = a.wait_event("ONEPANEL_FOUND_MESSAGE")
    assert found["pid"] == pid
    wait_for(lambda: "onepanel_up 1" in a.get("/metrics").text, what="onepanel_up 1")


def test_metrics_prometheus_and_json(tmp_path, sim, agents):
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    wait_for(lambda: "onepanel_resident_memory_bytes" in a.get("/metrics").text, what="onepanel metrics")
    r = a.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = r.text
    for name in ("node_cpu_seconds_total", "node_memory_available_bytes", "node_load1",
                 "node_network_receive_bytes_total", "node_filesystem_avail_bytes",
                 "onepanel_up", "onepanel_cpu_seconds_total", "onepanel_open_fds", "onepanel_threads",
                 "oneshield_agent_resident_memory_bytes", "oneshield_agent_events_total"):
        assert f"\n{name}" in text or f"\n# TYPE {name} " in text, name
    if have("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
    j = a.get("/v1/metrics").json()
    names = {f["name"]: f for f in j["metrics"]}
    assert names["onepanel_up"]["samples"][0]["value"] == 1
    assert names["node_cpu_seconds_total"]["type"] == "counter"
    j = a.get("/v1/metrics", params={"prefix": "onepanel_"}).json()
    assert j["metrics"] and all(f["name"].startswith("onepanel_") for f in j["metrics"])


def test_sse_live_and_resume_with_last_event_id(tmp_path, sim, agents):
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    s = SSE(a.port)
    first = s.next()
    assert first["id"] == 1 and first["event"] == "AGENT_START_MESSAGE"
    found, _ = s.wait_type("ONEPANEL_FOUND_MESSAGE")
    sim.kill(signal.SIGKILL)
    stop, _ = s.wait_type("ONEPANEL_STOP_MESSAGE")
    s.close()
    # resume after FOUND: the STOP comes again, nothing before it
    r = SSE(a.port, headers={"Last-Event-ID": str(found["id"])})
    e = r.next()
    assert e["id"] == found["id"] + 1
    assert e["event"] == "ONEPANEL_STOP_MESSAGE"
    r.close()
    # query parameter works the same
    r = SSE(a.port, f"/v1/events/stream?after={stop['id']}")
    sim.start()
    e = r.next()
    assert e["id"] == stop["id"] + 1 and e["event"] == "ONEPANEL_FOUND_MESSAGE"
    r.close()


def test_type_filter(tmp_path, sim, agents):
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    evs = a.events(types=["ONEPANEL_FOUND_MESSAGE"])
    assert evs and all(e["type"] == "ONEPANEL_FOUND_MESSAGE" for e in evs)
    evs = a.events(types=["AGENT_START_MESSAGE", "ONEPANEL_FOUND_MESSAGE"])
    assert {e["type"] for e in evs} == {"AGENT_START_MESSAGE", "ONEPANEL_FOUND_MESSAGE"}


@pytest.mark.parametrize("method,path,code", [
    ("GET", "/nope", 404),
    ("GET", "/v1/statusx", 404),
    ("POST", "/v1/status", 405),
    ("DELETE", "/metrics", 405),
    ("GET", "/v1/events?after=abc", 400),
    ("GET", "/v1/events?after=-1", 400),
    ("GET", "/v1/events?after=99999999999999999999999", 400),
    ("GET", "/v1/events?type=NOT_A_TYPE", 400),
    ("GET", "/v1/events?type=AGENT_START_MESSAGE,,", 400),
    ("GET", "/v1/events?limit=0", 400),
    ("GET", "/v1/events?bogus=1", 400),
    ("GET", "/v1/events/stream?after=x", 400),
    ("GET", "/v1/metrics?foo=bar", 400),
])
def test_bad_requests_get_clear_json_errors(tmp_path, agents, method, path, code):
    a = agents(tmp_path, agent_yaml())
    r = requests.request(method, a.base + path, timeout=10)
    assert r.status_code == code
    body = r.json()
    assert body["status"] == code and body["error"]
    if code == 405:
        assert "GET" in r.headers["Allow"]
    # the agent is unharmed
    assert a.get("/healthz").status_code == 200


def test_oversized_headers_and_garbage(tmp_path, agents):
    a = agents(tmp_path, agent_yaml())
    r = requests.get(a.base + "/v1/status", headers={"X-Big": "a" * 100000}, timeout=10)
    assert r.status_code in (413, 431)
    import socket
    s = socket.create_connection(("127.0.0.1", a.port))
    s.sendall(b"\x00\x01garbage\r\n\r\n")
    s.settimeout(10)
    try:
        data = s.recv(100)
    except OSError:
        data = b""
    s.close()
    assert data == b"" or data.startswith(b"HTTP/1.1 400")
    assert a.get("/healthz").status_code == 200


def test_keepalive_reuses_connection(tmp_path, agents):
    import http.client
    a = agents(tmp_path, agent_yaml())
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    c.request("GET", "/healthz")
    r = c.getresponse()
    r.read()
    sock = c.sock
    c.request("GET", "/v1/status")
    r = c.getresponse()
    assert r.status == 200 and r.read()
    assert c.sock is sock, "connection was not kept alive"
    c.close()


def test_sighup_reload_good_and_bad(tmp_path, sim, agents):
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    text = open(a.config_path).read()
    open(a.config_path, "w").write(text.replace("interval: 200ms", "interval: 2s"))
    a.proc.send_signal(signal.SIGHUP)
    a.wait_event("AGENT_CONFIG_RELOADED_MESSAGE")
    wait_for(lambda: a.get("/v1/status").json()["metrics"]["interval_seconds"] == 2, what="new interval")
    open(a.config_path, "w").write(text + "bogus_key: 1\n")
    a.proc.send_signal(signal.SIGHUP)
    e = a.wait_event("AGENT_CONFIG_RELOAD_FAILED_MESSAGE")
    assert "bogus_key" in e["fields"]["error"]
    st = a.get("/v1/status").json()
    assert st["metrics"]["interval_seconds"] == 2      # old config kept
    assert st["onepanel"]["state"] == "running"


def test_max_sse_clients(tmp_path, agents):
    a = agents(tmp_path, agent_yaml(extra="") .replace("api:\n", "api:\n  max_sse_clients: 2\n"))
    s1, s2 = SSE(a.port), SSE(a.port)
    assert s1.status == 200 and s2.status == 200
    s3 = SSE(a.port)
    assert s3.status == 503
    s1.close()
    wait_for(lambda: a.get("/v1/status").json()["api"]["sse_clients"] <= 1, what="closed stream noticed")
    s2.close()


def test_rescan_fallback_without_proc_connector(tmp_path, sim, agents, monkeypatch):
    """Where the netlink proc connector is unavailable the agent still finds
    onepanel and sees it stop and start, by a slow /proc rescan."""
    monkeypatch.setenv("ONESHIELD_NO_PROC_CONNECTOR", "1")
    monkeypatch.setenv("ONESHIELD_FORCE_PROCFS", "1")
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    assert a.get("/v1/status").json()["onepanel"]["tracking"] == "rescan"
    pid = sim.start()
    found = a.wait_event("ONEPANEL_FOUND_MESSAGE")
    assert found["pid"] == pid
    seq = a.last_seq()
    sim.kill(signal.SIGKILL)
    stop = a.wait_event("ONEPANEL_STOP_MESSAGE", after=seq)
    assert stop["pid"] == pid
    pid2 = sim.start()
    found2 = a.wait_event("ONEPANEL_FOUND_MESSAGE", after=stop["seq"])
    assert found2["pid"] == pid2


def test_grpc_plugin_must_be_trusted(tmp_path):
    """The gRPC plugin is code loaded into a root daemon: a file others can
    write is refused, with a clear error, and the agent does not start."""
    import shutil as sh
    plugin = os.path.join(os.path.dirname(AGENT_BIN), "oneshield-agent-grpc.so")
    bad = tmp_path / "writable.so"
    sh.copy(plugin, bad)
    os.chmod(bad, 0o666)
    cfg = tmp_path / "a.yaml"
    cfg.write_text(agent_yaml(grpc=True))
    env = dict(os.environ, ONESHIELD_GRPC_PLUGIN=str(bad))
    r = subprocess.run([AGENT_BIN, "-c", str(cfg)], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 1
    assert "writable only by its owner" in r.stderr
    env["ONESHIELD_GRPC_PLUGIN"] = str(tmp_path / "missing.so")
    r = subprocess.run([AGENT_BIN, "-c", str(cfg)], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 1 and "missing.so" in r.stderr
    # a symbolic link, even to the good plugin, is not followed: what is
    # checked is what is loaded (the link could be switched in between)
    link = tmp_path / "link.so"
    os.symlink(plugin, link)
    env["ONESHIELD_GRPC_PLUGIN"] = str(link)
    r = subprocess.run([AGENT_BIN, "-c", str(cfg)], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 1 and "link.so: a symbolic link" in r.stderr


def test_first_snapshot_already_shows_running_onepanel(tmp_path, sim, agents):
    """With a 1 h interval only the start-up collection exists: it must
    already see the onepanel that was running when the agent started."""
    pid = sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)).replace("interval: 200ms", "interval: 1h"))
    text = a.get("/metrics").text
    assert "\nonepanel_up 1\n" in text
    assert f"\nonepanel_pid {pid}\n" in text


def test_fast_restarts_each_stop_then_found(tmp_path, sim, agents):
    """Kill and restart onepanel back to back, so the new exec can reach the
    agent before the old master's exit does: every restart must still be a
    STOP of the old pid followed by a FOUND of the new one."""
    pid = sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    s = SSE(a.port, f"/v1/events/stream?after={a.last_seq()}&type=ONEPANEL_STOP_MESSAGE,ONEPANEL_FOUND_MESSAGE")
    for _ in range(5):
        old = sim.proc
        old.kill()
        new = sim.start()
        stop = s.next()["data"]
        found = s.next()["data"]
        assert (stop["type"], stop["pid"]) == ("ONEPANEL_STOP_MESSAGE", pid)
        assert (found["type"], found["pid"]) == ("ONEPANEL_FOUND_MESSAGE", new)
        old.wait(timeout=20)
        pid = new
    s.close()
    assert a.get("/v1/status").json()["onepanel"]["restarts"] == 5
