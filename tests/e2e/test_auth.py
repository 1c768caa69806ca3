"""Authentication of the agent's APIs (issue 8 §1): bearer tokens on REST
and gRPC, the token file's rules (generated 0600, refused when others can
read it, at start and on SIGHUP), the open endpoints, the per-peer
slow-down, the unix-socket listeners where the file mode is the
credential, the identity in the audit of config applies, and the refusal
to serve unauthenticated to the network.

Every request here says what it sends: `anonymous()` stops the fixture's
default Authorization header."""
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile

import grpc
import pytest
import requests

from conftest import AGENT_BIN, agent_yaml, anonymous, free_port, sim_onepanel, wait_for
from grpcstubs import stubs
from test_tls import pki  # noqa: F401 (session fixture: a CA and certificates)

pb, pb_grpc = stubs()
AGENT = "/oneshield.agent.v1.Agent/"


def token_id(tok):
    return hashlib.sha256(tok.encode()).hexdigest()[:8]


def raw(a, method, path, headers=None, body=None):
    """One HTTP request with exactly these headers (none added)."""
    with anonymous():
        return requests.request(method, a.base + path, headers=headers or {}, data=body, timeout=10)


def grpc_status(target, method, req, metadata=None):
    """(code, details) of one unary call with exactly this metadata."""
    with anonymous():
        ch = grpc.insecure_channel(target)
    try:
        ch.unary_unary(AGENT + method)(req.SerializeToString(), metadata=metadata, timeout=10)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()
    finally:
        ch.close()


def subdir(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    return d


def api_yaml(**api):
    """A config whose api: section is exactly this (plus the test token file)."""
    lines = ["api:"] + [f"  {k}: {v}" for k, v in api.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("headers,reason", [
    ({}, "no Authorization header"),
    ({"Authorization": "Bearer " + "0" * 64}, "wrong token"),
    ({"X-Token": "TOKEN"}, "no Authorization header"),
    ({"Authorization": "Basic TOKEN"}, "not \"Bearer <token>\""),
    ({"Authorization": "TOKEN"}, "not \"Bearer <token>\""),
    ({"Authorization": "Bearer  TOKEN"}, "wrong token"),          # two spaces: not the token
    ({"Authorization": "Bearer TOKENx"}, "wrong token"),
])
def test_rest_refuses_without_the_right_token(tmp_path, agents, headers, reason):
    a = agents(tmp_path, agent_yaml())
    headers = {k: v.replace("TOKEN", a.token) for k, v in headers.items()}
    r = raw(a, "GET", "/v1/status", headers)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    assert r.json()["status"] == 401 and reason in r.json()["error"]
    line = a.log.wait_line(r"auth: rest GET /v1/status from 127\.0\.0\.1 refused: (.*)")
    assert reason in line.group(1)
    assert a.token not in a.log.text()


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_rest_scheme_is_case_insensitive(tmp_path, agents, scheme):
    """RFC 7235: the auth scheme is case-insensitive; the token is not."""
    a = agents(tmp_path, agent_yaml())
    assert raw(a, "GET", "/v1/status", {"Authorization": f"{scheme} {a.token}"}).status_code == 200
    assert raw(a, "GET", "/v1/status", {"Authorization": f"{scheme} {a.token.upper()}"}).status_code == 401


def test_generated_token_file(tmp_path, agents):
    a = agents(tmp_path, agent_yaml())
    st = os.stat(a.token_file)
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o600 and st.st_uid == os.geteuid()
    text = open(a.token_file).read()
    assert re.fullmatch(r"[0-9a-f]{64}\n", text)
    line = a.log.wait_line(r"generated a new API token in (\S+) \(id ([0-9a-f]{8})\)").groups()
    assert line == (a.token_file, token_id(text.strip()))
    assert text.strip() not in a.log.text()
    # a second agent reads the same file: no new token
    b = agents(tmp_path, agent_yaml())
    assert open(a.token_file).read() == text and "generated a new API token" not in b.log.text()
    assert b.get("/v1/status").status_code == 200


def test_generated_token_dir_is_created_0700(tmp_path, agents):
    tf = tmp_path / "newdir" / "token"
    a = agents(tmp_path, agent_yaml(api={"token_file": str(tf)}))
    assert os.stat(tmp_path / "newdir").st_mode & 0o777 == 0o700
    assert a.get("/v1/status").status_code == 200


@pytest.mark.parametrize("content,mode,needle", [
    ("a" * 32 + "\n", 0o644, "readable or writable by group or other (mode 0644)"),
    ("a" * 32 + "\n", 0o620, "readable or writable by group or other (mode 0620)"),
    ("", 0o600, "empty token file"),
    ("short\n", 0o600, ":1: token too short"),
    ("a" * 32 + "\n\n", 0o600, ":2: empty line"),
    ("a" * 32 + " \n", 0o600, ":1: invalid character 0x20"),
    ("a" * 32 + "\r\n", 0o600, ":1: invalid character 0x0d"),
])
def test_bad_token_file_refused_at_start(tmp_path, content, mode, needle):
    tf = tmp_path / "token"
    tf.write_bytes(content.encode())
    os.chmod(tf, mode)
    cfg = tmp_path / "a.yaml"
    cfg.write_text(agent_yaml(api={"token_file": str(tf)}))
    for args in (["-t", "-c", str(cfg)], ["-c", str(cfg)]):   # -t checks it too (systemd's ExecStartPre)
        r = subprocess.run([AGENT_BIN, *args], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1
        assert f"{tf}" in r.stderr and needle in r.stderr, r.stderr
        assert "listening" not in r.stderr
    assert tf.read_bytes() == content.encode()   # not "fixed" behind the operator's back


def test_token_file_not_a_regular_file_refused(tmp_path):
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    cfg = tmp_path / "a.yaml"
    cfg.write_text(agent_yaml(api={"token_file": str(d)}))
    r = subprocess.run([AGENT_BIN, "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and f"{d}: not a regular file" in r.stderr, r.stderr
    link = tmp_path / "link"
    good = tmp_path / "good"
    good.write_text("b" * 32)
    os.chmod(good, 0o600)
    link.symlink_to(good)
    cfg.write_text(agent_yaml(api={"token_file": str(link)}))
    r = subprocess.run([AGENT_BIN, "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "symbolic link" in r.stderr, r.stderr


def test_bad_token_file_on_sighup_keeps_the_running_token(tmp_path, agents):
    a = agents(tmp_path, agent_yaml())
    seq = a.last_seq()
    os.chmod(a.token_file, 0o644)
    a.proc.send_signal(signal.SIGHUP)
    ev = a.wait_event("AGENT_CONFIG_RELOAD_FAILED_MESSAGE", after=seq)
    assert "mode 0644" in ev["fields"]["error"] and a.token_file in ev["fields"]["error"]
    assert a.get("/v1/status").status_code == 200          # the old token still works
    # a new token in a good file is taken on the next SIGHUP; the old one is gone
    with open(a.token_file, "w") as f:
        f.write("n" * 40 + "\n")
    os.chmod(a.token_file, 0o600)
    seq = a.last_seq()
    a.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: raw(a, "GET", "/v1/status", {"Authorization": "Bearer " + "n" * 40}).status_code == 200,
             what="the new token accepted")
    assert raw(a, "GET", "/v1/status", {"Authorization": "Bearer " + a.token}).status_code == 401
    evs = raw(a, "GET", f"/v1/events?after={seq}", {"Authorization": "Bearer " + "n" * 40}).json()["events"]
    assert [e["type"] for e in evs] == ["AGENT_CONFIG_RELOADED_MESSAGE"]


def test_several_tokens_each_with_its_id(tmp_path, agents):
    tf = tmp_path / "tokens"
    t1, t2 = "first-token-" + "1" * 20, "second.token_" + "2" * 20
    tf.write_text(f"{t1}\n{t2}\n")
    os.chmod(tf, 0o600)
    a = agents(tmp_path, agent_yaml(api={"token_file": str(tf)}))
    for t in (t1, t2):
        assert raw(a, "GET", "/v1/status", {"Authorization": f"Bearer {t}"}).status_code == 200
    st = raw(a, "GET", "/v1/status", {"Authorization": f"Bearer {t1}"}).json()
    assert st["api"]["auth"]["enabled"] is True and st["api"]["auth"]["tokens"] == 2


def test_healthz_and_metrics_open_unless_metrics_auth(tmp_path, agents):
    a = agents(tmp_path, agent_yaml())
    assert raw(a, "GET", "/healthz").status_code == 200
    r = raw(a, "GET", "/metrics")
    assert r.status_code == 200 and "oneshield_agent_info" in r.text
    assert raw(a, "GET", "/v1/metrics").status_code == 401
    assert raw(a, "GET", "/v1/events").status_code == 401
    assert raw(a, "GET", "/v1/events/stream").status_code == 401
    assert raw(a, "GET", "/v1/config").status_code == 401
    assert raw(a, "GET", "/v1/nosuch").status_code == 401   # no map of endpoints for strangers
    b = agents(subdir(tmp_path, "b"), agent_yaml(api={"metrics_auth": "true"}))
    assert raw(b, "GET", "/healthz").status_code == 200
    assert raw(b, "GET", "/metrics").status_code == 401
    wait_for(lambda: 'oneshield_agent_auth_refused_total{reason="token"} 1' in b.get("/metrics").text,
             what="the refusal counted")


def test_apply_with_a_bad_token_changes_nothing(tmp_path, sim, agents):
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    before = open(sim.conf, "rb").read()
    seq = a.last_seq()
    body = json.dumps({"files": [{"path": sim.conf, "content": "garbage that would fail;\n"}]})
    for h in ({}, {"Authorization": "Bearer " + "f" * 64}, {"Authorization": "Basic " + a.token}):
        r = raw(a, "POST", "/v1/config/apply", dict(h, **{"Content-Type": "application/json"}), body)
        assert r.status_code == 401, r.text
    assert open(sim.conf, "rb").read() == before
    assert a.last_seq() == seq                  # no event at all
    assert "audit: config apply" not in a.log.text()
    # gRPC too
    g = pb.ApplyConfigRequest(files=[pb.FileChange(path=sim.conf, content=b"garbage;\n")])
    a2 = agents(subdir(tmp_path, "g"), agent_yaml(sim_onepanel(sim), grpc=True))
    code, _ = grpc_status(a2.grpc_target, "ApplyConfig", g, [("authorization", "Bearer " + "f" * 64)])
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert open(sim.conf, "rb").read() == before


@pytest.mark.parametrize("md,needle", [
    (None, "no Authorization header"),
    ([("authorization", "Bearer " + "0" * 64)], "wrong token"),
    ([("authorization", "Basic xyz")], "not \"Bearer <token>\""),
    ([("x-token", "TOKEN")], "no Authorization header"),
])
def test_grpc_refuses_without_the_right_token(tmp_path, agents, md, needle):
    a = agents(tmp_path, agent_yaml(grpc=True))
    md = [(k, v.replace("TOKEN", a.token)) for k, v in md] if md else None
    for method, req in (("GetStatus", pb.GetStatusRequest()), ("GetConfig", pb.GetConfigRequest())):
        code, details = grpc_status(a.grpc_target, method, req, md)
        assert code == grpc.StatusCode.UNAUTHENTICATED and needle in details
    code, _ = grpc_status(a.grpc_target, "GetStatus", pb.GetStatusRequest(),
                          [("authorization", f"Bearer {a.token}")])
    assert code == grpc.StatusCode.OK
    a.log.wait_line(r"auth: grpc call /oneshield\.agent\.v1\.Agent/GetStatus from 127\.0\.0\.1 refused")


def test_grpc_reflection_needs_the_token(tmp_path, agents):
    from reflection_client import list_services
    a = agents(tmp_path, agent_yaml(grpc=True))
    assert "oneshield.agent.v1.Agent" in list_services(a.grpc_target)   # the fixture sends the token
    with anonymous():
        with pytest.raises(grpc.RpcError) as e:
            list_services(a.grpc_target)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture
def v6_addrs():
    """Two IPv6 addresses of one /64 and one of another, on lo, removed after."""
    addrs = ["2001:db8:1:2::10", "2001:db8:1:2::11", "2001:db8:1:3::10"]
    added = []
    try:
        for ad in addrs:
            r = subprocess.run(["ip", "-6", "addr", "add", f"{ad}/128", "dev", "lo", "nodad"],
                               capture_output=True, text=True)
            if r.returncode:
                pytest.skip(f"no IPv6 here: ip addr add {ad}: {r.stderr.strip()}")
            added.append(ad)
        yield addrs
    finally:
        for ad in added:
            subprocess.run(["ip", "-6", "addr", "del", f"{ad}/128", "dev", "lo"], capture_output=True)


def test_ipv6_peers_are_their_64(tmp_path, agents, v6_addrs):
    """A host cannot dodge the backoff by taking another address of its /64."""
    port = free_port()
    a = agents(tmp_path, f"api:\n  rest_listen: \"[::]:{port}\"\n  grpc_listen: off\n  insecure: true\n"
                         "metrics:\n  interval: 200ms\n")

    def get(src, token):
        c = http.client.HTTPConnection(v6_addrs[0], port, timeout=10, source_address=(src, 0))
        try:
            c.request("GET", "/v1/status", headers={"Authorization": f"Bearer {token}"})
            return c.getresponse().status
        finally:
            c.close()

    assert [get(v6_addrs[0], "0" * 64) for _ in range(5)] == [401] * 5
    assert get(v6_addrs[1], a.token) == 429          # same /64: the same peer
    assert get(v6_addrs[2], a.token) == 200          # another /64: another peer
    a.log.wait_line(r"from 2001:db8:1:2::/64 refused: .*; 2001:db8:1:2::/64 is refused for 1000 ms")
    a.stop()


def test_repeated_failures_slow_the_peer_down(tmp_path, agents):
    a = agents(tmp_path, agent_yaml(grpc=True))
    bad = {"Authorization": "Bearer " + "0" * 64}
    codes = [raw(a, "GET", "/v1/status", bad).status_code for _ in range(5)]
    assert codes == [401] * 5
    # backing off: even the right token is refused, without being looked at
    r = raw(a, "GET", "/v1/status", {"Authorization": f"Bearer {a.token}"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["retry_after_ms"] > 0
    code, _ = grpc_status(a.grpc_target, "GetStatus", pb.GetStatusRequest(),
                          [("authorization", f"Bearer {a.token}")])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    a.log.wait_line(r"127\.0\.0\.1 is refused for 1000 ms")
    # the open endpoints stay open
    assert raw(a, "GET", "/healthz").status_code == 200
    # after the backoff the right token works (and resets the peer)
    wait_for(lambda: raw(a, "GET", "/v1/status", {"Authorization": f"Bearer {a.token}"}).status_code == 200,
             what="the backoff to end")
    assert [raw(a, "GET", "/v1/status", bad).status_code for _ in range(4)] == [401] * 4
    # a peer that fails again after its backoff waits longer: 1 s, then 2 s
    wait_for(lambda: raw(a, "GET", "/v1/status", {"Authorization": f"Bearer {a.token}"}).status_code == 200,
             what="the peer reset")
    for _ in range(5):
        raw(a, "GET", "/v1/status", bad)
    wait_for(lambda: raw(a, "GET", "/v1/status", bad).status_code == 401, what="the first backoff to end")
    a.log.wait_line(r"127\.0\.0\.1 is refused for 2000 ms")
    wait_for(lambda: raw(a, "GET", "/v1/status", {"Authorization": f"Bearer {a.token}"}).status_code == 200,
             what="the second backoff to end")
    assert a.token not in a.log.text()


def test_unix_sockets_need_no_token_and_are_0600(tmp_path, sim, agents):
    rs, gs = tmp_path / "rest.sock", tmp_path / "grpc.sock"
    # a stale socket of an earlier run is replaced
    old = socket.socket(socket.AF_UNIX)
    old.bind(str(rs))
    old.close()
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim), grpc=True,
                                    api={"rest_socket": str(rs), "grpc_socket": str(gs)}))
    for p in (rs, gs):
        st = os.stat(p)
        assert stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o777 == 0o600, oct(st.st_mode)

    class UnixHTTP(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(rs))

    with anonymous():
        c = UnixHTTP("localhost")
        c.request("GET", "/v1/status")
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["api"]["rest_socket"] == str(rs)
        conf = open(sim.conf).read() + 'message "over the unix socket";\n'
        c.request("POST", "/v1/config/apply", body=json.dumps({"files": [{"path": sim.conf, "content": conf}]}),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        res = json.loads(r.read())
        assert r.status == 200 and res["status"] == "applied", res
        c.close()
        a.log.wait_line(rf"audit: config apply {res['correlation_id']} from rest:unix uid:{os.geteuid()}: applied")
        ch = grpc.insecure_channel(f"unix:{gs}")
        stub = pb_grpc.AgentStub(ch)
        assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).version
        # the gRPC socket's peer is named by its uid too (SO_PEERCRED at accept)
        res = stub.ApplyConfig(pb.ApplyConfigRequest(
            files=[pb.FileChange(path=sim.conf, content=conf.replace("over the unix socket", "over gRPC").encode())]), timeout=60)
        assert res.status == "applied", res
        a.log.wait_line(rf"audit: config apply {res.correlation_id} from grpc:unix uid:{os.geteuid()}: applied")
        ch.close()
    assert a.stop() == 0
    assert not rs.exists() and not gs.exists()


def test_grpc_unix_peer_is_named_by_its_uid(tmp_path, sim, agents):
    """Another local user, let in by socket_mode 666, is named by its own
    uid in the audit line (the agent reads SO_PEERCRED when it accepts, then
    hands the connection to gRPC)."""
    d = tempfile.mkdtemp(prefix="oneshield-uid-")
    try:
        os.chmod(d, 0o755)
        gs = os.path.join(d, "grpc.sock")
        # the generated stubs, where uid 65534 can read them
        out = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(pb.__file__)))))
        shutil.copytree(out, os.path.join(d, "pb"))
        subprocess.run(["chmod", "-R", "a+rX", d], check=True)
        sim.start()
        a = agents(tmp_path, agent_yaml(sim_onepanel(sim), grpc=True, api={"grpc_socket": gs, "socket_mode": "666"}))
        a.wait_event("ONEPANEL_FOUND_MESSAGE")
        conf = open(sim.conf).read() + 'message "from nobody";\n'
        client = (
            "import sys, grpc\n"
            "from oneshield.agent.v1 import agent_pb2 as pb, agent_pb2_grpc as pb_grpc\n"
            f"ch = grpc.insecure_channel('unix:{gs}')\n"
            "r = pb_grpc.AgentStub(ch).ApplyConfig(pb.ApplyConfigRequest(files=[pb.FileChange(\n"
            f"    path={sim.conf!r}, content=sys.stdin.buffer.read())]), timeout=60)\n"
            "print(r.status, r.correlation_id)\n")
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
                            client], input=conf.encode(), capture_output=True, timeout=90, cwd="/",
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": os.path.join(d, "pb")})
        assert r.returncode == 0, r.stderr.decode()
        status, cid = r.stdout.decode().split()
        assert status == "applied"
        a.log.wait_line(rf"audit: config apply {cid} from grpc:unix uid:65534: applied")
    finally:
        shutil.rmtree(d, True)


def test_socket_path_that_is_not_a_socket_is_refused(tmp_path):
    f = tmp_path / "rest.sock"
    f.write_text("keep me")
    cfg = tmp_path / "a.yaml"
    cfg.write_text(agent_yaml(api={"rest_socket": str(f)}))
    r = subprocess.run([AGENT_BIN, "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "exists and is not a socket" in r.stderr, r.stderr
    assert f.read_text() == "keep me"


def test_audit_names_the_token(tmp_path, sim, agents):
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim), grpc=True))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    orig = open(sim.conf).read()
    conf = orig + 'message "v2";\n'
    r = a.post("/v1/config/apply", json={"files": [{"path": sim.conf, "content": conf}]})
    assert r.status_code == 200, r.text
    tid = token_id(a.token)
    a.log.wait_line(rf"audit: config apply {r.json()['correlation_id']} from rest:127\.0\.0\.1 token:{tid}: applied")
    ch = grpc.insecure_channel(a.grpc_target)
    res = pb_grpc.AgentStub(ch).ApplyConfig(pb.ApplyConfigRequest(
        files=[pb.FileChange(path=sim.conf, content=(orig + 'message "v3";\n').encode())]), timeout=60)
    ch.close()
    a.log.wait_line(rf"audit: config apply {res.correlation_id} from grpc:ipv4:127\.0\.0\.1:\d+ token:{tid}: applied")


def test_auth_off_is_loud(tmp_path, agents):
    a = agents(tmp_path, agent_yaml(api={"auth": "false"}))
    assert raw(a, "GET", "/v1/status").status_code == 200
    st = raw(a, "GET", "/v1/status").json()["api"]["auth"]
    assert st["enabled"] is False and "OFF" in st["warning"]
    a.log.wait_line(r"WARN .*API AUTHENTICATION IS OFF")
    assert not os.path.exists(a.token_file)


@pytest.mark.parametrize("key,addr", [("rest_listen", "0.0.0.0"), ("grpc_listen", "0.0.0.0"),
                                      ("rest_listen", "[::]")])
def test_non_loopback_without_auth_refused_unless_insecure(tmp_path, pki, key, addr):
    """Off loopback, both halves of the rule: TLS (test_tls.py) and auth.
    Here the listener has TLS, so a missing auth is what is refused."""
    port = free_port()
    api = {"rest_listen": f"127.0.0.1:{free_port()}", "grpc_listen": "off", "auth": "false",
           "tls": f"{{cert_file: {pki.path('server.pem')}, key_file: {pki.path('server.key')}}}"}
    api[key] = f'"{addr}:{port}"'
    cfg = tmp_path / "a.yaml"
    cfg.write_text(api_yaml(**api))
    for args in (["-t", "-c", str(cfg)], ["-c", str(cfg)]):
        r = subprocess.run([AGENT_BIN, *args], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1
        assert re.search(rf"{re.escape(str(cfg))}:\d+: api: {key} .* is not a loopback address and api.auth is false",
                         r.stderr), r.stderr
        assert "api.insecure" in r.stderr
    cfg.write_text(api_yaml(**dict(api, insecure="true")))
    r = subprocess.run([AGENT_BIN, "-t", "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    # with auth on (and TLS), a non-loopback listener is allowed
    api.pop("auth")
    cfg.write_text(api_yaml(**api, token_file=tmp_path / "token"))
    r = subprocess.run([AGENT_BIN, "-t", "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    # and without TLS it is refused even with auth (the token would cross the network in clear)
    api.pop("tls")
    cfg.write_text(api_yaml(**api, token_file=tmp_path / "token"))
    r = subprocess.run([AGENT_BIN, "-t", "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "api.tls is not configured" in r.stderr, r.stderr


def test_refusal_log_line_cannot_be_forged(tmp_path, agents):
    """The path is the client's: a decoded %0A must not start a log line."""
    a = agents(tmp_path, agent_yaml())
    assert raw(a, "GET", "/v1/x%0AINFO%20forged").status_code == 401
    a.log.wait_line(r"auth: rest GET /v1/x\?INFO forged from 127\.0\.0\.1 refused")
    assert not any(ln.startswith("INFO forged") for ln in a.log.text().splitlines())


def test_refused_upload_is_not_read(tmp_path, agents):
    """A refused request with a body is answered from its headers: no
    "100 Continue", the body never read (the agent would otherwise read a
    stranger's upload of any size to its end)."""
    a = agents(tmp_path, agent_yaml())
    s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    s.sendall(b"POST /v1/config/apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, data
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 401 "), data
    assert b"100 Continue" not in data
    assert a.get("/healthz").status_code == 200


def test_sighup_turns_auth_and_the_socket_on_and_off(tmp_path, agents):
    a = agents(tmp_path, agent_yaml())
    text = open(a.config_path).read()
    sock = tmp_path / "r.sock"

    def reload(new_text):
        # watched in the log: a reload that moves the REST listener resets
        # a request that arrives in between
        n = a.log.text().count("configuration reloaded from")
        with open(a.config_path, "w") as f:
            f.write(new_text)
        a.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: a.log.text().count("configuration reloaded from") > n, what="the reload")

    assert raw(a, "GET", "/v1/status").status_code == 401
    reload(text.replace("api:\n", "api:\n  auth: false\n", 1))
    assert raw(a, "GET", "/v1/status").status_code == 200
    a.log.wait_line(r"API AUTHENTICATION IS OFF")
    reload(text.replace("api:\n", f"api:\n  rest_socket: {sock}\n", 1))
    assert raw(a, "GET", "/v1/status").status_code == 401
    assert stat.S_ISSOCK(os.stat(sock).st_mode) and os.stat(sock).st_mode & 0o777 == 0o600
    reload(text)
    assert not sock.exists()
    assert a.get("/v1/status").status_code == 200
    assert a.stop() == 0
