"""The agent tracking real nginx (Debian's), run in the foreground from a
temporary prefix: nginx is the stand-in for a real onepanel."""
import os
import re
import shutil
import signal
import subprocess

import pytest

from conftest import SSE, agent_yaml, free_port, wait_for

NGINX = "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(not os.path.exists(NGINX) and not os.environ.get("CI"),
                                reason="nginx not installed")


class Nginx:
    def __init__(self, tmp_path, workers=2, server_extra=""):
        self.prefix = str(tmp_path / "nginx")
        os.makedirs(self.prefix + "/html", exist_ok=True)
        for d in (str(tmp_path), self.prefix, self.prefix + "/html"):
            os.chmod(d, 0o755)
        with open(self.prefix + "/html/index.html", "w") as f:
            f.write("hello\n")
        self.port = free_port()
        self.pid_file = self.prefix + "/nginx.pid"
        self.conf = self.prefix + "/nginx.conf"
        self.error_log = self.prefix + "/error.log"
        self.access_log = self.prefix + "/access.log"
        p = self.prefix
        with open(self.conf, "w") as f:
            f.write(f"""daemon off;
worker_processes {workers};
pid {self.pid_file};
error_log {self.error_log} notice;
events {{ worker_connections 64; }}
http {{
    access_log {self.access_log};
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{ listen 127.0.0.1:{self.port}; root {p}/html; {server_extra} }}
}}
""")
        self.proc = None

    def start(self):
        if os.path.exists(self.pid_file):
            os.unlink(self.pid_file)
        self.proc = subprocess.Popen([NGINX, "-p", self.prefix, "-c", self.conf, "-e", self.error_log],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: os.path.exists(self.pid_file) and open(self.pid_file).read().strip(),
                 what="nginx pid file")
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def nginx(tmp_path):
    n = Nginx(tmp_path)
    yield n
    n.stop()


def nginx_agent(n):
    return agent_yaml({
        "binary": NGINX,
        "pid_file": n.pid_file,
        "config_file": n.conf,
        "allowed_dirs": f"[{n.prefix}]",
        "validate_command": f"\"{NGINX} -t -c {{config}}\"",
        "version_command": f"\"{NGINX} -v\"",
        "access_logs": f"[{{ path: {n.access_log}, format: combined }}]",
        "error_logs": f"[{{ path: {n.error_log} }}]",
    })


def test_nginx_found_children_stop_and_restart(tmp_path, nginx, agents):
    assert shutil.which(NGINX)
    pid = nginx.start()
    a = agents(tmp_path, nginx_agent(nginx))
    found = a.wait_event("ONEPANEL_FOUND_MESSAGE")
    assert found["pid"] == pid
    assert found["fields"]["found_by"] == "pid_file"
    assert found["fields"]["exe"] == NGINX
    # both workers counted as children of the master
    wait_for(lambda: "onepanel_children 2" in a.get("/metrics").text, what="2 nginx workers")
    # its version, from "nginx version: nginx/1.22.1" on stderr
    want = re.search(r"nginx/\S+", subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr).group(0)
    wait_for(lambda: a.get("/v1/status").json()["onepanel"].get("version") == want, what=f"version {want}")

    workers = {int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()} \
        if os.path.exists(f"/proc/{pid}/task/{pid}/children") else None
    s = SSE(a.port, f"/v1/events/stream?after={a.last_seq()}")
    # graceful stop: the master retires its workers (each a WORKER_STOP,
    # before the STOP), then exits with status 0
    os.kill(pid, signal.SIGQUIT)
    stop, seen = s.wait_type("ONEPANEL_STOP_MESSAGE")
    stop = stop["data"]
    assert stop["pid"] == pid and stop["exit_code"] == 0
    wstops = [e["data"] for e in seen if e["event"] == "ONEPANEL_WORKER_STOP_MESSAGE"]
    assert len(wstops) == 2 and all(w["fields"]["ppid"] == str(pid) and w["exit_code"] == 0 for w in wstops)
    if workers is not None:
        assert {w["pid"] for w in wstops} == workers
    assert [e["event"] for e in seen] == ["ONEPANEL_WORKER_STOP_MESSAGE"] * 2 + ["ONEPANEL_STOP_MESSAGE"]
    nginx.proc.wait(timeout=20)

    pid2 = nginx.start()
    found2, seen = s.wait_type("ONEPANEL_FOUND_MESSAGE")
    assert seen == [found2] and found2["data"]["pid"] == pid2
    assert a.get("/v1/status").json()["onepanel"]["restarts"] == 1
    wait_for(lambda: a.get("/v1/status").json()["onepanel"].get("workers") == 2, what="2 workers of the new master")

    # the whole process group killed: the master died of SIGKILL
    os.killpg(pid2, signal.SIGKILL)
    stop2, _ = s.wait_type("ONEPANEL_STOP_MESSAGE")
    stop2 = stop2["data"]
    assert stop2["pid"] == pid2 and stop2["signal"] == 9
    s.close()
    assert a.stop() == 0


def test_nginx_reload_replaces_workers(tmp_path, nginx, agents):
    """A reload (SIGHUP) makes nginx fork new workers and retire the old ones:
    seen as WORKER_START for each new one and WORKER_STOP for each old one,
    while the master stays (no STOP, no FOUND)."""
    pid = nginx.start()
    a = agents(tmp_path, nginx_agent(nginx))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    wait_for(lambda: a.get("/v1/status").json()["onepanel"].get("workers") == 2, what="2 nginx workers")
    old = {int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()}
    assert len(old) == 2
    # workers forked after the agent subscribed (nginx was still starting)
    # are reported too: the counters below are those plus the reload's
    base = a.last_seq()
    n0 = {t: len(a.events(types=[t])) for t in ("ONEPANEL_WORKER_START_MESSAGE", "ONEPANEL_WORKER_STOP_MESSAGE")}
    s = SSE(a.port, f"/v1/events/stream?after={base}")
    os.kill(pid, signal.SIGHUP)
    starts, stops = {}, {}
    while len(starts) < 2 or len(stops) < 2:
        e = s.next()
        d = e["data"]
        assert e["event"] in ("ONEPANEL_WORKER_START_MESSAGE", "ONEPANEL_WORKER_STOP_MESSAGE"), e
        assert d["fields"]["ppid"] == str(pid)
        (starts if e["event"] == "ONEPANEL_WORKER_START_MESSAGE" else stops)[d["pid"]] = d
    s.close()
    assert set(stops) == old
    assert not set(starts) & old
    assert all(d["exit_code"] == 0 for d in stops.values())
    # the old ones may still be zombies until the master reaps them
    wait_for(lambda: {int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()} == set(starts),
             what="the master's children are the new workers")
    st = a.get("/v1/status").json()["onepanel"]
    assert st["pid"] == pid and st["workers"] == 2 and st["restarts"] == 0
    want = (f"onepanel_worker_starts_total {n0['ONEPANEL_WORKER_START_MESSAGE'] + 2}",
            f"onepanel_worker_stops_total {n0['ONEPANEL_WORKER_STOP_MESSAGE'] + 2}")
    wait_for(lambda: all(x in a.get("/metrics").text for x in want), what=f"worker counters in /metrics: {want}")


def test_nginx_found_by_scan_without_pid_file(tmp_path, nginx, agents):
    others = [p for p in subprocess.run(["pgrep", "-x", "nginx"], capture_output=True, text=True).stdout.split()
              if os.path.exists(f"/proc/{p}/stat") and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0]
              not in ("Z", "X")]
    if others:
        pytest.skip(f"another nginx runs on this host ({others}); a scan would rightly find the oldest")
    pid = nginx.start()
    cfg = nginx_agent(nginx).replace(f"  pid_file: {nginx.pid_file}\n", "")
    a = agents(tmp_path, cfg)
    found = a.wait_event("ONEPANEL_FOUND_MESSAGE")
    # the master, not one of its workers (whose parent matches the binary)
    assert found["pid"] == pid
    assert found["fields"]["found_by"] == "scan"
