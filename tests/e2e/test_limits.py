"""api.limits (issue 8 §4): each limit at its edge. Exactly at the limit
the request is served; one over, it is refused with the documented status
and a JSON error (or, for connections per peer, the connection is closed at
accept), and nothing changes.

Run: cd tests/e2e && /usr/bin/python3 -m pytest -q test_limits.py
"""
from __future__ import annotations

import http.client
import json
import socket

import grpc
import pytest

from conftest import DEADLINE, SSE, agent_yaml, anonymous, wait_for
from grpcstubs import stubs
from test_config_apply import apply, onepanel_cfg, sims, snapshot, assert_same  # noqa: F401 (sims: fixture)
from test_grpc import Stream, gagent  # noqa: F401 (gagent: fixture)

pb, pb_grpc = stubs()


def limits(**kv):
    return {"limits": "{ " + ", ".join(f"{k}: {v}" for k, v in kv.items()) + " }"}


def raw_get(port, headers, path="/healthz"):
    """GET with exactly these headers (http.client adds none)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    c.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers:
        c.putheader(k, v)
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.getheader("Content-Type"), body


def test_header_bytes_edge(tmp_path, agents):
    a = agents(tmp_path, agent_yaml(api=limits(max_header_bytes=1024)))
    # counted: names and values; Host (HTTP/1.1 requires it) is 4 + 1, and
    # the Authorization header conftest adds to every request to the agent
    auth = len("Authorization") + len("Bearer ") + len(a.token)
    pad = 1024 - len("Host") - 1 - len("X-Pad") - auth
    code, ctype, body = raw_get(a.port, [("Host", "x"), ("X-Pad", "a" * pad)])
    assert code == 200, body
    code, ctype, body = raw_get(a.port, [("Host", "x"), ("X-Pad", "a" * (pad + 1))])
    assert code == 431 and ctype == "application/json", (code, body)
    j = json.loads(body)
    assert j["status"] == 431 and "api.limits.max_header_bytes" in j["error"], j


def test_body_bytes_edge(tmp_path, agents):
    """POST /v1/probes/syscalls without onepanel: a body at the limit gets
    the endpoint's own answer (503), one byte more 413."""
    a = agents(tmp_path, agent_yaml(api=limits(max_body_bytes=1024)))
    doc = '{"duration_s": 1}'
    at = doc + " " * (1024 - len(doc))
    r = a.post("/v1/probes/syscalls", data=at, headers={"Content-Type": "application/json"})
    assert r.status_code == 503, r.text
    r = a.post("/v1/probes/syscalls", data=at + " ", headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "api.limits.max_body_bytes" in r.json()["error"], r.text
    assert a.get("/v1/probes/syscalls").json()["state"] in ("idle", "unavailable")


def test_json_depth_edge(tmp_path, sims, agents):
    """A config apply is 3 deep ({"files": [{...}]}): with max_json_depth 3
    it is applied; one more level anywhere is refused before parsing and
    nothing is written."""
    sim = sims(tmp_path)
    sim.start()
    a = agents(tmp_path, agent_yaml(onepanel_cfg(sim), api=limits(max_json_depth=3)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE", pred=lambda e: e["pid"] == sim.pid)
    tree = snapshot(sim.conf_dir)
    deep = {"path": str(sim.config_path), "content": sim.text(message="deep"), "x": []}
    code, j = apply(a, [deep])
    assert code == 400 and "api.limits.max_json_depth" in j["error"], j
    # brackets inside strings are not nesting
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v2") + "# [[[{{{\n"}])
    assert code == 200 and j["status"] == "applied", j
    tree2 = snapshot(sim.conf_dir)
    code, j = apply(a, [dict(deep, content="[[[[")])
    assert code == 400, j
    assert_same(tree2, snapshot(sim.conf_dir))
    assert tree != tree2


def test_applies_per_minute_edge(tmp_path, sims, agents):
    sim = sims(tmp_path)
    sim.start()
    a = agents(tmp_path, agent_yaml(onepanel_cfg(sim), grpc=True, api=limits(applies_per_minute=2)))
    a.wait_event("ONEPANEL_FOUND_MESSAGE", pred=lambda e: e["pid"] == sim.pid)
    for i in range(2):
        code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message=f"v{i}")}], dry_run=True)
        assert code == 200 and j["status"] == "dry_run_ok", j
    tree = snapshot(sim.conf_dir)
    before = a.last_seq()
    code, j = apply(a, [{"path": str(sim.config_path), "content": sim.text(message="v3")}])
    assert code == 429 and j["status"] == "rate_limited", j
    assert 1 <= j["retry_after_s"] <= 60 and "applies_per_minute" in j["message"], j
    assert_same(tree, snapshot(sim.conf_dir))
    assert a.last_seq() == before, "a refused apply journals nothing"
    # the same budget for gRPC
    with grpc.insecure_channel(a.grpc_target) as ch:
        req = pb.ApplyConfigRequest(files=[pb.FileChange(path=str(sim.config_path),
                                                         content=sim.text(message="g").encode())])
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.AgentStub(ch).ApplyConfig(req, timeout=DEADLINE)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    assert_same(tree, snapshot(sim.conf_dir))


def test_connections_per_peer_edge(tmp_path, agents):
    a = agents(tmp_path, agent_yaml(api=limits(max_connections_per_peer=3)))
    held = []
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", a.port), timeout=DEADLINE)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers not finished: held open
            held.append(s)
        # the fourth is accepted by the kernel and closed by the server
        extra = socket.create_connection(("127.0.0.1", a.port), timeout=DEADLINE)
        try:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            got = extra.recv(100)
        except ConnectionResetError:
            got = b""
        extra.close()
        assert got == b"", got
        # the three held ones are still served
        held[0].sendall(b"\r\n")
        assert held[0].recv(100).startswith(b"HTTP/1.1 200"), "a held connection was not served"
        held.pop(0).close()

        # one slot free again: a new connection is served
        def served():
            try:
                with socket.create_connection(("127.0.0.1", a.port), timeout=DEADLINE) as s:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    return s.recv(100).startswith(b"HTTP/1.1 200")
            except ConnectionResetError:
                return False
        wait_for(served, what="a connection once one of the three closed")
    finally:
        for s in held:
            s.close()


def test_grpc_max_message_edge(tmp_path, agents):
    """GetConfigFile's request is the path only: 1 tag byte, a 2-byte length,
    the path. At 4096 bytes in all it is answered (no onepanel: FAILED_
    PRECONDITION or the like), at 4097 RESOURCE_EXHAUSTED."""
    a = agents(tmp_path, agent_yaml(grpc=True, api=limits(grpc_max_message_bytes=4096)))
    with grpc.insecure_channel(a.grpc_target) as ch:
        stub = pb_grpc.AgentStub(ch)
        for size, exhausted in ((4096, False), (4097, True)):
            req = pb.GetConfigFileRequest(path="/" + "a" * (size - 4))
            assert req.ByteSize() == size
            with pytest.raises(grpc.RpcError) as e:
                stub.GetConfigFile(req, timeout=DEADLINE)
            assert (e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED) == exhausted, (size, e.value)
        assert stub.GetStatus(pb.GetStatusRequest(), timeout=DEADLINE).version


def test_sse_streams_per_peer_edge(tmp_path, agents, monkeypatch):
    """Two event streams from 127.0.0.1 with max_streams_per_peer 2; the
    third is refused (429, JSON) before it starts and the two go on; once
    one closes, a new one is accepted."""
    monkeypatch.setenv("ONESHIELD_TEST_EVENTS", "1")
    a = agents(tmp_path, agent_yaml(api=limits(max_streams_per_peer=2)))
    held = [SSE(a.port), SSE(a.port)]
    try:
        s1, s2 = held
        assert (s1.status, s2.status) == (200, 200)
        assert s1.next()["id"] == 1 and s2.next()["id"] == 1
        s3 = SSE(a.port)
        body = s3.resp.read()      # the whole answer: the server closes after it
        assert s3.status == 429 and s3.resp.getheader("Content-Type") == "application/json", (s3.status, body)
        j = json.loads(body)
        assert j["status"] == 429 and "api.limits.max_streams_per_peer" in j["error"], j
        assert "127.0.0.1" in j["error"], j
        # nothing else changed: the two still stream, other requests are served
        assert a.get("/v1/status").json()["api"]["sse_clients"] == 2
        r = a.post("/v1/test/events", params={"count": 1})
        assert r.status_code == 202, r.text
        assert s1.wait_type("TEST_EVENT_MESSAGE") and s2.wait_type("TEST_EVENT_MESSAGE")
        # a closed stream frees its slot
        held.remove(s1)
        s1.close()
        wait_for(lambda: a.get("/v1/status").json()["api"]["sse_clients"] == 1, what="closed stream noticed")
        held.append(SSE(a.port))
        assert held[-1].status == 200
        assert held[-1].next()["id"] == 1
    finally:
        for s in held:
            s.close()


def test_grpc_streams_per_peer_edge(tmp_path, gagent):
    """Subscribe and StreamMetrics share one peer's max_streams_per_peer (2);
    one over is RESOURCE_EXHAUSTED before it starts; a stream that ends
    frees its slot; REST event streams are counted apart."""
    g = gagent(api=limits(max_streams_per_peer=2))
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED

    def refused(s):
        assert s.end() == [] and s.code() == exhausted, (s.code(), s.details())
        assert "api.limits.max_streams_per_peer" in s.details() and "127.0.0.1" in s.details(), s.details()

    def metrics():
        return Stream(g.stub.StreamMetrics(pb.StreamMetricsRequest(interval_ms=100)))

    s1, s2 = g.subscribe(), g.subscribe()
    assert s1.next().seq == 1 and s2.next().seq == 1
    g.wait_subscribers(2)
    refused(g.subscribe())
    refused(metrics())
    g.wait_streams(2)
    st = g.status()            # unary calls are not streams
    assert st.api.grpc_subscribers == 2
    # REST event streams have a count of their own
    sse = SSE(g.a.port)
    assert sse.status == 200
    sse.close()
    # a cancelled stream frees its slot; StreamMetrics takes it
    s1.cancel()
    g.wait_streams(1)
    met = metrics()
    assert met.next().families
    refused(g.subscribe())
    met.cancel()
    g.wait_streams(1)
    s3 = g.subscribe()
    assert s3.next().seq == 1
    # the survivors still get live events
    g.assert_live((s2, s3))
    for s in (s2, s3):
        s.cancel()
    g.wait_streams(0)


def test_unix_socket_clients_are_one_peer(tmp_path, agents):
    """Every client of the unix sockets is the one peer "unix": with
    max_streams_per_peer 1, a second stream over the socket is refused, while
    one over TCP (another peer) is accepted; the same for gRPC."""
    rs, gs = tmp_path / "rest.sock", tmp_path / "grpc.sock"
    a = agents(tmp_path, agent_yaml(grpc=True, api=dict(limits(max_streams_per_peer=1), rest_socket=str(rs),
                                                        grpc_socket=str(gs))))

    def unix_stream():
        c = http.client.HTTPConnection("localhost", timeout=DEADLINE)
        c.sock = socket.socket(socket.AF_UNIX)
        c.sock.settimeout(DEADLINE)
        c.sock.connect(str(rs))
        c.request("GET", "/v1/events/stream")
        return c, c.getresponse()

    held = []
    try:
        with anonymous():
            c1, r1 = unix_stream()
            held.append(c1)
            assert r1.status == 200
            c2, r2 = unix_stream()
            held.append(c2)
            body = r2.read()
            assert r2.status == 429 and "from unix " in json.loads(body)["error"], (r2.status, body)
        tcp = SSE(a.port)
        held.append(tcp)
        assert tcp.status == 200
        # no token for a unix: target (its file mode is the credential)
        with grpc.insecure_channel(f"unix:{gs}") as ch:
            stub = pb_grpc.AgentStub(ch)
            s1 = Stream(stub.Subscribe(pb.SubscribeRequest()))
            assert s1.next().seq == 1
            s2 = Stream(stub.Subscribe(pb.SubscribeRequest()))
            assert s2.end() == [] and s2.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, s2.details()
            assert "from unix " in s2.details(), s2.details()
            with grpc.insecure_channel(a.grpc_target) as tch:
                s3 = Stream(pb_grpc.AgentStub(tch).Subscribe(pb.SubscribeRequest()))
                assert s3.next().seq == 1
                s3.cancel()
            s1.cancel()
    finally:
        for c in held:
            c.close()
