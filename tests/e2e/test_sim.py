"""Black-box tests of onepanel-sim (tools/onepanel-sim).

Run: SIM_BIN=$PWD/build/onepanel-sim /usr/bin/python3 -m pytest -q tests/e2e/test_sim.py
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from simhelpers import (COMBINED_RE, ERROR_LINE_RE, PANIC_RECORD, Sim, http_session,
                        pid_gone, render_config, sim_bin, wait_exit, wait_for)


@pytest.fixture(scope="module", autouse=True)
def _binary_present():
    if not os.access(sim_bin(), os.X_OK):
        pytest.fail(f"onepanel-sim binary not found at {sim_bin()} (build it, or set SIM_BIN)")


@pytest.fixture
def sim_factory(tmp_path):
    """sim_factory(**directives) -> started Sim; all are stopped at teardown."""
    sims: list[Sim] = []

    def make(subdir: str = "sim", start: bool = True, **directives) -> Sim:
        s = Sim(tmp_path / subdir, **directives)
        sims.append(s)
        if start:
            s.start()
        return s

    yield make
    for s in sims:
        s.stop()


def run_sim(*args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run([sim_bin(), *args], capture_output=True, text=True, timeout=timeout)


def raw_http(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


# ---------------------------------------------------------------- CLI / -t

GOOD_CONFIG = """\
# a comment line
listen 127.0.0.1:8080;
pid_file {d}/sim.pid;      # trailing comment
access_log {d}/access.log;
error_log {d}/error.log;
workers 2;
access_rate 5;
error_rate 1;
access_format extended;
control_file {d}/control;
fail_reload no;
message "hello world";
"""


def test_validate_ok(tmp_path):
    conf = tmp_path / "ok.conf"
    conf.write_text(GOOD_CONFIG.format(d=tmp_path))
    r = run_sim("-t", "-c", str(conf))
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [
        f"onepanel-sim: the configuration file {conf} syntax is ok",
        f"onepanel-sim: configuration file {conf} test is successful",
    ]
    # validation creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.conf"]


def test_example_config_validates(tmp_path):
    from simhelpers import REPO_ROOT
    text = (REPO_ROOT / "etc" / "onepanel-sim.conf").read_text()
    assert "/tmp/oneshield-demo/" in text
    conf = tmp_path / "example.conf"
    conf.write_text(text.replace("/tmp/oneshield-demo/", f"{tmp_path}/"))
    r = run_sim("-T", "-c", str(conf))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"# configuration file {conf}:\n")
    assert "listen 127.0.0.1:8080;" in r.stdout
    assert run_sim("-t", "-q", "-c", str(conf)).stderr == ""


def test_validate_empty_config_is_ok(tmp_path):
    conf = tmp_path / "empty.conf"
    conf.write_text("# nothing\n\n")
    assert run_sim("-t", "-c", str(conf)).returncode == 0


BAD_CONFIGS = [
    # (text, line, message regex)
    ("listen 127.0.0.1:0;\nworkerz 2;\n", 2, r'unknown directive "workerz"'),
    ("listen 127.0.0.1:0;\n\n# c\nworkers 2\n", 4, r'directive "workers" is not terminated by ";"'),
    ("workers;\n", 1, r'invalid number of arguments in "workers" directive'),
    ("listen 127.0.0.1:1 127.0.0.1:2;\n", 1, r'invalid number of arguments in "listen" directive'),
    ("workers 2;\naccess_rate 5x;\n", 2, r'invalid value "5x" in "access_rate" directive'),
    ("workers 17;\n", 1, r'invalid value "17" in "workers" directive, it must be between 0 and 16'),
    ("error_rate 100001;\n", 1, r'invalid value "100001" in "error_rate" directive'),
    ("workers 1;\nworkers 2;\n", 2, r'"workers" directive is duplicate'),
    ("access_format json;\n", 1, r'invalid value "json" in "access_format" directive'),
    ("fail_reload maybe;\n", 1, r'invalid value "maybe" in "fail_reload" directive'),
    ("listen 127.0.0.1:99999;\n", 1, r'invalid port in "127.0.0.1:99999" of the "listen" directive'),
    ("listen nosuchhost:80;\n", 1, r'host not found in "nosuchhost:80" of the "listen" directive'),
    ("error_log /nonexistent-dir/x/error.log;\n", 1,
     r'directory "/nonexistent-dir/x" of the "error_log" directive does not exist'),
    ("message \"unterminated;\n", 1, r"unterminated quoted string"),
    ("workers 1; workers 2;\n", 1, r'unexpected "workers" after ";"'),
    ("http {\n", 1, r'unexpected "\{"'),
    ("listen 127.0.0.1:0\n", 1, r'directive "listen" is not terminated by ";"'),
    (";\n", 1, r'unexpected ";"'),
]


@pytest.mark.parametrize("text,line,msg", BAD_CONFIGS, ids=[b[2][:40] for b in BAD_CONFIGS])
def test_validate_errors(tmp_path, text, line, msg):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    r = run_sim("-t", "-c", str(conf))
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    assert re.fullmatch(rf"onepanel-sim: \[emerg\] .*{msg}.* in {re.escape(str(conf))}:{line}",
                        lines[0]), lines[0]
    assert lines[1] == f"onepanel-sim: configuration file {conf} test failed"


def test_validate_missing_file(tmp_path):
    missing = tmp_path / "nope.conf"
    r = run_sim("-t", "-c", str(missing))
    assert r.returncode == 1
    assert f'[emerg] open() "{missing}" failed (2: No such file or directory)' in r.stderr
    assert r.stderr.rstrip().endswith(f"configuration file {missing} test failed")


def test_cli_version_help_and_bad_options(tmp_path):
    r = run_sim("-v")
    assert r.returncode == 0 and re.search(r"onepanel-sim/\d+\.\d+\.\d+", r.stderr + r.stdout)
    r = run_sim("-h")
    assert r.returncode == 0 and "Usage: onepanel-sim" in r.stderr
    r = run_sim("-x")
    assert r.returncode == 1 and 'invalid option: "x"' in r.stderr and "Usage:" in r.stderr
    r = run_sim("-c")
    assert r.returncode == 1 and "Usage:" in r.stderr
    r = run_sim("-t", "-c", str(tmp_path / "a.conf"), "extra")
    assert r.returncode == 1 and "Usage:" in r.stderr
    r = run_sim()
    assert r.returncode == 1 and "no configuration file" in r.stderr


def test_startup_failure_is_reported(tmp_path):
    # a port that is already taken: bind() fails at startup -> exit 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        conf = tmp_path / "s.conf"
        conf.write_text(render_config({"listen": f"127.0.0.1:{port}",
                                       "error_log": str(tmp_path / "error.log")}))
        p = subprocess.run([sim_bin(), "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert p.returncode == 1
    assert f"[emerg] bind() to 127.0.0.1:{port} failed (98: Address already in use)" in p.stderr
    assert "bind() to" in (tmp_path / "error.log").read_text()


# ---------------------------------------------------------------- running

def test_start_logs_pidfile_and_workers(sim_factory):
    sim = sim_factory(workers=3)
    text = sim.error_text()
    for line in text.splitlines():
        assert ERROR_LINE_RE.match(line), line
    assert re.search(rf"^\S+ \S+ \[notice\] {sim.pid}#{sim.pid}: onepanel-sim started$", text, re.M)
    assert 0 < sim.port < 65536
    assert sim.pid_file.read_text() == f"{sim.pid}\n"
    kids = sim.wait_workers(3)
    for k in kids:
        assert Path(f"/proc/{k}/comm").read_text().strip() == "onepanel-sim"
    # 0 workers is allowed: only the master
    sim0 = sim_factory("zero", workers=0)
    assert sim0.workers() == []


def test_http_answers(sim_factory):
    sim = sim_factory(message="first config", workers=2)
    r = sim.get("/")
    assert r.status_code == 200
    assert "message: first config\n" in r.text and "generation: 1\n" in r.text
    assert r.headers["X-Onepanel-Generation"] == "1"
    r = sim.get("/?x=1")
    assert r.status_code == 200
    r = sim.get("/healthz")
    assert r.status_code == 200 and r.text == "ok"
    assert sim.get("/nope").status_code == 404
    assert sim.get("/healthz/x").status_code == 404
    with http_session() as s:
        assert s.post(sim.url("/"), data=b"x" * 3000, timeout=5).status_code == 404
        h = s.head(sim.url("/"), timeout=5)
        assert h.status_code == 200 and h.content == b"" and int(h.headers["Content-Length"]) > 0
        # keep-alive: several requests (with a body in between) on one connection
        for _ in range(3):
            assert s.get(sim.url("/healthz"), timeout=5).text == "ok"
    # HTTP/1.0 closes by default; pipelined HTTP/1.1 requests answered in order
    resp = raw_http(sim.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 200 OK\r\n") and resp.endswith(b"\r\n\r\nok")
    resp = raw_http(sim.port, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                              b"GET /missing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert resp.count(b"HTTP/1.1 ") == 2
    assert resp.index(b"200 OK") < resp.index(b"404 Not Found")
    # malformed
    assert raw_http(sim.port, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_http(sim.port, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")  # no Host


def test_oversized_header_and_disconnects(sim_factory):
    sim = sim_factory(workers=1)
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    assert raw_http(sim.port, big).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    # clients that vanish half-way, or without sending anything
    for payload in (b"", b"GET / HT", b"GET / HTTP/1.1\r\nHost: a\r\n"):
        s = socket.create_connection(("127.0.0.1", sim.port), timeout=5)
        if payload:
            s.sendall(payload)
        s.close()
    # ... and one that sends a request but never reads the answer (RST)
    s = socket.create_connection(("127.0.0.1", sim.port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    s.close()
    assert sim.get("/healthz").text == "ok"
    assert len(sim.workers()) == 1
    assert "[alert]" not in sim.error_text()


def test_access_log_combined_format(sim_factory):
    sim = sim_factory()
    sim.get("/", headers={"User-Agent": "curl/7.88.1"})
    sim.get("/missing", headers={"User-Agent": 'evil "agent"', "Referer": "http://ref.example/"})
    lines = sim.access_lines()  # written before the response is sent
    assert len(lines) == 2, lines
    m = COMBINED_RE.match(lines[0])
    assert m, lines[0]
    assert m["addr"] == "127.0.0.1" and m["request"] == "GET / HTTP/1.1"
    assert m["status"] == "200" and m["referer"] == "-" and m["ua"] == "curl/7.88.1"
    assert int(m["bytes"]) == len(sim.get("/").content)
    assert m["extended"] is None
    m = COMBINED_RE.match(lines[1])
    assert m, lines[1]
    assert m["status"] == "404" and m["referer"] == "http://ref.example/"
    assert m["ua"] == r"evil \x22agent\x22"


def test_access_log_extended_format(sim_factory):
    sim = sim_factory(access_format="extended")
    sim.get("/healthz")
    (line,) = sim.access_lines()
    m = COMBINED_RE.match(line)
    assert m and m["extended"] and m["status"] == "200" and m["bytes"] == "2", line
    assert re.search(r" rt=\d+\.\d{3} urt=\d+\.\d{3}$", line)


def test_synthetic_rates(sim_factory):
    sim = sim_factory(access_rate=400, error_rate=200, workers=1)
    wait_for(lambda: len(sim.access_lines()) >= 200, desc="200 synthetic access lines")
    mark_lines = sim.wait_error_log(r"^.* \[(?:info|notice|warn|error)\] \d+#\d+: \*\d+ .*$",
                                    count=40)
    lines = sim.access_lines()
    for line in lines:
        assert COMBINED_RE.match(line), line
    statuses = {COMBINED_RE.match(l)["status"] for l in lines}
    assert {"200", "301", "404", "500"} <= statuses, statuses
    methods = {COMBINED_RE.match(l)["request"].split()[0] for l in lines}
    assert {"GET", "POST"} <= methods
    assert len({COMBINED_RE.match(l)["ua"] for l in lines}) >= 3
    levels = [re.search(r"\[(\w+)\]", m.group(0)).group(1) for m in mark_lines]
    assert set(levels) == {"info", "notice", "warn", "error"}
    for line in sim.error_text().splitlines():
        assert ERROR_LINE_RE.match(line), line


def test_synthetic_rate_extended(sim_factory):
    sim = sim_factory(access_rate=100, access_format="extended")
    wait_for(lambda: len(sim.access_lines()) >= 10, desc="synthetic lines")
    for line in sim.access_lines():
        m = COMBINED_RE.match(line)
        assert m and m["extended"], line


# ---------------------------------------------------------------- reload

def test_reload_good_config(sim_factory):
    sim = sim_factory(message="v1", workers=2)
    old = sim.wait_workers(2)
    assert "message: v1\n" in sim.get("/").text
    mark = sim.reload(message="v2", workers=3)
    sim.wait_error_log(r"\[notice\] \d+#\d+: signal 1 \(SIGHUP\) received, reconfiguring$", since=mark)
    new = sim.wait_workers(3, exclude=old)
    assert not set(old) & set(new)
    r = sim.wait_message("v2")
    assert "generation: 2\n" in r.text and int(r.headers["X-Onepanel-Worker"]) in new
    for pid in old:
        wait_for(lambda: pid_gone(pid), desc=f"old worker {pid} to exit")
    # the port stays the same (listen 127.0.0.1:0 keeps the bound socket)
    assert "listening on" not in sim.error_text()[mark:]
    sim.reload(message="v3")
    assert "generation: 3\n" in sim.wait_message("v3").text


def test_reload_bad_config_keeps_old(sim_factory):
    sim = sim_factory(message="good", workers=2)
    old = sim.wait_workers(2)
    text = sim.config_path.read_text() + "bogus_directive 1;\n"
    bad_line = text.count("\n")
    sim.config_path.write_text(text)
    mark = sim.reload(expect_ok=False)
    sim.wait_error_log(rf"\[emerg\] \d+#\d+: unknown directive \"bogus_directive\" in "
                       rf"{re.escape(str(sim.config_path))}:{bad_line}$", since=mark)
    assert sim.running()
    assert "message: good\n" in sim.get("/").text
    assert sim.workers() == old
    assert "reconfigured" not in sim.error_text()[mark:]
    # fixing the file makes the next reload work
    sim.write_config(message="fixed")
    sim.reload()
    sim.wait_message("fixed")


def test_fail_reload(sim_factory):
    sim = sim_factory(message="before", workers=1)
    old = sim.wait_workers(1)
    conf = sim.config_path
    sim.write_config(message="after", fail_reload=True)
    assert run_sim("-t", "-c", str(conf)).returncode == 0  # it validates
    mark = sim.reload(expect_ok=False)
    sim.wait_error_log(r"\[emerg\] \d+#\d+: bind\(\) to .* failed", since=mark)
    assert sim.running()
    assert "message: before\n" in sim.get("/").text
    assert sim.workers() == old


def test_reload_to_new_address_and_logs(sim_factory, tmp_path):
    sim = sim_factory(message="a")
    new_err = tmp_path / "sim" / "error2.log"
    new_pid = tmp_path / "sim" / "other.pid"
    sim.reload(message="b", listen="127.0.0.2:0", error_log=str(new_err), pid_file=str(new_pid))
    m = re.search(r"listening on 127\.0\.0\.2:(\d+)$", new_err.read_text(), re.M)
    assert m, new_err.read_text()
    old_port, sim.port, sim.host = sim.port, int(m.group(1)), "127.0.0.2"
    assert "message: b\n" in sim.get("/").text
    assert new_pid.read_text() == f"{sim.pid}\n" and not sim.pid_file.exists()
    with pytest.raises(OSError):  # the old listener is closed
        socket.create_connection(("127.0.0.1", old_port), timeout=2).close()


def test_reload_bad_listen_keeps_old(sim_factory):
    sim = sim_factory(message="a")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        mark = sim.reload(expect_ok=False, listen=f"127.0.0.1:{port}", message="b")
        sim.wait_error_log(rf"\[emerg\] \d+#\d+: bind\(\) to 127.0.0.1:{port} failed", since=mark)
    assert "message: a\n" in sim.get("/").text


# ---------------------------------------------------------------- signals

def test_usr1_reopens_logs(sim_factory):
    sim = sim_factory(workers=2)
    sim.wait_workers(2)
    sim.get("/healthz")
    rotated_access = sim.access_log.with_name("access.log.1")
    rotated_error = sim.error_log.with_name("error.log.1")
    os.rename(sim.access_log, rotated_access)
    os.rename(sim.error_log, rotated_error)
    sim.signal(signal.SIGUSR1)
    # the master and each worker log "reopening logs" into the new file
    sim.wait_error_log(r"\[notice\] \d+#\d+: reopening logs$", count=3)
    assert "signal 10 (SIGUSR1) received, reopening logs" in rotated_error.read_text()
    sim.get("/")
    lines = sim.access_lines()
    assert len(lines) == 1 and '"GET / HTTP/1.1" 200' in lines[0]
    assert len(rotated_access.read_text().splitlines()) == 1
    assert sim.access_log.stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_stop_signals(sim_factory, sig):
    sim = sim_factory(workers=2)
    kids = sim.wait_workers(2)
    assert sim.pid_file.exists()
    sim.signal(sig)
    assert sim.wait_exit() == 0
    assert not sim.pid_file.exists()
    assert re.search(rf"\[notice\] {sim.pid}#{sim.pid}: exiting$", sim.error_text(), re.M)
    for k in kids:
        assert pid_gone(k)


def test_usr2_panics(sim_factory):
    sim = sim_factory(workers=2)
    kids = sim.wait_workers(2)
    sim.signal(signal.SIGUSR2)
    assert sim.wait_exit() == 2
    text = sim.error_text()
    assert text.count(PANIC_RECORD) == 1
    assert text.endswith(PANIC_RECORD)  # one write, nothing after it
    assert PANIC_RECORD in sim.stderr_text()
    for k in kids:
        assert pid_gone(k)


def test_worker_respawn(sim_factory):
    sim = sim_factory(workers=2)
    kids = sim.wait_workers(2)
    os.kill(kids[0], signal.SIGKILL)
    new = sim.wait_workers(2, exclude=[kids[0]])
    assert kids[1] in new
    sim.wait_error_log(rf"\[alert\] \d+#\d+: worker process {kids[0]} exited on signal 9$")
    assert sim.get("/healthz").text == "ok"


def test_workers_die_with_master(sim_factory):
    sim = sim_factory(workers=2)
    kids = sim.wait_workers(2)
    sim.proc.kill()
    sim.wait_exit()
    for k in kids:
        wait_for(lambda: pid_gone(k), desc=f"worker {k} to exit after the master died")


# ---------------------------------------------------------------- control file

def test_control_levels(sim_factory):
    sim = sim_factory()
    mark = sim.error_mark()
    sim.control("critical disk almost full\nerror upstream went away\nemerg everything is down")
    got = sim.wait_error_log(r"\[(crit|error|emerg)\] (\d+)#\d+: (.*)$", since=mark, count=3)
    assert [(m.group(1), m.group(3)) for m in got] == [
        ("crit", "disk almost full"), ("error", "upstream went away"),
        ("emerg", "everything is down")]
    assert {int(m.group(2)) for m in got} == {sim.pid}
    wait_for(lambda: sim.control_file.stat().st_size == 0, desc="control file truncated")
    sim.control("frobnicate now")
    sim.wait_error_log(r'\[error\] \d+#\d+: unknown control command "frobnicate"$', since=mark)
    assert sim.running()


def test_control_panic(sim_factory):
    sim = sim_factory(workers=1)
    kids = sim.wait_workers(1)
    sim.control("panic")
    assert sim.wait_exit() == 2
    assert sim.error_text().endswith(PANIC_RECORD)
    assert pid_gone(kids[0])
    assert sim.control_file.read_text() == ""
    assert sim.pid_file.exists()  # a crash leaves its pid file behind


def test_control_crash(sim_factory):
    sim = sim_factory(workers=2)
    kids = sim.wait_workers(2)
    sim.control("crash")
    assert sim.wait_exit() == -signal.SIGSEGV
    for k in kids:
        assert pid_gone(k)
    assert not list(sim.dir.glob("core*"))


def test_control_exit_code(sim_factory):
    sim = sim_factory(workers=1)
    kids = sim.wait_workers(1)
    sim.control("exit 3")
    assert sim.wait_exit() == 3
    assert pid_gone(kids[0])


def test_control_command_present_at_start(sim_factory):
    sim = sim_factory(start=False)
    sim.control("exit 7")
    sim.start(wait=False)
    assert sim.wait_exit() == 7


def test_control_reload(sim_factory):
    sim = sim_factory(message="x")
    sim.write_config(message="y")
    mark = sim.error_mark()
    sim.control("reload")
    sim.wait_error_log(r"reconfigured, generation 2$", since=mark)
    sim.wait_message("y")


def test_no_listen_runs_without_http(sim_factory):
    sim = sim_factory(listen=None, workers=1)
    sim.wait_workers(1)
    sim.signal(signal.SIGTERM)
    assert sim.wait_exit() == 0


def test_signal_option(sim_factory):
    sim = sim_factory(message="one")
    sim.write_config(message="two")
    mark = sim.error_mark()
    r = run_sim("-s", "reload", "-c", str(sim.config_path))
    assert r.returncode == 0, r.stderr
    sim.wait_error_log(r"reconfigured, generation 2$", since=mark)
    sim.wait_message("two")
    r = run_sim("-s", "stop", "-c", str(sim.config_path))
    assert r.returncode == 0, r.stderr
    assert sim.wait_exit() == 0
