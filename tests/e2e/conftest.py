"""Fixtures for black-box tests: the real agent, the onepanel simulator,
real nginx, and an SSE client. Every wait is a poll with a deadline."""
import atexit
import collections
import contextlib
import http.client
import json
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT_BIN = os.environ.get("AGENT_BIN", os.path.join(ROOT, "build", "oneshield-agent"))
SIM_BIN = os.environ.get("SIM_BIN", os.path.join(ROOT, "build", "onepanel-sim"))
DEADLINE = float(os.environ.get("TEST_DEADLINE", "20"))
# The suite runs in eBPF mode, and again with ONESHIELD_FORCE_PROCFS=1 (the
# agents inherit the environment) to check that procfs mode behaves the same.
FORCE_PROCFS = os.environ.get("ONESHIELD_FORCE_PROCFS") == "1"
EXPECT_MODE = "procfs" if FORCE_PROCFS else "ebpf"
EXPECT_TRACKING = "proc_connector" if FORCE_PROCFS else "ebpf"


def wait_for(pred, timeout=DEADLINE, what="condition", interval=0.02):
    """Poll pred() until it returns a truthy value; fail after timeout."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


_recent_ports = collections.deque(maxlen=4096)


def _ephemeral_range():
    try:
        lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A port for an agent to listen on, free now: below the kernel's
    ephemeral range, so no client's outgoing connection takes it before the
    agent binds it (a port from bind(0) is in that range), and not handed
    out before in this session, so two listeners of one config never get the
    same one."""
    lo, _ = _ephemeral_range()
    base = max(1024, min(lo, 32768) - 12000)
    while True:
        port = random.randrange(base, base + 11000)
        if port in _recent_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _recent_ports.append(port)
        return port


class LogFile:
    """Collects a process's stderr in a thread, so tests can wait for lines."""

    def __init__(self, stream):
        self.lines = []
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.t.start()

    def _run(self, stream):
        for raw in iter(stream.readline, b""):
            with self.lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def text(self):
        with self.lock:
            return "\n".join(self.lines)

    def wait_line(self, pattern, timeout=DEADLINE):
        rx = re.compile(pattern)

        def find():
            ended = not self.t.is_alive()  # before the search: no line can come after
            with self.lock:
                for ln in self.lines:
                    m = rx.search(ln)
                    if m:
                        return m
            if ended:
                raise AssertionError(f"the log ended (the process exited) without a line /{pattern}/")
            return None

        return wait_for(find, timeout, f"log line /{pattern}/")


# ---- authentication (issue 8) ----
#
# The agent asks every API call for a bearer token. So that tests need not
# say it each time: agent_yaml() names a token file (api.token_file), which
# Agent moves into the test's tmp dir; the agent generates it at start; and
# every HTTP request (requests, urllib, http.client: all go through
# http.client) and gRPC channel (grpc.insecure_channel, grpc.secure_channel) to an agent that
# Agent started carries "Authorization: Bearer <its token>" unless the
# request has an Authorization header of its own, or runs inside
# `with anonymous():`. HTTP to a port nobody registered gets the session's
# default token file's token, when it exists (agents started by hand from
# agent_yaml() text).

SESSION_DIR = tempfile.mkdtemp(prefix="oneshield-e2e-")   # mode 0700
atexit.register(shutil.rmtree, SESSION_DIR, True)
DEFAULT_TOKEN_FILE = os.path.join(SESSION_DIR, "token")
TOKENS = {}              # "host:port" -> token
_anon = threading.local()


def register_token(target, token_file):
    """Send token_file's token to target ("host:port") by default; returns it."""
    with open(token_file) as f:
        tok = f.readline().strip()
    host, _, port = target.rpartition(":")
    for h in {host, "127.0.0.1", "localhost"} if host in ("127.0.0.1", "localhost") else {host}:
        TOKENS[f"{h}:{port}"] = tok
    return tok


def unregister_tokens(port):
    """Forget the tokens sent to port: its agent is gone, and the next agent
    that gets the port (free_port) has a token of its own."""
    for k in [k for k in TOKENS if k.rpartition(":")[2] == str(port)]:
        del TOKENS[k]


def register_config_token(target, config_text):
    """For an agent started by hand: send the token of the api.token_file its
    config names (the first token_file line: agent_yaml puts api first)."""
    m = re.search(r"^\s+token_file:\s*(\S+)", config_text, re.M)
    unregister_tokens(target.rpartition(":")[2])
    if m and os.path.exists(m.group(1)):
        register_token(target, m.group(1))


@contextlib.contextmanager
def anonymous():
    """Within: nothing adds an Authorization (the test sends its own, or none)."""
    _anon.on = True
    try:
        yield
    finally:
        _anon.on = False


def _default_token(host, port, fallback):
    if getattr(_anon, "on", False):
        return None
    tok = TOKENS.get(f"{host}:{port}")
    if tok is None and fallback and os.path.exists(DEFAULT_TOKEN_FILE):
        with open(DEFAULT_TOKEN_FILE) as f:
            tok = f.readline().strip() or None
    return tok


_orig_putrequest = http.client.HTTPConnection.putrequest
_orig_putheader = http.client.HTTPConnection.putheader
_orig_endheaders = http.client.HTTPConnection.endheaders


def _putrequest(self, *a, **kw):
    self._os_auth_given = False
    return _orig_putrequest(self, *a, **kw)


def _putheader(self, header, *values):
    if header.lower() == "authorization":
        self._os_auth_given = True
    return _orig_putheader(self, header, *values)


def _endheaders(self, *a, **kw):
    if not getattr(self, "_os_auth_given", False):
        tok = _default_token(self.host, self.port, True)
        if tok:
            _orig_putheader(self, "Authorization", f"Bearer {tok}")
    return _orig_endheaders(self, *a, **kw)


http.client.HTTPConnection.putrequest = _putrequest
http.client.HTTPConnection.putheader = _putheader
http.client.HTTPConnection.endheaders = _endheaders

try:
    import grpc
except ImportError:   # the gRPC tests skip themselves
    grpc = None

if grpc is not None:
    class _Details(collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials",
                                                       "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
        pass

    class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        def __init__(self, token):
            self.md = ("authorization", f"Bearer {token}")

        def _d(self, d):
            md = list(d.metadata or [])
            if not any(k.lower() == "authorization" for k, _ in md):
                md.append(self.md)
            return _Details(d.method, d.timeout, md, d.credentials, getattr(d, "wait_for_ready", None),
                            getattr(d, "compression", None))

        def intercept_unary_unary(self, cont, d, req):
            return cont(self._d(d), req)

        def intercept_unary_stream(self, cont, d, req):
            return cont(self._d(d), req)

        def intercept_stream_unary(self, cont, d, it):
            return cont(self._d(d), it)

        def intercept_stream_stream(self, cont, d, it):
            return cont(self._d(d), it)

    def _with_token(make_channel):
        """grpc.insecure_channel / secure_channel, sending the target's token."""
        def channel(target, *a, **kw):
            ch = make_channel(target, *a, **kw)
            host, _, port = target.rpartition(":")
            tok = _default_token(host, port, False)
            return grpc.intercept_channel(ch, _Bearer(tok)) if tok else ch
        return channel

    grpc.insecure_channel = _with_token(grpc.insecure_channel)
    grpc.secure_channel = _with_token(grpc.secure_channel)


HOST_TOKEN_FILE = "/etc/oneshield-agent/token"


@pytest.fixture(autouse=True, scope="session")
def _host_token_untouched():
    """An agent started with a config that names no token_file creates the
    host's /etc/oneshield-agent/token (as root): a test that does so is
    wrong (use agent_yaml(), which names the session's, or a tmp path)."""
    start = time.time()
    yield
    try:
        made = os.stat(HOST_TOKEN_FILE).st_mtime >= start
    except FileNotFoundError:
        made = False
    if made:
        raise AssertionError(f"a test made {HOST_TOKEN_FILE}: give its agent a token_file in its tmp dir "
                             "(and delete that file)")


def with_token_file(config_text, token_file):
    """config_text with api.token_file = token_file (replacing agent_yaml's
    default, or added to the api: section)."""
    if DEFAULT_TOKEN_FILE in config_text:
        return config_text.replace(DEFAULT_TOKEN_FILE, token_file)
    if re.search(r"^\s+token_file:", config_text, re.M):
        return config_text
    if re.search(r"^api:\s*$", config_text, re.M):
        return re.sub(r"^api:\s*$", f"api:\n  token_file: {token_file}", config_text, count=1, flags=re.M)
    return config_text + f"\napi:\n  token_file: {token_file}\n"


class Agent:
    def __init__(self, tmp_path, config_text, extra_args=()):
        self.dir = tmp_path
        self.config_path = os.path.join(str(tmp_path), "agent.yaml")
        config_text = with_token_file(config_text, os.path.join(str(tmp_path), "token"))
        m = re.search(r"^\s+token_file:\s*(\S+)", config_text, re.M)
        self.token_file = m.group(1)
        self.token = None
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.proc = subprocess.Popen([AGENT_BIN, "-c", self.config_path, "-v", *extra_args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.log = LogFile(self.proc.stderr)
        try:
            self._started(config_text)
        except AssertionError as e:
            # the fixture never sees this agent: say why it did not start
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.log.t.join(timeout=DEADLINE)  # to the end of its stderr
            raise AssertionError(f"{e}\n---- agent stderr (exit {self.proc.returncode}) ----\n"
                                 f"{self.log.text()}") from None

    def _started(self, config_text):
        m = self.log.wait_line(r"REST API listening on http://([0-9.]+|\[[0-9a-f:]+\]):(\d+)")
        self.base = f"http://{m.group(1)}:{m.group(2)}"
        self.port = int(m.group(2))
        # the agent read (or generated) it before listening
        if not re.search(r"^\s+auth:\s*(false|no|off)\s*$", config_text, re.M):
            self.token = register_token(f"{m.group(1)}:{m.group(2)}", self.token_file)
        # "host:port" for a gRPC channel when the config enables it, else None
        self.grpc_target = None
        if re.search(r"^\s*grpc_listen:\s*(?!off\s*$)\S", config_text, re.M):
            g = self.log.wait_line(r"gRPC API listening on (\S+):\d+ \(port (\d+)\)")
            self.grpc_target = f"{g.group(1)}:{g.group(2)}"
            if self.token:
                register_token(self.grpc_target, self.token_file)

    def get(self, path, **kw):
        return requests.get(self.base + path, timeout=10, **kw)

    def post(self, path, **kw):
        return requests.post(self.base + path, timeout=10, **kw)

    def request(self, method, path, **kw):
        return requests.request(method, self.base + path, timeout=10, **kw)

    def events(self, after=0, types=None):
        params = {"after": after}
        if types:
            params["type"] = ",".join(types)
        r = self.get("/v1/events", params=params)
        assert r.status_code == 200, r.text
        return r.json()["events"]

    def wait_event(self, etype, after=0, pred=lambda e: True, timeout=DEADLINE):
        def find():
            for e in self.events(after=after, types=[etype]):
                if pred(e):
                    return e
            return None
        return wait_for(find, timeout, f"event {etype}")

    def last_seq(self):
        return self.get("/v1/status").json()["events"]["last_seq"]

    def stop(self, sig=signal.SIGTERM, timeout=DEADLINE):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("agent did not exit after SIGTERM:\n" + self.log.text())


class Sim:
    """The onepanel simulator, run in the foreground in its own directory."""

    def __init__(self, tmp_path, name="sim", workers=1, access_rate=0, error_rate=0, extra=""):
        self.dir = os.path.join(str(tmp_path), name)
        os.makedirs(self.dir, exist_ok=True)
        self.access_log = os.path.join(self.dir, "access.log")
        self.error_log = os.path.join(self.dir, "error.log")
        self.pid_file = os.path.join(self.dir, "onepanel.pid")
        self.control = os.path.join(self.dir, "control")
        self.conf = os.path.join(self.dir, "onepanel.conf")
        with open(self.conf, "w") as f:
            f.write(f"listen 127.0.0.1:0;\npid_file {self.pid_file};\naccess_log {self.access_log};\n"
                    f"error_log {self.error_log};\nworkers {workers};\naccess_rate {access_rate};\n"
                    f"error_rate {error_rate};\ncontrol_file {self.control};\n{extra}")
        self.proc = None

    def start(self):
        if os.path.exists(self.error_log):
            os.unlink(self.error_log)
        self.proc = subprocess.Popen([SIM_BIN, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(self.error_log) and "listening on" in open(self.error_log).read(),
                 what="simulator listening")
        return self.proc.pid

    def command(self, text):
        with open(self.control, "w") as f:
            f.write(text + "\n")

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=DEADLINE)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def agent_yaml(onepanel=None, extra="", grpc=False, api=None):
    """An agent config on ephemeral ports; onepanel is a dict of YAML lines.
    grpc=True enables the gRPC API on a free port (Agent.grpc_target); api is
    a dict of further lines for the api: section (e.g. max_subscribers)."""
    out = []
    if onepanel:
        out.append("onepanel:")
        for k, v in onepanel.items():
            out.append(f"  {k}: {v}")
    out.append("api:")
    out.append(f"  rest_listen: 127.0.0.1:{free_port()}")
    out.append(f"  grpc_listen: 127.0.0.1:{free_port()}" if grpc else "  grpc_listen: off")
    if "token_file" not in (api or {}):
        out.append(f"  token_file: {DEFAULT_TOKEN_FILE}")
    for k, v in (api or {}).items():
        out.append(f"  {k}: {v}")
    out.append("metrics:")
    out.append("  interval: 200ms")
    return "\n".join(out) + "\n" + extra


def yq(s) -> str:
    """A YAML single-quoted scalar (any characters, ' doubled)."""
    return "'" + str(s).replace("'", "''") + "'"


def sim_onepanel(sim):
    return {
        "binary": SIM_BIN,
        "config_file": sim.conf,
        "allowed_dirs": f"[{sim.dir}]",
        "validate_command": f"\"{SIM_BIN} -t -c {{config}}\"",
        "access_logs": f"[{{ path: {sim.access_log}, format: combined }}]",
        "error_logs": f"[{{ path: {sim.error_log} }}]",
    }


class SSE:
    """A streaming client for /v1/events/stream; events land in a queue."""

    def __init__(self, port, path="/v1/events/stream", headers=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        self.conn.request("GET", path, headers=headers or {})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.q = queue.Queue()
        self.closed = threading.Event()
        self.comments = 0
        if self.status == 200:
            threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        ev = {}
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if line == "":
                    if "data" in ev:
                        self.q.put({"id": int(ev["id"]), "event": ev["event"], "data": json.loads(ev["data"])})
                    ev = {}
                elif line.startswith(":"):
                    self.comments += 1
                else:
                    k, _, v = line.partition(": ")
                    ev[k] = v
        except Exception:  # closed under us by close(); the stream is over
            pass
        self.closed.set()

    def next(self, timeout=DEADLINE):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no SSE event within {timeout}s")

    def wait_type(self, etype, timeout=DEADLINE):
        end = time.monotonic() + timeout
        seen = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {etype} on the stream; saw {[e['event'] for e in seen]}")
            e = self.next(left)
            seen.append(e)
            if e["event"] == etype:
                return e, seen

    def close(self):
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


@pytest.fixture
def sim(tmp_path):
    s = Sim(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def agents():
    started = []

    def make(tmp_path, config_text, extra_args=()):
        a = Agent(tmp_path, config_text, extra_args)
        started.append(a)
        return a

    yield make
    for a in started:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
        unregister_tokens(a.port)
        if a.grpc_target:
            unregister_tokens(a.grpc_target.rpartition(":")[2])
        # shown by pytest only when the test failed
        print(f"---- agent stderr (exit {a.proc.returncode}) ----\n{a.log.text()}")


def have(cmd):
    return shutil.which(cmd) is not None
