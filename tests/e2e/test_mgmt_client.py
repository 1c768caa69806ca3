"""The agent's push to One Shield (issue 7): the real agent against the
reference management plane (tools/mgmt-server). Outages, agent restarts in
the middle of them, a full spool, bad tokens, a server that sends garbage or
commands the agent does not know, and commands that run the agent's own code
paths (config apply end to end). Every wait is a poll with a deadline."""
import hashlib
import os
import re
import signal
import shutil
import socket
import stat
import threading

import pytest
import requests

from conftest import DEADLINE, agent_yaml, free_port, sim_onepanel, wait_for
from test_mgmt_server import TOKEN, servers  # noqa: F401 (the fixture)


def write_token(path, token=TOKEN, mode=0o600):
    with open(path, "w") as f:
        f.write(token + "\n")
    os.chmod(path, mode)
    return path


def oneshield_yaml(tmp_path, port, token=TOKEN, spool_max="", labels="[region=eu-1, role=web]", extra=""):
    tok = write_token(os.path.join(str(tmp_path), "mgmt-token"), token) if token else None
    lines = ["oneshield:", f"  address: 127.0.0.1:{port}", f"  spool_dir: {tmp_path}/state",
             "  report_interval: 1s", "  retry_max: 300ms", f"  labels: {labels}"]
    if tok:
        lines.append(f"  token_file: {tok}")
    if spool_max:
        lines.append(f"  spool_max_bytes: {spool_max}")
    return "\n".join(lines) + "\n" + extra


@pytest.fixture
def test_events(monkeypatch):
    monkeypatch.setenv("ONESHIELD_TEST_EVENTS", "1")


def gen(agent, count):
    r = requests.post(agent.base + "/v1/test/events", params={"count": count, "rate": 0}, timeout=DEADLINE)
    assert r.status_code == 202, r.text


def status(agent):
    s = agent.get("/v1/status").json()["oneshield"]
    s.setdefault("connected", False)
    s.setdefault("connects", 0)
    return s


def wait_connected(agent, connects=1):
    return wait_for(lambda: (lambda s: s if s["connected"] and s["connects"] >= connects else None)(status(agent)),
                    what=f"connected (connects >= {connects})")


def all_events(server, aid):
    out, after = [], 0
    while True:
        r = server.get(f"/v1/agents/{aid}/events", params={"after": after, "limit": 5000})
        assert r.status_code == 200, r.text
        d = r.json()
        out += d["events"]
        if not d["more"]:
            return out
        after = out[-1]["spool_seq"]


def wait_delivered(server, aid, last_spool_seq):
    """Everything up to last_spool_seq received or declared lost, and acked."""
    def done():
        r = server.get(f"/v1/agents/{aid}")
        if r.status_code == 404:  # not connected yet
            return None
        d = r.json()
        return d if d["last_seq"] >= last_spool_seq and d["acked"] >= last_spool_seq else None
    return wait_for(done, what=f"spool_seq {last_spool_seq} delivered")


def check_stream(events, test_count):
    """spool_seq consecutive, each once; within one agent run the journal
    seqs grow with spool_seq; test_count TEST events in all."""
    seqs = [e["spool_seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "spool_seq not consecutive"
    runs, cur = [], []
    for e in events:
        if e["event"]["type"] == "AGENT_START_MESSAGE" and cur:
            runs.append(cur)
            cur = []
        cur.append(e["event"]["seq"])
    runs.append(cur)
    for r in runs:
        assert r == sorted(r) and len(set(r)) == len(r), "journal order broken inside a run"
    assert sum(1 for e in events if e["event"]["type"] == "TEST_EVENT_MESSAGE") == test_count


def test_hello_labels_metrics_and_events(tmp_path, servers, agents):
    srv = servers(tmp_path)
    port = int(srv.target.rsplit(":", 1)[1])
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port)))
    st = wait_connected(a)
    aid = st["agent_id"]
    assert len(aid) == 32 and open(f"{tmp_path}/state/agent-id").read().strip() == aid
    d = srv.wait_agent(aid, lambda x: x["metrics_received"] >= 2 and x["events_received"] >= 1, "metrics and events")
    h = d["hello"]
    assert h["labels"] == {"region": "eu-1", "role": "web"}
    assert h["mode"] in ("ebpf", "procfs")
    assert h["spool_id"] == st["spool"]["id"] and h["kernel_release"] == os.uname().release
    assert h["agent_version"] and h["hostname"]
    evs = all_events(srv, aid)
    assert evs[0]["event"]["type"] == "AGENT_START_MESSAGE" and evs[0]["spool_seq"] == 1
    m = srv.get(f"/v1/agents/{aid}/metrics").json()["snapshot"]
    names = {f["name"] for f in m["families"]}
    assert "node_load1" in names and "oneshield_agent_mgmt_connected" in names
    prom = a.get("/metrics").text
    assert "oneshield_agent_mgmt_connected 1" in prom
    # the spool empties as acks arrive
    wait_for(lambda: status(a)["spool"]["depth"] == 0, what="spool drained")
    # the agent's stop is the last event, and the server has it
    assert a.stop() == 0
    evs = all_events(srv, aid)
    assert evs[-1]["event"]["type"] == "AGENT_STOP_MESSAGE"


def test_outage_then_everything_once_in_order(tmp_path, servers, agents, test_events):
    port = free_port()
    srv = servers(tmp_path, "--state-dir", f"{tmp_path}/srvstate", port=port)
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port)))
    aid = wait_connected(a)["agent_id"]
    gen(a, 50)
    wait_for(lambda: status(a)["spool"]["acked_seq"] >= 51, what="first 50 acked")
    srv.stop()
    wait_for(lambda: not status(a)["connected"], what="agent notices the outage")
    gen(a, 300)
    s = wait_for(lambda: (lambda x: x if x["spool"]["last_seq"] >= 351 else None)(status(a)), what="spooled")
    assert s["spool"]["depth"] >= 300 and s["state"] in ("backoff", "connecting")
    assert a.get("/v1/status").status_code == 200  # the agent is unaffected
    srv2 = servers(tmp_path, "--state-dir", f"{tmp_path}/srvstate", port=port, name="server2")
    last = status(a)["spool"]["last_seq"]
    wait_delivered(srv2, aid, last)
    evs = all_events(srv2, aid)
    # the second server remembers what the first acknowledged; it gets the rest once each
    assert evs[0]["spool_seq"] == 52 and evs[-1]["spool_seq"] == last
    check_stream(evs, 300)
    d = srv2.agent(aid)
    assert d["duplicates"] == 0 and d["lost"] == 0 and d["gaps"] == []
    wait_for(lambda: status(a)["spool"]["depth"] == 0, what="spool drained")


@pytest.mark.parametrize("how", ["TERM", "KILL"])
def test_agent_restart_mid_outage_loses_nothing(tmp_path, servers, agents, test_events, how):
    port = free_port()
    cfg = agent_yaml(extra=oneshield_yaml(tmp_path, port))
    a = agents(tmp_path, cfg)
    wait_for(lambda: status(a).get("attempts", 0) >= 2, what="connection attempts while the server is down")
    aid = status(a)["agent_id"]
    gen(a, 100)
    wait_for(lambda: status(a)["spool"]["last_seq"] >= 101, what="100 spooled")
    a.stop(signal.SIGTERM if how == "TERM" else signal.SIGKILL)
    b = agents(tmp_path, cfg)
    assert wait_for(lambda: status(b).get("agent_id"), what="client started") == aid
    gen(b, 100)
    wait_for(lambda: status(b)["spool"]["depth"] >= 200, what="both runs spooled")
    srv = servers(tmp_path, port=port)
    last = status(b)["spool"]["last_seq"]
    wait_delivered(srv, aid, last)
    evs = all_events(srv, aid)
    assert evs[0]["spool_seq"] == 1 and evs[-1]["spool_seq"] == last
    check_stream(evs, 200)
    types = [e["event"]["type"] for e in evs]
    assert types.count("AGENT_START_MESSAGE") == 2
    assert types.count("AGENT_STOP_MESSAGE") == (1 if how == "TERM" else 0)
    assert srv.agent(aid)["lost"] == 0


def test_spool_cap_overflow_exact_lost_count(tmp_path, servers, agents, test_events):
    port = free_port()
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port, spool_max="64KiB")))
    wait_for(lambda: status(a).get("attempts", 0) >= 1, what="first attempt")
    gen(a, 3000)
    s = wait_for(lambda: (lambda x: x if x["spool"]["last_seq"] >= 3001 else None)(status(a)), what="spooled")
    dropped = s["spool"]["events_dropped"]
    assert dropped > 0 and s["spool"]["bytes"] <= 64 * 1024
    srv = servers(tmp_path, port=port)
    aid = s["agent_id"]
    last = s["spool"]["last_seq"]
    d = wait_delivered(srv, aid, last)
    evs = all_events(srv, aid)
    # every spool_seq is either received or declared lost, exactly
    assert d["events_received"] + d["lost"] == last
    assert d["lost"] == dropped == status(a)["spool"]["events_dropped"]
    assert all(x["reason"] == "spool_full" for x in d["lost_events"])
    assert len({e["spool_seq"] for e in evs}) == len(evs) == d["events_received"]
    assert evs[-1]["spool_seq"] == last
    assert d["duplicates"] == 0


def test_bad_token_then_fixed(tmp_path, servers, agents):
    srv = servers(tmp_path)
    port = int(srv.target.rsplit(":", 1)[1])
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port, token="wrong-token")))
    a.log.wait_line(r"oneshield: 127\.0\.0\.1:\d+ refused this agent's token \(UNAUTHENTICATED")
    s = wait_for(lambda: (lambda x: x if x["state"] == "unauthenticated" else None)(status(a)), what="state")
    assert s["auth_failures"] >= 1 and not s["connected"] and "wrong-token" not in a.log.text()
    assert srv.agents() == []
    assert a.get("/v1/status").status_code == 200
    # the token file is read at every attempt: fixing it is enough
    write_token(os.path.join(str(tmp_path), "mgmt-token"), TOKEN)
    aid = wait_connected(a)["agent_id"]
    srv.wait_agent(aid, lambda x: x["events_received"] >= 1, "events after the fix")


def test_token_file_readable_by_others_is_refused(tmp_path, servers, agents):
    srv = servers(tmp_path)
    port = int(srv.target.rsplit(":", 1)[1])
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port)))
    wait_connected(a)
    a.stop()
    os.chmod(os.path.join(str(tmp_path), "mgmt-token"), 0o644)
    b = agents(tmp_path, open(a.config_path).read())
    b.log.wait_line(r"oneshield: token file \S+: mode 0644 lets others read it; chmod 600")
    s = status(b)
    assert not s["connected"] and "chmod 600" in s["last_error"]


@pytest.mark.parametrize("setting", ["garbage_after", "close_after", "unknown_command"])
def test_misbehaving_server(tmp_path, servers, agents, test_events, setting):
    srv = servers(tmp_path)
    port = int(srv.target.rsplit(":", 1)[1])
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port)))
    aid = wait_connected(a)["agent_id"]
    wait_for(lambda: status(a)["spool"]["depth"] == 0, what="start delivered")
    if setting == "unknown_command":
        srv.settings(unknown_command=True)
        srv.post(f"/v1/agents/{aid}/disconnect", {})
        wait_connected(a, connects=2)
        cmds = wait_for(lambda: [c for c in srv.get(f"/v1/agents/{aid}/commands").json()["commands"]
                                 if c["kind"] == "unknown" and c["state"] == "done"], what="unknown answered")
        assert cmds[0]["result"]["code"] == 12  # UNIMPLEMENTED, and the stream lives on
        r = srv.command(aid, "ping")
        assert r["state"] == "done" and r["result"]["code"] == 0
        assert status(a)["connects"] == 2
    else:
        srv.settings(**{setting: 5})
        gen(a, 40)
        wait_for(lambda: status(a)["connects"] >= 3, what="reconnects after the server's misbehaviour")
        srv.settings(**{setting: 0})
        last = wait_for(lambda: (lambda x: x["spool"]["last_seq"] if x["spool"]["last_seq"] >= 41 else 0)(status(a)),
                        what="spooled")
        wait_delivered(srv, aid, last)
        evs = all_events(srv, aid)
        check_stream(evs, 40)
        if setting == "garbage_after":
            a.log.wait_line(r"no ServerMessage")
    assert a.get("/v1/status").status_code == 200 and a.proc.poll() is None


def test_commands_status_config_ping_investigation(tmp_path, servers, agents):
    srv = servers(tmp_path)
    port = int(srv.target.rsplit(":", 1)[1])
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port)))
    aid = wait_connected(a)["agent_id"]
    r = srv.command(aid, "ping")
    assert r["state"] == "done" and r["result"]["code"] == 0
    r = srv.command(aid, "get_status")
    assert r["result"]["code"] == 0 and r["result"]["payload_kind"] == "status"
    assert r["result"]["status"]["pid"] == a.proc.pid
    r = srv.command(aid, "get_config")
    assert r["result"]["code"] == 0 and r["result"]["payload_kind"] == "config"
    r = srv.command(aid, "get_config_file", {"path": "/etc/passwd"})
    assert r["result"]["code"] in (7, 9)  # outside the allowed dirs / nothing managed
    r = srv.command(aid, "start_syscall_investigation", {"duration_s": 1})
    # no onepanel here: refused the way the Agent service refuses it
    assert r["result"]["code"] == 9 and r["result"]["message"]
    r = srv.command(aid, "get_syscall_investigation")
    assert r["result"]["code"] == 0 and r["result"]["payload_kind"] == "syscall_investigation"


def test_server_commanded_apply_end_to_end(tmp_path, servers, agents, sim):
    srv = servers(tmp_path)
    port = int(srv.target.rsplit(":", 1)[1])
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim), extra=oneshield_yaml(tmp_path, port)))
    aid = wait_connected(a)["agent_id"]
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    new = open(sim.conf).read() + "message via-oneshield;\n"
    r = srv.command(aid, "apply_config", {"files": [{"path": sim.conf, "content":
                                                       __import__("base64").b64encode(new.encode()).decode()}]})
    res = r["result"]
    assert r["state"] == "done" and res["code"] == 0, res
    ac = res["apply_config"]
    assert ac["status"] == "applied" and ac["reloaded"]
    assert ac["files"][0]["sha256_after"] == hashlib.sha256(new.encode()).hexdigest()
    assert open(sim.conf).read() == new
    # its events reach the server too, with the apply's correlation id
    corr = ac["correlation_id"]

    def applied():
        evs = all_events(srv, aid)
        return [e for e in evs if e["event"].get("correlation_id") == corr
                and e["event"]["type"] == "CONFIG_APPLY_SUCCESS_MESSAGE"]
    wait_for(applied, what="CONFIG_APPLY_SUCCESS at the server")
    a.log.wait_line(re.escape(f"oneshield:127.0.0.1:{port}"))  # the audit line names the requester
    # an invalid one is refused with its result, and nothing changed
    before = open(sim.conf).read()
    r = srv.command(aid, "apply_config", {"files": [{"path": sim.conf, "content":
                                                       __import__("base64").b64encode(b"garbage {{{\n").decode()}]})
    assert r["result"]["code"] == 9 and r["result"]["apply_config"]["status"] == "invalid"
    assert open(sim.conf).read() == before
    # and one outside the allowed dirs
    r = srv.command(aid, "apply_config", {"files": [{"path": "/etc/passwd", "content": ""}]})
    assert r["result"]["code"] == 7


def test_sighup_moves_to_another_server(tmp_path, servers, agents):
    s1 = servers(tmp_path)
    s2 = servers(tmp_path, name="server2")
    p1 = int(s1.target.rsplit(":", 1)[1])
    p2 = int(s2.target.rsplit(":", 1)[1])
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, p1)))
    aid = wait_connected(a)["agent_id"]
    text = open(a.config_path).read().replace(f"127.0.0.1:{p1}", f"127.0.0.1:{p2}")
    with open(a.config_path, "w") as f:
        f.write(text)
    a.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: status(a)["address"] == f"127.0.0.1:{p2}" and status(a)["connected"], what="moved")
    # the new server gets the reload event, with the same agent id and spool
    s2.wait_agent(aid, lambda x: x["events_received"] >= 1, "events at the new server")
    types = [e["event"]["type"] for e in all_events(s2, aid)]
    assert "AGENT_CONFIG_RELOADED_MESSAGE" in types
    # the restarted client did not spool this run's events a second time
    jseqs = [e["event"]["seq"] for s in (s1, s2) for e in all_events(s, aid)]
    assert len(jseqs) == len(set(jseqs)), jseqs


def test_no_address_means_off(tmp_path, agents):
    a = agents(tmp_path, agent_yaml())
    assert a.get("/v1/status").json()["oneshield"] == {"enabled": False}
    assert "oneshield_agent_mgmt_connected" not in a.get("/metrics").text


def test_spool_dir_is_private(tmp_path, servers, agents):
    srv = servers(tmp_path)
    port = int(srv.target.rsplit(":", 1)[1])
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port)))
    wait_connected(a)
    st = os.stat(f"{tmp_path}/state")
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert stat.S_IMODE(os.stat(f"{tmp_path}/state/events").st_mode) == 0o700


# ---- keepalive: a connection that dies without a reset ----

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class FreezeProxy:
    """A TCP proxy between the agent and the server that can be frozen: it
    stops forwarding in both directions but keeps every socket open, so no
    FIN or RST tells either side (a host powered off, a NAT or firewall that
    forgot the flow). Connections open at the freeze, and those accepted
    while frozen, stay dead for good; those accepted after thaw() pass.
    It reads the plaintext HTTP/2 frame headers going through and counts
    PINGs (the agent's, and the server's acks of them)."""

    def __init__(self, upstream_port):
        self.upstream = ("127.0.0.1", upstream_port)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.frozen = False
        self.closed = False
        self.socks = []          # every socket, closed by close() only
        self.live = []           # forwarding connections: [dead flag holder]
        self.accepted = 0
        self.pings = 0           # PING frames from the agent
        self.ping_acks = 0       # PING acks from the server
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                if self.closed:
                    c.close()
                    return
                self.accepted += 1
                self.socks.append(c)
                if self.frozen:
                    continue     # held: accepted, never forwarded
            u = socket.create_connection(self.upstream)
            conn = {"dead": False}
            with self.lock:
                self.socks.append(u)
                self.live.append(conn)
            threading.Thread(target=self._pump, args=(c, u, conn, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, conn, False), daemon=True).start()

    def _pump(self, src, dst, conn, from_agent):
        buf = b""
        preface = from_agent
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            with self.lock:
                if conn["dead"] or self.closed:
                    return       # frozen: drop it, keep both sockets open
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    return
                buf += data
                if preface and len(buf) >= len(H2_PREFACE):
                    buf, preface = buf[len(H2_PREFACE):], False
                while not preface and len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                    ftype, flags = buf[3], buf[4]
                    if ftype == 6 and from_agent and not flags & 1:
                        self.pings += 1
                    elif ftype == 6 and not from_agent and flags & 1:
                        self.ping_acks += 1
                    buf = buf[9 + int.from_bytes(buf[:3], "big"):]

    def freeze(self):
        with self.lock:
            self.frozen = True
            for conn in self.live:
                conn["dead"] = True

    def thaw(self):
        with self.lock:
            self.frozen = False

    def counts(self):
        with self.lock:
            return self.pings, self.ping_acks

    def close(self):
        with self.lock:
            self.closed = True
            socks = self.socks + [self.lsock]
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture
def proxies():
    started = []

    def make(upstream_port):
        p = FreezeProxy(upstream_port)
        started.append(p)
        return p

    yield make
    for p in started:
        p.close()


def keepalive_yaml(tmp_path, port, time="1s", timeout="1s", report_interval="1s"):
    text = oneshield_yaml(tmp_path, port).replace("report_interval: 1s", f"report_interval: {report_interval}")
    return text + f"  keepalive_time: {time}\n  keepalive_timeout: {timeout}\n"


def test_keepalive_healthy_idle_stream_stays_up(tmp_path, servers, agents, proxies):
    """A stream idle both ways but for the agent's PING every second: the
    worst case for a server's ping policy (gRPC's default strikes a ping
    sooner than 5 min after the last one unless data went out in between,
    and sends GOAWAY too_many_pings at the third strike, i.e. the fourth
    ping). The reference server acks them and lets them be: one stream,
    one TCP connection, across six keepalive intervals."""
    srv = servers(tmp_path)
    px = proxies(int(srv.target.rsplit(":", 1)[1]))
    a = agents(tmp_path, agent_yaml(extra=keepalive_yaml(tmp_path, px.port, report_interval="1h")))
    aid = wait_connected(a)["agent_id"]
    # after the start event's ack and the first metrics report nothing
    # flows but pings: none of them is a BDP probe answering data
    srv.wait_agent(aid, lambda x: x["metrics_received"] >= 1 and x["acked"] >= 1, "start delivered")
    wait_for(lambda: status(a)["spool"]["depth"] == 0, what="start acked")
    pings0, acks0 = px.counts()

    def still_up():
        s = status(a)
        assert s["connected"] and s["connects"] == 1, s
        p, k = px.counts()
        return p >= pings0 + 6 and k >= acks0 + 6
    wait_for(still_up, timeout=2 * DEADLINE, what="6 keepalive pings acked on the one stream")
    assert px.accepted == 1 and srv.agent(aid)["connected"]
    assert "oneshield: stream to" not in a.log.text() and "last_error" not in status(a)


def test_keepalive_refused_by_a_stock_server_says_so(tmp_path, servers, agents):
    """The same idle stream against a server with gRPC's default ping
    policy: it is cut off with GOAWAY too_many_pings, and the agent says
    which setting is at odds instead of a bare status."""
    srv = servers(tmp_path, "--stock-ping-policy")
    port = int(srv.target.rsplit(":", 1)[1])
    a = agents(tmp_path, agent_yaml(extra=keepalive_yaml(tmp_path, port, report_interval="1h")))
    wait_connected(a)
    a.log.wait_line(r"oneshield: stream to 127\.0\.0\.1:\d+ ended: the server refuses a PING every 1000 ms "
                    r"\(too_many_pings\): raise oneshield\.keepalive_time or let the server permit it; reconnecting")
    assert "raise oneshield.keepalive_time" in status(a)["last_error"]
    wait_connected(a, connects=2)  # and it goes on reconnecting


def test_keepalive_finds_a_silently_dead_connection(tmp_path, servers, agents, proxies, test_events):
    """The path between agent and server goes silent, no FIN, no RST, and
    the server's side of the stream stays open: keepalive gives the stream
    up, the status says why, and once the path works again the agent
    reconnects and the event sent into the void arrives, once."""
    srv = servers(tmp_path)
    px = proxies(int(srv.target.rsplit(":", 1)[1]))
    a = agents(tmp_path, agent_yaml(extra=keepalive_yaml(tmp_path, px.port)))
    aid = wait_connected(a)["agent_id"]
    wait_for(lambda: status(a)["spool"]["depth"] == 0, what="start delivered")
    px.freeze()
    gen(a, 1)  # journaled while the stream still looks up: sent into the void
    last = wait_for(lambda: (lambda x: x if x >= 2 else None)(status(a)["spool"]["last_seq"]), what="spooled")
    s = wait_for(lambda: (lambda x: x if not x["connected"] and "keepalive timed out" in x.get("last_error", "")
                          else None)(status(a)), what="the agent gives the dead stream up")
    assert s["state"] in ("backoff", "connecting") and s["connects"] == 1
    assert "no PING ack within 1000 ms" in s["last_error"]
    a.log.wait_line(r"oneshield: stream to 127\.0\.0\.1:\d+ ended: keepalive timed out \(no PING ack within "
                    r"1000 ms: the server or the network is gone\); reconnecting")
    assert s["spool"]["acked_seq"] < last
    # the server never got it, and its side of the old stream was never closed
    assert not any(e["event"]["type"] == "TEST_EVENT_MESSAGE" for e in all_events(srv, aid))
    assert srv.agent(aid)["connected"]
    px.thaw()
    wait_connected(a, connects=2)
    d = wait_delivered(srv, aid, last)
    evs = all_events(srv, aid)
    assert sum(1 for e in evs if e["event"]["type"] == "TEST_EVENT_MESSAGE") == 1
    check_stream(evs, 1)
    assert d["duplicates"] == 0 and d["lost"] == 0
    wait_for(lambda: status(a)["spool"]["depth"] == 0, what="spool drained")


# ---- TLS to the management plane (issue 8 §2: the One Shield client) ----

from test_tls import pki  # noqa: E402,F401 (the session fixture: CA, server and client certificates)


def tls_yaml(pki, **kw):
    lines = ["  tls:"]
    for k, v in kw.items():
        lines.append(f"    {k}: {v}")
    return "\n".join(lines) + "\n"


def tls_server(servers, tmp_path, pki, mtls=False, name="server"):
    args = ["--tls-cert", pki.path("server.pem"), "--tls-key", pki.path("server.key")]
    if mtls:
        args += ["--tls-client-ca", pki.path("ca.pem")]
    return servers(tmp_path, *args, name=name)


def test_tls_verified_server(tmp_path, servers, agents, pki):
    srv = tls_server(servers, tmp_path, pki)
    port = int(srv.target.rsplit(":", 1)[1])
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port) + tls_yaml(pki, ca_file=pki.path("ca.pem"))))
    aid = wait_connected(a)["agent_id"]
    srv.wait_agent(aid, lambda x: x["events_received"] >= 1, "events over TLS")


def test_tls_untrusted_server_is_refused(tmp_path, servers, agents, pki):
    srv = tls_server(servers, tmp_path, pki)
    port = int(srv.target.rsplit(":", 1)[1])
    # trusting another CA: the handshake fails, nothing is sent, the reason is logged once
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port) +
                                    tls_yaml(pki, ca_file=pki.path("other_ca.pem"))))
    a.log.wait_line(r"oneshield: cannot connect to 127\.0\.0\.1:\d+ \(status 14: .*[Hh]andshake")
    s = wait_for(lambda: (lambda x: x if x["attempts"] >= 2 else None)(status(a)), what="more attempts")
    assert not s["connected"] and s["connects"] == 0
    assert srv.agents() == []


def test_tls_server_name_must_match(tmp_path, servers, agents, pki):
    srv = tls_server(servers, tmp_path, pki)
    port = int(srv.target.rsplit(":", 1)[1])
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port) +
                                    tls_yaml(pki, ca_file=pki.path("ca.pem"), server_name="oneshield.example")))
    a.log.wait_line(r"oneshield: cannot connect to 127\.0\.0\.1:\d+ \(status 14")
    assert srv.agents() == [] and not status(a)["connected"]
    # the name the certificate carries works
    text = open(a.config_path).read().replace("oneshield.example", "localhost")
    with open(a.config_path, "w") as f:
        f.write(text)
    a.proc.send_signal(signal.SIGHUP)
    aid = wait_connected(a)["agent_id"]
    srv.wait_agent(aid, lambda x: x["events_received"] >= 1, "events after the name fix")


def test_mtls_client_certificate(tmp_path, servers, agents, pki):
    srv = tls_server(servers, tmp_path, pki, mtls=True)
    port = int(srv.target.rsplit(":", 1)[1])
    # without a client certificate: refused in the handshake
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port) + tls_yaml(pki, ca_file=pki.path("ca.pem"))))
    a.log.wait_line(r"oneshield: cannot connect to 127\.0\.0\.1:\d+ \(status 14")
    assert srv.agents() == []
    a.stop()
    # with one from the trusted CA: connected
    b = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port) + tls_yaml(
        pki, ca_file=pki.path("ca.pem"), cert_file=pki.path("client.pem"), key_file=pki.path("client.key"))))
    aid = wait_connected(b)["agent_id"]
    srv.wait_agent(aid, lambda x: x["events_received"] >= 1, "events over mTLS")


def test_tls_key_readable_by_others_is_refused(tmp_path, servers, agents, pki):
    srv = tls_server(servers, tmp_path, pki, mtls=True)
    port = int(srv.target.rsplit(":", 1)[1])
    key = os.path.join(str(tmp_path), "client.key")
    shutil.copy(pki.path("client.key"), key)
    os.chmod(key, 0o644)
    a = agents(tmp_path, agent_yaml(extra=oneshield_yaml(tmp_path, port) + tls_yaml(
        pki, ca_file=pki.path("ca.pem"), cert_file=pki.path("client.pem"), key_file=key)))
    a.log.wait_line(r"oneshield: TLS: \S+client\.key: permissions 0644 are too open")
    assert "too open" in status(a)["last_error"] and srv.agents() == []
