"""TLS and mTLS on the REST and gRPC APIs (issue 8 §2), black-box.

A session fixture makes a small PKI with the openssl CLI: a CA, a server
certificate for 127.0.0.1 and localhost, a client certificate from that CA,
and a second, untrusted CA with its own client certificate. Agents are
started on ephemeral loopback ports (the non-loopback cases bind 0.0.0.0
and are reached through 127.0.0.1).

TLS 1.1: the local OpenSSL can still offer it at security level 0; a
control server (openssl s_server -tls1_1) proves that the client really
offered 1.1 before the agent's refusal is counted.

Run: AGENT_BIN=... /usr/bin/python3 -m pytest -q tests/e2e/test_tls.py
"""
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import warnings

import grpc
import pytest
import requests

from conftest import (AGENT_BIN, DEADLINE, DEFAULT_TOKEN_FILE, LogFile, Sim, free_port, register_token, sim_onepanel,
                      wait_for)
from grpcstubs import stubs

CLIENT_DN = "CN=client one,O=Example"


# ---------------------------------------------------------------- PKI

def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"openssl {' '.join(args)}:\n{r.stderr}"


def _key(d, name):
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key", cwd=d)
    os.chmod(os.path.join(d, f"{name}.key"), 0o600)


def _ca(d, name, cn):
    _key(d, name)
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.pem", "-days", "30",
             "-subj", f"/CN={cn}", cwd=d)


def _signed(d, name, subj, ca, ext=None):
    _key(d, name)
    _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=d)
    args = ["x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "30"]
    if ext:
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext)
        args += ["-extfile", f"{name}.ext"]
    _openssl(*args, cwd=d)


def _crl(d, ca, out, revoke):
    """out: a CRL of ca revoking the certificates named (openssl ca, with a
    database of its own)."""
    with open(os.path.join(d, f"{out}.cnf"), "w") as f:
        f.write(f"[ca]\ndefault_ca = c\n[c]\ndatabase = {out}.index\ncrlnumber = {out}.crlnum\n"
                "default_md = sha256\ndefault_crl_days = 30\n")
    open(os.path.join(d, f"{out}.index"), "w").close()
    with open(os.path.join(d, f"{out}.crlnum"), "w") as f:
        f.write("1000\n")
    ca_args = ["-config", f"{out}.cnf", "-keyfile", f"{ca}.key", "-cert", f"{ca}.pem"]
    for name in revoke:
        _openssl("ca", *ca_args, "-revoke", f"{name}.pem", cwd=d)
    _openssl("ca", *ca_args, "-gencrl", "-out", out, cwd=d)


class PKI:
    def __init__(self, d):
        self.dir = d
        san = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        _ca(d, "ca", "oneshield test CA")
        _signed(d, "server", "/CN=localhost", "ca", san)
        _signed(d, "server2", "/CN=localhost renewed", "ca", san)
        _signed(d, "client", "/O=Example/CN=client one", "ca", "extendedKeyUsage=clientAuth\n")
        _ca(d, "other_ca", "someone else's CA")
        _signed(d, "other_client", "/CN=intruder", "other_ca", "extendedKeyUsage=clientAuth\n")
        # CRLs (api.tls.crl_file): client two is revoked by crl.pem only
        _signed(d, "client2", "/O=Example/CN=client two", "ca", "extendedKeyUsage=clientAuth\n")
        _crl(d, "ca", "crl_none.pem", [])
        _crl(d, "ca", "crl.pem", ["client2"])
        _crl(d, "other_ca", "crl_other_ca.pem", [])

    def path(self, name):
        return os.path.join(self.dir, name)

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.fail("the openssl CLI is needed (scripts/deps.sh installs it)")
    return PKI(str(tmp_path_factory.mktemp("pki")))


# ---------------------------------------------------------------- agents

def tls_yaml(pki, mtls=False, grpc=False, listen="127.0.0.1", extra_api="", files=None):
    f = {"cert_file": pki.path("server.pem"), "key_file": pki.path("server.key")}
    if mtls:
        f["client_ca_file"] = pki.path("ca.pem")
    f.update(files or {})
    lines = ["api:", f"  token_file: {DEFAULT_TOKEN_FILE}", f"  rest_listen: {listen}:{free_port()}",
             f"  grpc_listen: {listen}:{free_port()}" if grpc else "  grpc_listen: off", "  tls:"]
    lines += [f"    {k}: {v}" for k, v in f.items()]
    return "\n".join(lines) + "\n" + extra_api + "metrics:\n  interval: 200ms\n"


class TlsAgent:
    """The agent serving HTTPS (conftest.Agent waits for http://)."""

    def __init__(self, tmp_path, text, onepanel_yaml=""):
        self.config_path = os.path.join(str(tmp_path), "agent.yaml")
        with open(self.config_path, "w") as f:
            f.write(onepanel_yaml + text)
        self.proc = subprocess.Popen([AGENT_BIN, "-c", self.config_path, "-v"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.log = LogFile(self.proc.stderr)
        try:
            self._wait_started(text)
        except AssertionError as e:
            raise AssertionError(f"{e}; agent log:\n{self.log.text()}") from None

    def _line(self, pattern):
        rx = re.compile(pattern)

        def find():
            m = rx.search(self.log.text())
            if m or self.proc.poll() is None:
                return m
            raise AssertionError(f"the agent exited ({self.proc.returncode}) before /{pattern}/")
        return wait_for(find, what=f"log line /{pattern}/")

    def _wait_started(self, text):
        m = self._line(r"REST API listening on https://[0-9.]+:(\d+)")
        self.port = int(m.group(1))
        self.base = f"https://127.0.0.1:{self.port}"
        # the API token (tls_yaml names the session's token file): sent by
        # default, like conftest.Agent does
        self.token = register_token(f"127.0.0.1:{self.port}", DEFAULT_TOKEN_FILE)
        self.grpc_target = None
        if re.search(r"^\s*grpc_listen:\s*(?!off\s*$)\S", text, re.M):
            g = self._line(r"gRPC API listening on \S+ \(port (\d+)\)")
            self.grpc_target = f"127.0.0.1:{g.group(1)}"
            register_token(self.grpc_target, DEFAULT_TOKEN_FILE)

    def get(self, path, **kw):
        return requests.get(self.base + path, timeout=10, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(timeout=DEADLINE) == 0, self.log.text()
        finally:
            self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def tls_agents(request):
    def make(tmp_path, text, onepanel_yaml=""):
        a = TlsAgent(tmp_path, text, onepanel_yaml)
        request.addfinalizer(a.kill)
        return a
    return make


def refused(tmp_path, text, args=()):
    """Run an agent that must refuse its configuration: (exit status, stderr)."""
    p = os.path.join(str(tmp_path), "refused.yaml")
    with open(p, "w") as f:
        f.write(text)
    r = subprocess.run([AGENT_BIN, "-c", p, *args], capture_output=True, text=True, timeout=DEADLINE)
    return r.returncode, r.stderr


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def tls_connect(port, ctx, alpn=None):
    """A TLS handshake with ctx: (version, peer certificate DER)."""
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.version(), s.getpeercert(binary_form=True)


def ctx_trusting(pki, ca="ca.pem", client=None):
    ctx = ssl.create_default_context(cafile=pki.path(ca))
    if client:
        ctx.load_cert_chain(pki.path(f"{client}.pem"), pki.path(f"{client}.key"))
    return ctx


def tls11_ctx():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


def pem_der(pki, name):
    return ssl.PEM_cert_to_DER_cert(pki.read(name).decode())


def grpc_channel(pki, target, client="client", ca="ca.pem"):
    kw = {"root_certificates": pki.read(ca)}
    if client:
        kw.update(private_key=pki.read(f"{client}.key"), certificate_chain=pki.read(f"{client}.pem"))
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(**kw),
                               options=[("grpc.ssl_target_name_override", "localhost")])


# ---------------------------------------------------------------- TLS

def test_rest_https_with_the_ca(tmp_path, pki, tls_agents):
    a = tls_agents(tmp_path, tls_yaml(pki))
    r = a.get("/healthz", verify=pki.path("ca.pem"))
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert a.get("/v1/status", verify=pki.path("ca.pem")).json()["version"]
    # the certificate served is the configured one
    _, der = tls_connect(a.port, ctx_trusting(pki))
    assert der == pem_der(pki, "server.pem")
    a.stop()


def test_plain_http_to_the_tls_port_fails(tmp_path, pki, tls_agents):
    a = tls_agents(tmp_path, tls_yaml(pki))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{a.port}/healthz", timeout=10)
    # a raw request gets no HTTP answer either
    with socket.create_connection(("127.0.0.1", a.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert not data.startswith(b"HTTP/"), data
    # and the agent serves the next TLS client
    assert a.get("/healthz", verify=pki.path("ca.pem")).status_code == 200
    a.stop()


def test_a_client_trusting_another_ca_fails(tmp_path, pki, tls_agents):
    a = tls_agents(tmp_path, tls_yaml(pki, grpc=True))
    with pytest.raises(requests.exceptions.SSLError):
        a.get("/healthz", verify=pki.path("other_ca.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(a.port, ctx_trusting(pki, ca="other_ca.pem"))
    pb, pbg = stubs()
    ch = grpc_channel(pki, a.grpc_target, client=None, ca="other_ca.pem")
    with pytest.raises(grpc.RpcError) as e:
        pbg.AgentStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    ch.close()
    # TLS without client_ca_file: a client without a certificate is fine
    ch = grpc_channel(pki, a.grpc_target, client=None)
    assert pbg.AgentStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10).version
    ch.close()
    a.stop()


@pytest.fixture(scope="session")
def tls11_control(pki):
    """Can this machine's OpenSSL offer TLS 1.1 at all? Checked against
    openssl s_server limited to 1.1."""
    port = free_port()
    p = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", pki.path("server.pem"),
                          "-key", pki.path("server.key"), "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-www"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port), what="openssl s_server")
        try:
            version, _ = tls_connect(port, tls11_ctx())
        except ssl.SSLError:
            version = None
    finally:
        p.kill()
        p.wait()
    return version == "TLSv1.1"


def test_tls_1_2_and_newer_only(tmp_path, pki, tls_agents, tls11_control):
    a = tls_agents(tmp_path, tls_yaml(pki, grpc=True))
    gport = int(a.grpc_target.rsplit(":", 1)[1])
    for port, alpn in ((a.port, None), (gport, ["h2"])):
        version, _ = tls_connect(port, ctx_trusting(pki), alpn)
        assert version in ("TLSv1.2", "TLSv1.3")
        ctx = ctx_trusting(pki)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        assert tls_connect(port, ctx, alpn)[0] == "TLSv1.2"
        if tls11_control:
            with pytest.raises(ssl.SSLError):
                tls_connect(port, tls11_ctx(), alpn)
    if not tls11_control:
        pytest.skip("the local OpenSSL cannot offer TLS 1.1: only checked that 1.2+ is negotiated")
    a.stop()


# ---------------------------------------------------------------- mTLS

def test_mtls_rest(tmp_path, pki, tls_agents):
    a = tls_agents(tmp_path, tls_yaml(pki, mtls=True))
    ca = pki.path("ca.pem")
    r = a.get("/v1/status", verify=ca)
    assert r.status_code == 403 and "no client certificate" in r.json()["error"]
    r = a.get("/v1/status", verify=ca, cert=(pki.path("other_client.pem"), pki.path("other_client.key")))
    assert r.status_code == 403 and "not trusted" in r.json()["error"]
    r = a.get("/v1/status", verify=ca, cert=(pki.path("client.pem"), pki.path("client.key")))
    assert r.status_code == 200 and r.json()["version"]
    a.log.wait_line(r"rest: request refused: no client certificate")
    a.log.wait_line(r"rest: request refused: client certificate not trusted")
    a.stop()


def test_mtls_grpc(tmp_path, pki, tls_agents):
    a = tls_agents(tmp_path, tls_yaml(pki, mtls=True, grpc=True))
    pb, pbg = stubs()
    for client in (None, "other_client"):
        ch = grpc_channel(pki, a.grpc_target, client=client)
        with pytest.raises(grpc.RpcError) as e:
            pbg.AgentStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, client
        ch.close()
    ch = grpc_channel(pki, a.grpc_target)
    assert pbg.AgentStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10).version
    ch.close()
    a.stop()


def test_crl_refuses_a_revoked_client_certificate(tmp_path, pki, tls_agents):
    """crl_file: a certificate the CA revoked is refused on REST (403) and
    gRPC (UNAUTHENTICATED), with its serial in the log; others of the CA
    are served."""
    a = tls_agents(tmp_path, tls_yaml(pki, mtls=True, grpc=True, files={"crl_file": pki.path("crl.pem")}))
    a.log.wait_line(r"revoked ones in .*crl\.pem")
    ca = pki.path("ca.pem")
    r = a.get("/v1/status", verify=ca, cert=(pki.path("client2.pem"), pki.path("client2.key")))
    assert r.status_code == 403 and "client certificate revoked (serial " in r.json()["error"], r.text
    assert a.get("/v1/status", verify=ca, cert=(pki.path("client.pem"), pki.path("client.key"))).status_code == 200
    pb, pbg = stubs()
    ch = grpc_channel(pki, a.grpc_target, client="client2")
    with pytest.raises(grpc.RpcError) as e:
        pbg.AgentStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in e.value.details(), e.value
    ch.close()
    ch = grpc_channel(pki, a.grpc_target)
    assert pbg.AgentStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10).version
    ch.close()
    a.log.wait_line(r"rest: request refused: client certificate revoked \(serial [0-9a-f]+\)")
    a.log.wait_line(r"grpc: call /oneshield\.agent\.v1\.Agent/GetStatus refused: client certificate revoked")
    a.stop()


def test_sighup_new_crl_applies_to_open_connections(tmp_path, pki, tls_agents):
    """A new CRL on SIGHUP refuses the revoked certificate at once, also on
    a gRPC connection and a REST keep-alive connection opened before; REST
    is not restarted for it (the same connection keeps serving others)."""
    crl = tmp_path / "crl.pem"
    shutil.copy(pki.path("crl_none.pem"), crl)
    a = tls_agents(tmp_path, tls_yaml(pki, mtls=True, grpc=True, files={"crl_file": str(crl)}))
    ca = pki.path("ca.pem")
    pb, pbg = stubs()
    ch = grpc_channel(pki, a.grpc_target, client="client2")
    stub = pbg.AgentStub(ch)
    assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).version
    ctx = ctx_trusting(pki, client="client2")
    conn = http.client.HTTPSConnection("127.0.0.1", a.port, context=ctx, timeout=10)

    def status():
        """(status, body, whether the request went on the first connection)"""
        conn.request("GET", "/v1/status", headers={"Authorization": f"Bearer {a.token}"})
        same = conn.sock is first[0] if first else True
        first[:] = first or [conn.sock]
        r = conn.getresponse()
        return r.status, r.read(), same

    first = []
    assert status()[0] == 200

    shutil.copy(pki.path("crl.pem"), crl)
    before = len(a.log.text())
    a.proc.send_signal(signal.SIGHUP)
    a.log.wait_line(r"configuration reloaded from")
    with pytest.raises(grpc.RpcError) as e:
        stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value
    ch.close()
    code, body, same = status()
    assert same, "the REST connection was not kept"
    assert code == 403 and "revoked" in json.loads(body)["error"], body
    after = a.log.text()[before:]
    assert "REST API listening" not in after and "grpc: new TLS certificate" not in after, after
    conn.close()
    assert a.get("/v1/status", verify=ca, cert=(pki.path("client.pem"), pki.path("client.key"))).status_code == 200
    a.stop()


def test_sighup_new_crl_ends_revoked_streams(tmp_path, pki, tls_agents):
    """Event streams already open are checked again on SIGHUP: the revoked
    certificate's REST event stream and gRPC Subscribe end (a last SSE
    comment says why; UNAUTHENTICATED), the other certificate's go on and
    carry the reload's event."""
    crl = tmp_path / "crl.pem"
    shutil.copy(pki.path("crl_none.pem"), crl)
    a = tls_agents(tmp_path, tls_yaml(pki, mtls=True, grpc=True, files={"crl_file": str(crl)}))
    pb, pbg = stubs()
    reloaded = pb.EventType.Value("AGENT_CONFIG_RELOADED_MESSAGE")

    def sse(client):
        conn = http.client.HTTPSConnection("127.0.0.1", a.port, context=ctx_trusting(pki, client=client),
                                           timeout=DEADLINE)
        conn.request("GET", "/v1/events/stream", headers={"Authorization": f"Bearer {a.token}"})
        r = conn.getresponse()
        assert r.status == 200
        assert r.readline().startswith(b": oneshield-agent event stream")
        return conn, r

    def subscribe(client):
        ch = grpc_channel(pki, a.grpc_target, client=client)
        it = pbg.AgentStub(ch).Subscribe(pb.SubscribeRequest(), timeout=DEADLINE)
        assert next(it).seq == 1  # the stream is up
        return ch, it

    (bad_conn, bad_sse), (good_conn, good_sse) = sse("client2"), sse("client")
    (bad_ch, bad_sub), (good_ch, good_sub) = subscribe("client2"), subscribe("client")
    bad_metrics = pbg.AgentStub(bad_ch).StreamMetrics(pb.StreamMetricsRequest(name_prefix="node_load1"),
                                                      timeout=DEADLINE)
    assert next(bad_metrics).families  # up
    shutil.copy(pki.path("crl.pem"), crl)
    a.proc.send_signal(signal.SIGHUP)

    lines = []
    while True:  # up to the end of the stream: the events before, then the comment
        line = bad_sse.readline()
        if not line:
            break
        lines.append(line)
    assert lines[-2].startswith(b": closed: client certificate revoked (serial ") and lines[-1] == b"\n", lines[-3:]
    with pytest.raises(grpc.RpcError) as e:
        for _ in bad_sub:
            pass
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in e.value.details(), e.value
    with pytest.raises(grpc.RpcError) as e:
        for _ in bad_metrics:
            pass
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value
    assert any(m.type == reloaded for m in good_sub), "the good stream ended without the reload's event"
    while True:
        line = good_sse.readline()
        assert line, "the good event stream ended"
        if line == b"event: AGENT_CONFIG_RELOADED_MESSAGE\n":
            break
    a.log.wait_line(r"rest: event stream of 127\.0\.0\.1 ended: client certificate revoked")
    a.log.wait_line(r"grpc: stream Subscribe ended: client certificate revoked")
    a.log.wait_line(r"grpc: stream StreamMetrics ended: client certificate revoked")
    for c in (bad_conn, good_conn, bad_ch, good_ch):
        c.close()
    a.stop()


def test_mtls_apply_audit_records_the_client_certificate(tmp_path, pki, tls_agents):
    sim = Sim(tmp_path)  # its config file and allowed dir; it need not run for a dry run
    op = "onepanel:\n" + "".join(f"  {k}: {v}\n" for k, v in sim_onepanel(sim).items())
    a = tls_agents(tmp_path, tls_yaml(pki, mtls=True, grpc=True), op)
    content = open(sim.conf, "rb").read()
    body = {"files": [{"path": sim.conf, "content_base64": base64.b64encode(content).decode()}], "dry_run": True}
    r = requests.post(a.base + "/v1/config/apply", json=body, timeout=60, verify=pki.path("ca.pem"),
                      cert=(pki.path("client.pem"), pki.path("client.key")))
    assert r.status_code == 200 and r.json()["status"] == "dry_run_ok", r.text
    cid = r.json()["correlation_id"]
    a.log.wait_line(rf"audit: config apply {cid} from rest:127\.0\.0\.1 token:[0-9a-f]{{8}} cert:{re.escape(CLIENT_DN)} \(dry run\): dry_run_ok")

    pb, pbg = stubs()
    ch = grpc_channel(pki, a.grpc_target)
    res = pbg.AgentStub(ch).ApplyConfig(
        pb.ApplyConfigRequest(files=[pb.FileChange(path=sim.conf, content=content)], dry_run=True), timeout=60)
    ch.close()
    a.log.wait_line(rf"audit: config apply {res.correlation_id} from grpc:\S+ token:[0-9a-f]{{8}} cert:{re.escape(CLIENT_DN)} \(dry run\): dry_run_ok")
    a.stop()


# ---------------------------------------------------------------- refusals at start

def test_non_loopback_without_tls_is_refused_unless_insecure(tmp_path, agents):
    port = free_port()
    plain = f"api:\n  rest_listen: 0.0.0.0:{port}\n  grpc_listen: off\n"
    for args in ((), ("-t",)):
        rc, err = refused(tmp_path, plain, args)
        assert rc == 1, err
        assert f"api.rest_listen: 0.0.0.0:{port} is not a loopback address" in err
        assert "api.insecure: true" in err
    assert not listening(port)
    rc, err = refused(tmp_path, f"api:\n  rest_listen: 127.0.0.1:{port}\n  grpc_listen: \"[::]:{free_port()}\"\n")
    assert rc == 1 and "api.grpc_listen" in err and "not a loopback address" in err, err

    a = agents(tmp_path, plain + "  insecure: true\nmetrics:\n  interval: 200ms\n")
    assert a.get("/healthz").status_code == 200
    a.stop()


def test_non_loopback_with_tls_starts(tmp_path, pki, tls_agents):
    a = tls_agents(tmp_path, tls_yaml(pki, listen="0.0.0.0"))
    assert a.get("/healthz", verify=pki.path("ca.pem")).status_code == 200
    a.stop()


@pytest.fixture
def bad_files(tmp_path, pki):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    (d / "garbage.key").write_text("hello\n")
    os.chmod(d / "garbage.key", 0o600)
    shutil.copy(pki.path("server.key"), d / "open.key")
    os.chmod(d / "open.key", 0o644)
    shutil.copy(pki.path("server.key"), d / "group.key")
    os.chmod(d / "group.key", 0o640)
    return d


@pytest.mark.parametrize("case,key,name,message", [
    ("missing_cert", "cert_file", "nope.pem", "No such file or directory"),
    ("bad_pem_cert", "cert_file", "garbage.pem", "no PEM certificate"),
    ("bad_pem_key", "key_file", "garbage.key", "not an unencrypted PEM private key"),
    ("key_mismatch", "key_file", "client.key", "does not match the certificate"),
    ("key_0644", "key_file", "open.key", "permissions 0644 are too open"),
    ("key_0640", "key_file", "group.key", "permissions 0640 are too open"),
    ("bad_pem_ca", "client_ca_file", "garbage.pem", "no PEM certificate"),
    ("missing_ca", "client_ca_file", "nope.pem", "No such file or directory"),
    ("ca_is_a_dir", "client_ca_file", ".", "not a regular file"),
    ("bad_pem_crl", "crl_file", "garbage.pem", "no PEM CRL in it"),
    ("crl_of_another_ca", "crl_file", "crl_other_ca.pem", "CRL 1 is not signed by a CA of client_ca_file"),
])
def test_bad_tls_files_are_refused_at_start(tmp_path, pki, bad_files, case, key, name, message):
    path = pki.path(name) if name in ("client.key", "crl_other_ca.pem") else str(bad_files / name)
    files = {key: path}
    if key == "crl_file":
        files["client_ca_file"] = pki.path("ca.pem")
    text = tls_yaml(pki, grpc=True, files=files)
    port = int(re.search(r"rest_listen: 127\.0\.0\.1:(\d+)", text).group(1))
    for args in (("-t",), ()):
        rc, err = refused(tmp_path, text, args)
        assert rc == 1, (case, err)
        assert f"{os.path.normpath(path)}: " in err or f"{path}: " in err, err
        assert message in err, err
        assert "configuration refused" in err
    assert not listening(port)


# ---------------------------------------------------------------- SIGHUP

def test_sighup_serves_renewed_certificates_to_new_connections(tmp_path, pki, tls_agents):
    d = tmp_path / "live"
    d.mkdir()
    for n in ("server.pem", "server.key"):
        shutil.copy(pki.path(n), d / n)
    text = tls_yaml(pki, grpc=True, files={"cert_file": str(d / "server.pem"), "key_file": str(d / "server.key")})
    a = tls_agents(tmp_path, text)
    gport = int(a.grpc_target.rsplit(":", 1)[1])
    assert tls_connect(a.port, ctx_trusting(pki))[1] == pem_der(pki, "server.pem")
    assert tls_connect(gport, ctx_trusting(pki), ["h2"])[1] == pem_der(pki, "server.pem")

    # a key others may read is refused on reload too: the old pair stays
    shutil.copy(pki.path("server2.key"), d / "server.key")
    os.chmod(d / "server.key", 0o644)
    shutil.copy(pki.path("server2.pem"), d / "server.pem")
    a.proc.send_signal(signal.SIGHUP)
    a.log.wait_line(r"config reload failed, keeping the running configuration: .*server\.key: permissions 0644")
    assert tls_connect(a.port, ctx_trusting(pki))[1] == pem_der(pki, "server.pem")
    assert tls_connect(gport, ctx_trusting(pki), ["h2"])[1] == pem_der(pki, "server.pem")

    os.chmod(d / "server.key", 0o600)
    a.proc.send_signal(signal.SIGHUP)
    a.log.wait_line(r"configuration reloaded from")
    a.log.wait_line(r"grpc: new TLS certificate \(CN=localhost renewed\) for new connections")
    assert tls_connect(a.port, ctx_trusting(pki))[1] == pem_der(pki, "server2.pem")
    assert tls_connect(gport, ctx_trusting(pki), ["h2"])[1] == pem_der(pki, "server2.pem")
    assert a.get("/healthz", verify=pki.path("ca.pem")).status_code == 200
    pb, pbg = stubs()
    ch = grpc_channel(pki, a.grpc_target, client=None)
    assert pbg.AgentStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10).version
    ch.close()
    a.stop()


def test_sighup_adding_client_ca_applies_to_rest_now_and_grpc_at_restart(tmp_path, pki, tls_agents):
    a = tls_agents(tmp_path, tls_yaml(pki, grpc=True))
    ca = pki.path("ca.pem")
    assert a.get("/healthz", verify=ca).status_code == 200
    text = open(a.config_path).read()
    with open(a.config_path, "w") as f:
        f.write(text.replace("  tls:\n", f"  tls:\n    client_ca_file: {ca}\n"))
    a.proc.send_signal(signal.SIGHUP)
    a.log.wait_line(r"configuration reloaded from")
    a.log.wait_line(r"grpc: api.tls now requires client certificates; the gRPC server keeps TLS without "
                    r"client certificates until the agent restarts")
    r = a.get("/healthz", verify=ca)
    assert r.status_code == 403 and "no client certificate" in r.json()["error"]
    assert a.get("/healthz", verify=ca, cert=(pki.path("client.pem"), pki.path("client.key"))).status_code == 200
    pb, pbg = stubs()
    ch = grpc_channel(pki, a.grpc_target, client=None)
    assert pbg.AgentStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10).version
    ch.close()
    a.stop()
