"""Config management (issue 4) against real nginx (Debian's), run in the
foreground from a temporary prefix: the agent applies nginx.conf, nginx -t
validates it, SIGHUP reloads it, and a failed reload is rolled back.

The config file lives alone in PREFIX/conf (the allowed dir); logs, pid file
and temp dirs stay in PREFIX, outside it."""
from __future__ import annotations

import os
import re
import socket
import stat

import pytest
import requests

from conftest import DEADLINE, agent_yaml, wait_for, yq
from simhelpers import pid_gone, proc_children
from test_nginx import NGINX, Nginx

pytestmark = pytest.mark.skipif(not os.path.exists(NGINX) and not os.environ.get("CI"),
                                reason="nginx not installed")

APPLY_TIMEOUT = max(120.0, 4 * DEADLINE)
SIGHUP_RX = re.compile(r"\[notice\] \d+#\d+: signal 1 \(SIGHUP\) received", re.M)


class ConfNginx(Nginx):
    """The Nginx helper with its config in PREFIX/conf/nginx.conf and a
    server that answers every request with "message: TEXT"."""

    def __init__(self, tmp_path, workers=2):
        super().__init__(tmp_path, workers)
        os.unlink(self.conf)
        self.workers = workers
        self.conf_dir = os.path.join(self.prefix, "conf")
        os.makedirs(self.conf_dir)
        self.conf = os.path.join(self.conf_dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(self.text("v1"))

    def text(self, message, extra_server="", extra_http=""):
        p = self.prefix
        return f"""daemon off;
worker_processes {self.workers};
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
    default_type text/plain;
    {extra_http}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{ return 200 "message: {message}\\n"; }}
    }}
    {extra_server}
}}
"""

    def get(self):
        s = requests.Session()
        s.trust_env = False
        with s:
            return s.get(f"http://127.0.0.1:{self.port}/", timeout=5)

    def serves(self, message):
        r = self.get()
        return r.status_code == 200 and r.text == f"message: {message}\n"

    def wait_message(self, message):
        def ok():
            try:
                return self.serves(message)
            except requests.RequestException:
                return False
        wait_for(ok, what=f"nginx to serve message {message!r}")

    def log_since(self, mark):
        with open(self.error_log, "rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")

    def mark(self):
        try:
            return os.path.getsize(self.error_log)
        except FileNotFoundError:
            return 0

    def master(self):
        return int(open(self.pid_file).read().strip())

    def live_workers(self):
        return [k for k in proc_children(self.master()) if not pid_gone(k)]


@pytest.fixture
def ngx(tmp_path):
    n = ConfNginx(tmp_path)
    yield n
    n.stop()


def agent_cfg(n):
    return agent_yaml({
        "binary": NGINX,
        "pid_file": yq(n.pid_file),
        "config_file": yq(n.conf),
        "allowed_dirs": f"[{yq(n.conf_dir)}]",
        "validate_command": yq(f"{NGINX} -t -p {n.prefix} -c {{config}}"),
        # a failed nginx reload retries bind() for ~2.5 s before giving up
        "reload_timeout": "30s",
        "access_logs": f"[{{ path: {yq(n.access_log)}, format: combined }}]",
        "error_logs": f"[{{ path: {yq(n.error_log)} }}]",
    })


def snapshot(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None
            out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), data, st.st_mode, st.st_uid, st.st_gid)
    return out


def apply(a, files, **opts):
    s = requests.Session()
    s.trust_env = False
    with s:
        r = s.post(a.base + "/v1/config/apply", json={"files": files, **opts}, timeout=APPLY_TIMEOUT)
    return r.status_code, r.json()


def apply_event_types(a, j, after):
    evs = [e for e in a.events(after=after) if e.get("correlation_id") == j["correlation_id"]]
    assert [e["seq"] for e in evs] == j["events"], (j["events"], evs)
    return [e["type"] for e in evs]


def start(tmp_path, ngx, agents):
    pid = ngx.start()
    a = agents(tmp_path, agent_cfg(ngx))
    a.wait_event("ONEPANEL_FOUND_MESSAGE", pred=lambda e: e["pid"] == pid)
    wait_for(lambda: len(ngx.live_workers()) == ngx.workers, what="nginx workers")
    ngx.wait_message("v1")
    return a


def test_nginx_apply_changes_what_it_serves(tmp_path, ngx, agents):
    a = start(tmp_path, ngx, agents)
    old_workers = set(ngx.live_workers())
    before, mark = a.last_seq(), ngx.mark()
    code, j = apply(a, [{"path": ngx.conf, "content": ngx.text("v2")}])
    assert code == 200, j
    assert j["status"] == "applied" and j["reloaded"] is True, j
    assert j["validator"]["exit_code"] == 0 and "test is successful" in j["validator"]["output"], j
    ngx.wait_message("v2")
    assert apply_event_types(a, j, before) == ["ONEPANEL_RELOAD_SUCCESS_MESSAGE", "CONFIG_APPLY_SUCCESS_MESSAGE"]
    # one SIGHUP, a new generation of workers, the same master
    wait_for(lambda: SIGHUP_RX.search(ngx.log_since(mark)), what="SIGHUP in nginx's log")
    assert len(SIGHUP_RX.findall(ngx.log_since(mark))) == 1
    wait_for(lambda: len(ngx.live_workers()) == ngx.workers and not old_workers & set(ngx.live_workers()),
             what="a new generation of nginx workers")
    assert ngx.master() == ngx.proc.pid
    assert os.listdir(ngx.conf_dir) == ["nginx.conf"]


def test_nginx_broken_config_refused(tmp_path, ngx, agents):
    a = start(tmp_path, ngx, agents)
    tree = snapshot(ngx.conf_dir)
    before, mark = a.last_seq(), ngx.mark()
    code, j = apply(a, [{"path": ngx.conf, "content": ngx.text("v2", extra_http="bogus_directive on;")}])
    assert code == 422, j
    assert j["status"] == "invalid", j
    assert j["validator"]["exit_code"] != 0, j
    assert re.search(r'\[emerg\] (\d+#\d+: )?unknown directive "bogus_directive"', j["validator"]["output"]), j
    assert snapshot(ngx.conf_dir) == tree
    assert ngx.serves("v1")
    assert apply_event_types(a, j, before) == ["CONFIG_APPLY_FAILURE_MESSAGE"]
    # barrier: a good apply is the first and only SIGHUP
    code, j = apply(a, [{"path": ngx.conf, "content": ngx.text("v3")}])
    assert code == 200 and j["status"] == "applied", j
    ngx.wait_message("v3")
    wait_for(lambda: SIGHUP_RX.search(ngx.log_since(mark)), what="SIGHUP in nginx's log")
    assert len(SIGHUP_RX.findall(ngx.log_since(mark))) == 1


def test_nginx_reload_failure_rolled_back(tmp_path, ngx, agents):
    """Listening on a port that is taken passes nginx -t (which binds
    nothing) but fails when the master applies it."""
    a = start(tmp_path, ngx, agents)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    busy = taken.getsockname()[1]
    try:
        tree = snapshot(ngx.conf_dir)
        before, mark = a.last_seq(), ngx.mark()
        master = ngx.master()
        bad = ngx.text("v2", extra_server=f'server {{ listen 127.0.0.1:{busy}; return 200 "x\\n"; }}')
        code, j = apply(a, [{"path": ngx.conf, "content": bad},
                            {"path": os.path.join(ngx.conf_dir, "new.conf"), "content": "added\n"}])
        print("nginx reload failure ->", code, j, "\n---- nginx error log since the apply ----\n" + ngx.log_since(mark))
        assert code == 422, j
        assert j["status"] == "reload_failed_rolled_back", j
        assert j["validator"]["exit_code"] == 0, j
        assert snapshot(ngx.conf_dir) == tree
        log = ngx.log_since(mark)
        assert re.search(rf"\[emerg\] \d+#\d+: bind\(\) to 127\.0\.0\.1:{busy} failed", log), log
        assert apply_event_types(a, j, before) == ["ONEPANEL_RELOAD_FAILED_MESSAGE",
                                                   "CONFIG_ROLLBACK_SUCCESS_MESSAGE",
                                                   "CONFIG_APPLY_FAILURE_MESSAGE"]
        # signalled again for the rollback; the same master serves the old config
        assert len(SIGHUP_RX.findall(ngx.log_since(mark))) == 2, ngx.log_since(mark)
        assert ngx.master() == master and not pid_gone(master)
        wait_for(lambda: len(ngx.live_workers()) == ngx.workers, what="nginx workers")
        for _ in range(5):
            assert ngx.serves("v1")
        # and the agent is ready for the next apply
        code, j = apply(a, [{"path": ngx.conf, "content": ngx.text("v3")}])
        assert code == 200 and j["status"] == "applied", j
        ngx.wait_message("v3")
    finally:
        taken.close()
