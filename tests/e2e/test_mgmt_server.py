"""The reference management server (tools/mgmt-server/oneshield-mgmt-server)
driven by a fake agent: a Python client of ManagementPlane.Connect built on
the stubs generated from proto/oneshield/mgmt/v1/mgmt.proto (grpcstubs).

What the server promises: hello answered by hello_ack naming what it has;
events recorded once each by spool_seq, in order, with gaps noticed; lost
ranges recorded and covered by acks; commands sent through the control API
and their results matched by id; bad tokens refused with UNAUTHENTICATED;
many agents at once; and each misbehaviour option does what it says.

Every wait is a poll with a deadline (conftest.wait_for); the order of
messages on one stream is what makes "no ack for X" checkable: the server
writes in order, so once a later ack has arrived an earlier one would have
too."""
import base64
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import urllib.parse

import grpc
import pytest
import requests

from conftest import DEADLINE, LogFile, ROOT, wait_for
from grpcstubs import mgmt_stubs, stubs

apb, _ = stubs()
mpb, mpb_grpc = mgmt_stubs()

SERVER = os.path.join(ROOT, "tools", "mgmt-server", "oneshield-mgmt-server")
PYTHON = "/usr/bin/python3"
TOKEN = "s3cret-token-for-tests"
METHOD = "/oneshield.mgmt.v1.ManagementPlane/Connect"
SC = grpc.StatusCode


def q(s):
    """An agent id as one path segment."""
    return urllib.parse.quote(s, safe="")


# ---- the server ----

class MgmtServer:
    def __init__(self, tmp_path, *args, token=True, name="server", port=0):
        self.dir = os.path.join(str(tmp_path), name)
        os.makedirs(self.dir, exist_ok=True)
        self.token_file = os.path.join(self.dir, "tokens")
        with open(self.token_file, "w") as f:
            f.write(f"# accepted tokens\n{TOKEN}\nsecond-token\n")
        cmd = [PYTHON, SERVER, "--listen", f"127.0.0.1:{port}", "--control", "127.0.0.1:0", *args]
        if token:
            cmd += ["--token-file", self.token_file]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.log = LogFile(self.proc.stderr)
        self.out = LogFile(self.proc.stdout)
        m = self.log.wait_line(r"gRPC listening on (\S+):(\d+) ")
        self.target = f"{m.group(1)}:{m.group(2)}"
        c = self.log.wait_line(r"control API listening on (http://\S+)")
        self.base = c.group(1)

    def get(self, path, **kw):
        r = requests.get(self.base + path, timeout=DEADLINE, **kw)
        return r

    def post(self, path, body, **kw):
        return requests.post(self.base + path, json=body, timeout=DEADLINE + 10, **kw)

    def agent(self, aid):
        r = self.get(f"/v1/agents/{q(aid)}")
        assert r.status_code == 200, r.text
        return r.json()

    def agents(self):
        return self.get("/v1/agents").json()["agents"]

    def events(self, aid, after=0):
        r = self.get(f"/v1/agents/{q(aid)}/events", params={"after": after})
        assert r.status_code == 200, r.text
        return r.json()["events"]

    def command(self, aid, kind, args=None, wait=True):
        r = self.post(f"/v1/agents/{q(aid)}/commands", {"kind": kind, "args": args or {}, "wait": wait,
                                                     "timeout": DEADLINE})
        assert r.status_code == 200, r.text
        return r.json()

    def settings(self, **kw):
        r = self.post("/v1/settings", kw)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_agent(self, aid, pred, what):
        return wait_for(lambda: (lambda a: a if pred(a) else None)(self.agent(aid)), what=what)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not exit after SIGTERM:\n" + self.log.text())


@pytest.fixture
def servers():
    started = []

    def make(tmp_path, *args, **kw):
        s = MgmtServer(tmp_path, *args, **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        print(f"---- server stderr (exit {s.proc.returncode}) ----\n{s.log.text()}")
    for s in started:
        assert "Traceback" not in s.log.text(), s.log.text()


# ---- the fake agent ----

def default_answer(agent, m):
    """How the fake agent answers a command (a CommandResult), or None for no
    answer at all."""
    kind = m.WhichOneof("kind")
    r = mpb.CommandResult(command_id=m.command_id, duration_ms=0.5)
    if kind == "ping":
        pass
    elif kind == "get_status":
        r.status.CopyFrom(apb.Status(version="fake-1.0", hostname=agent.hostname, mode="procfs"))
    elif kind == "get_config":
        r.config.CopyFrom(apb.ConfigListing(files=[apb.ConfigFileInfo(path="/etc/onepanel/onepanel.conf",
                                                                      size=12, mode=0o644)]))
    elif kind == "get_config_file":
        r.config_file.CopyFrom(apb.ConfigFile(path=m.get_config_file.path, content=b"listen 80;\n"))
    elif kind == "apply_config":
        r.apply_config.CopyFrom(apb.ApplyConfigResult(
            correlation_id="corr-1", status="dry_run_ok" if m.apply_config.dry_run else "applied",
            files=[apb.FileResult(path=f.path, action="delete" if f.WhichOneof("change") == "delete" else "write")
                   for f in m.apply_config.files]))
    elif kind == "start_syscall_investigation":
        r.syscall_investigation.CopyFrom(apb.SyscallInvestigation(
            state="running", requested_s=m.start_syscall_investigation.duration_s))
    elif kind == "get_syscall_investigation":
        r.syscall_investigation.CopyFrom(apb.SyscallInvestigation(state="idle"))
    else:  # a kind from a later revision
        r.code = SC.UNIMPLEMENTED.value[0]
        r.message = "unknown command kind"
    return r


class FakeAgent:
    """One Connect stream. Messages to send go through a queue that the
    request iterator drains; what the server sends is collected by a thread.
    Commands are answered by `answer` (default_answer)."""

    def __init__(self, target, agent_id, token=TOKEN, hostname="host-1", spool_id="spool-1",
                 last_acked=0, hello=True, answer=default_answer, metadata=None, **hello_fields):
        self.agent_id, self.hostname, self.spool_id = agent_id, hostname, spool_id
        self.answer = answer
        self.channel = grpc.insecure_channel(target)
        self.stub = mpb_grpc.ManagementPlaneStub(self.channel)
        self.q = queue.Queue()
        self.lock = threading.Lock()
        self.received = []
        self.code = None
        self.details = None
        self.done = threading.Event()
        md = metadata if metadata is not None else [("authorization", f"Bearer {token}")]
        self.call = self.stub.Connect(self._requests(), metadata=md)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        if hello:
            self.send(mpb.AgentMessage(hello=mpb.Hello(
                agent_id=agent_id, hostname=hostname, agent_version="fake-1.0", kernel_release="6.1.0-test",
                arch="x86_64", mode="procfs", spool_id=spool_id, last_acked_spool_seq=last_acked,
                **hello_fields)))

    def _requests(self):
        while True:
            m = self.q.get()
            if m is None:
                return
            yield m

    def _read(self):
        try:
            for m in self.call:
                with self.lock:
                    self.received.append(m)
                if m.command_id and self.answer:
                    r = self.answer(self, m)
                    if r is not None:
                        self.send(mpb.AgentMessage(command_result=r))
            self.code = SC.OK
        except grpc.RpcError as e:
            self.code, self.details = e.code(), e.details()
        finally:
            self.done.set()

    # sending
    def send(self, m):
        self.q.put(m)

    def event(self, spool_seq, seq=None, etype="TEST_EVENT_MESSAGE", **kw):
        ev = apb.Event(seq=seq if seq is not None else spool_seq, type=apb.EventType.Value(etype),
                       level=apb.LEVEL_INFO, message=f"event {spool_seq}", time_unix_nano=1_700_000_000_000_000_000,
                       **kw)
        self.send(mpb.AgentMessage(event=mpb.SpooledEvent(spool_seq=spool_seq, event=ev)))

    def events(self, seqs):
        for s in seqs:
            self.event(s)

    def lost(self, lo, hi, reason="spool_full"):
        self.send(mpb.AgentMessage(events_lost=mpb.EventsLost(from_spool_seq=lo, to_spool_seq=hi,
                                                              count=hi - lo + 1, reason=reason)))

    def close(self):
        """Half-close: the agent has nothing more to say."""
        self.q.put(None)

    def cancel(self):
        self.call.cancel()
        self.q.put(None)

    # what came back
    def messages(self, kind=None):
        with self.lock:
            return [m for m in self.received if kind is None or m.WhichOneof("kind") == kind]

    def acks(self):
        return [m.ack.spool_seq for m in self.messages("ack")]

    def hello_ack(self):
        m = wait_for(lambda: self.messages("hello_ack"), what="hello_ack")[0]
        return m.hello_ack

    def wait_ack(self, n):
        return wait_for(lambda: any(a >= n for a in self.acks()), what=f"ack {n} (have {self.acks()})")

    def wait_end(self):
        assert self.done.wait(DEADLINE), "stream did not end"
        return self.code

    def shutdown(self):
        self.cancel()
        self.done.wait(DEADLINE)
        self.channel.close()


@pytest.fixture
def fakes():
    made = []

    def make(*a, **kw):
        f = FakeAgent(*a, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.shutdown()


def seqs(events):
    return [e["spool_seq"] for e in events]


# ---- hello ----

def test_hello_ack_and_agent_recorded(tmp_path, servers, fakes):
    s = servers(tmp_path, "--report-interval", "2.5")
    op = apb.OnepanelStatus(configured=True, state="running", pid=4242, binary="/usr/sbin/onepanel")
    a = fakes(s.target, "agent-a", hostname="web-1", labels={"region": "eu", "role": "edge"}, onepanel=op,
              onepanel_version="1.2.3", last_spool_seq=0)
    ha = a.hello_ack()
    assert ha.resume_after_spool_seq == 0
    assert ha.report_interval_ms == 2500
    assert ha.server_version.startswith("oneshield-mgmt-server ")
    [m] = a.messages()  # nothing else was sent
    assert m.command_id == ""

    [row] = s.agents()
    assert row["agent_id"] == "agent-a" and row["hostname"] == "web-1" and row["connected"] is True
    d = s.agent("agent-a")
    h = d["hello"]
    assert h["labels"] == {"region": "eu", "role": "edge"}
    assert h["onepanel"]["pid"] == 4242 and h["onepanel"]["state"] == "running"
    assert h["onepanel_version"] == "1.2.3" and h["kernel_release"] == "6.1.0-test"
    assert h["spool_id"] == "spool-1" and d["spool_id"] == "spool-1"
    assert d["connections"] == 1

    a.close()
    assert a.wait_end() == SC.OK
    s.wait_agent("agent-a", lambda d: not d["connected"], "disconnected")
    assert s.get("/v1/agents/nobody").status_code == 404
    assert s.stop() == 0


# ---- events: acks, dedupe, gaps, resume ----

def test_events_acked_in_order_and_deduped_across_reconnect(tmp_path, servers, fakes):
    s = servers(tmp_path)
    a = fakes(s.target, "agent-b")
    assert a.hello_ack().resume_after_spool_seq == 0
    a.events([1, 2, 3, 4, 5])
    a.wait_ack(5)
    assert a.acks() == [1, 2, 3, 4, 5]
    # duplicates on the same stream: recorded once, nothing new acked
    a.events([3, 5])
    s.wait_agent("agent-b", lambda d: d["duplicates"] == 2, "2 duplicates")
    a.event(6)
    a.wait_ack(6)
    assert a.acks() == [1, 2, 3, 4, 5, 6]
    a.close()
    assert a.wait_end() == SC.OK

    # reconnect; the agent missed the last acks (it says 3): the server says
    # what it has, 6; the agent resends out of order and with a duplicate
    b = fakes(s.target, "agent-b", last_acked=3)
    assert b.hello_ack().resume_after_spool_seq == 6
    b.events([8, 7, 7, 5, 9])
    b.wait_ack(9)
    assert b.acks() == [8, 9]  # 8 came before 7: the ack waited for 7
    d = s.agent("agent-b")
    assert d["last_seq"] == 9 and d["gaps"] == []
    assert [(g["from"], g["to"], g["received"]) for g in d["gap_history"]] == [(7, 7, 8)]
    assert d["duplicates"] == 4 and d["events_received"] == 9
    assert d["connections"] == 2
    evs = s.events("agent-b")
    assert seqs(evs) == list(range(1, 10))
    assert [e["event"]["message"] for e in evs] == [f"event {n}" for n in range(1, 10)]
    assert evs[0]["event"]["type"] == "TEST_EVENT_MESSAGE" and evs[0]["event"]["level"] == "LEVEL_INFO"
    assert seqs(s.events("agent-b", after=6)) == [7, 8, 9]
    assert re.search(r"agent agent-b: gap: spool seq 7\.\.7 missing \(received 8\)", s.log.text())


def test_ack_is_cumulative_and_stops_at_a_gap(tmp_path, servers, fakes):
    s = servers(tmp_path)
    a = fakes(s.target, "agent-gap")
    a.hello_ack()
    a.events([1, 4])
    a.wait_ack(1)
    s.wait_agent("agent-gap", lambda d: d["events_received"] == 2, "2 events")
    d = s.agent("agent-gap")
    assert d["gaps"] == [[2, 3]] and d["last_seq"] == 1 and d["max_seq"] == 4
    [row] = s.agents()
    assert row["gaps"] == [[2, 3]]
    a.event(3)
    a.event(2)
    a.wait_ack(4)
    # 4 arrived while 2..3 were missing, 3 while 2 was: only 2 moved the ack
    assert a.acks() == [1, 4]
    d = s.agent("agent-gap")
    assert d["gaps"] == [] and d["last_seq"] == 4
    assert seqs(s.events("agent-gap")) == [1, 2, 3, 4]


def test_journal_seq_restart_does_not_matter(tmp_path, servers, fakes):
    # the journal's seq begins again at 1 after an agent restart; spool_seq
    # does not, and only spool_seq counts
    s = servers(tmp_path)
    a = fakes(s.target, "agent-j")
    a.hello_ack()
    a.event(1, seq=41)
    a.event(2, seq=42)
    a.wait_ack(2)
    a.close()
    a.wait_end()
    b = fakes(s.target, "agent-j", last_acked=2)
    assert b.hello_ack().resume_after_spool_seq == 2
    b.event(3, seq=1, etype="AGENT_START_MESSAGE")
    b.event(4, seq=2)
    b.wait_ack(4)
    evs = s.events("agent-j")
    assert [(e["spool_seq"], e["event"]["seq"]) for e in evs] == [(1, 41), (2, 42), (3, 1), (4, 2)]
    assert evs[2]["event"]["type"] == "AGENT_START_MESSAGE"
    assert s.agent("agent-j")["duplicates"] == 0


def test_events_lost_recorded_and_acked(tmp_path, servers, fakes):
    s = servers(tmp_path)
    a = fakes(s.target, "agent-l")
    a.hello_ack()
    a.events([1, 2])
    a.lost(3, 5)
    a.event(6)
    a.wait_ack(6)
    assert a.acks() == [1, 2, 5, 6]
    d = s.agent("agent-l")
    assert d["lost"] == 3 and d["gaps"] == [] and d["gap_history"] == []
    [lr] = d["lost_events"]
    assert (lr["from_spool_seq"], lr["to_spool_seq"], lr["count"], lr["reason"]) == (3, 5, 3, "spool_full")
    assert seqs(s.events("agent-l")) == [1, 2, 6]
    assert re.search(r"agent agent-l: 3 event\(s\) lost by the agent: spool seq 3\.\.5 \(spool_full\)",
                     s.log.text())
    # the same range again (an agent that did not see the ack) is not counted twice
    a.lost(3, 5)
    a.event(7)
    a.wait_ack(7)
    d = s.agent("agent-l")
    assert d["lost"] == 3 and d["lost_duplicates"] == 1 and len(d["lost_events"]) == 1
    # a lost range ahead of what the server has leaves a gap until it is filled
    a.lost(10, 11)
    a.event(12)
    s.wait_agent("agent-l", lambda d: d["max_seq"] == 12, "max_seq 12")
    assert s.agent("agent-l")["gaps"] == [[8, 9]]
    a.events([8, 9])
    a.wait_ack(12)
    assert a.acks()[-2:] == [8, 12]
    assert s.agent("agent-l")["lost"] == 5


def test_hello_last_acked_is_adopted(tmp_path, servers, fakes):
    # a server without a record of the agent (new, or restarted without
    # --state-dir) takes the agent's word for what was delivered before
    s = servers(tmp_path)
    a = fakes(s.target, "agent-adopt", last_acked=40, last_spool_seq=42)
    assert a.hello_ack().resume_after_spool_seq == 40
    a.events([41, 42])
    a.wait_ack(42)
    d = s.agent("agent-adopt")
    assert d["adopted"] == [[1, 40]] and d["gaps"] == [] and d["gap_history"] == []
    assert d["hello"]["last_spool_seq"] == 42
    assert seqs(s.events("agent-adopt")) == [41, 42]


def test_new_spool_id_starts_a_new_record(tmp_path, servers, fakes):
    s = servers(tmp_path)
    a = fakes(s.target, "agent-sp", spool_id="old")
    a.hello_ack()
    a.events([1, 2, 3])
    a.wait_ack(3)
    a.close()
    a.wait_end()
    # the agent lost its spool: numbering begins again at 1
    b = fakes(s.target, "agent-sp", spool_id="new")
    assert b.hello_ack().resume_after_spool_seq == 0
    b.event(1)
    b.wait_ack(1)
    d = s.agent("agent-sp")
    assert d["spool_id"] == "new" and d["duplicates"] == 0 and d["events_received"] == 1
    [prev] = d["previous_spools"]
    assert prev["spool_id"] == "old" and prev["watermark"] == 3 and prev["events_received"] == 3


def test_state_dir_remembers_acked_seq_across_server_restart(tmp_path, servers, fakes):
    state = os.path.join(str(tmp_path), "state")
    s = servers(tmp_path, "--state-dir", state, name="s1")
    a = fakes(s.target, "agent/with spaces", spool_id="sp")
    a.hello_ack()
    a.events([1, 2, 3])
    a.wait_ack(3)
    assert s.stop() == 0
    assert a.wait_end() == SC.UNAVAILABLE  # the server said it is going away
    s2 = servers(tmp_path, "--state-dir", state, name="s2")
    assert [r["agent_id"] for r in s2.agents()] == ["agent/with spaces"]
    b = fakes(s2.target, "agent/with spaces", spool_id="sp")  # last_acked 0: the agent forgot
    assert b.hello_ack().resume_after_spool_seq == 3
    b.event(4)
    b.wait_ack(4)
    assert s2.agent("agent/with spaces")["gaps"] == []
    # without --state-dir nothing is kept
    assert s2.stop() == 0
    s3 = servers(tmp_path, name="s3")
    assert s3.agents() == []
    c = fakes(s3.target, "agent/with spaces", spool_id="sp")
    assert c.hello_ack().resume_after_spool_seq == 0
    assert os.listdir(os.path.join(str(tmp_path), "s3")) == ["tokens"]


# ---- metrics ----

def test_metrics_recorded(tmp_path, servers, fakes):
    s = servers(tmp_path)
    a = fakes(s.target, "agent-m")
    a.hello_ack()
    snap = apb.MetricsSnapshot(time_unix_nano=1_700_000_000_123_000_000, families=[
        apb.MetricFamily(name="onepanel_requests_total", type=apb.METRIC_TYPE_COUNTER, samples=[
            apb.Sample(labels=[apb.Label(name="status", value="200")], value=1234)]),
        apb.MetricFamily(name="onepanel_request_seconds", type=apb.METRIC_TYPE_HISTOGRAM, samples=[
            apb.Sample(histogram=apb.Histogram(sum=1.5, count=3, buckets=[
                apb.Bucket(upper_bound=0.1, cumulative_count=2), apb.Bucket(upper_bound=1, cumulative_count=3)]))])])
    a.send(mpb.AgentMessage(metrics=snap))
    snap.families[0].samples[0].value = 1300
    a.send(mpb.AgentMessage(metrics=snap))
    m = wait_for(lambda: (lambda r: r if r["count"] == 2 else None)(s.get("/v1/agents/agent-m/metrics").json()),
                 what="2 snapshots")
    assert m["snapshot"]["time_unix_nano"] == 1_700_000_000_123_000_000
    fams = {f["name"]: f for f in m["snapshot"]["families"]}
    assert fams["onepanel_requests_total"]["samples"][0]["value"] == 1300
    assert fams["onepanel_requests_total"]["type"] == "METRIC_TYPE_COUNTER"
    assert fams["onepanel_request_seconds"]["samples"][0]["histogram"]["count"] == 3
    assert s.agent("agent-m")["metrics_received"] == 2
    assert a.acks() == []  # metrics are not acknowledged


# ---- commands ----

def test_command_round_trip(tmp_path, servers, fakes):
    s = servers(tmp_path)
    a = fakes(s.target, "agent-c")
    a.hello_ack()

    r = s.command("agent-c", "ping")
    assert r["state"] == "done" and r["kind"] == "ping"
    assert r["result"]["command_id"] == r["id"] and r["result"]["code"] == 0
    assert r["result"]["payload_kind"] is None
    [m] = [m for m in a.messages() if m.command_id == r["id"]]
    assert m.WhichOneof("kind") == "ping"

    r = s.command("agent-c", "get_status")
    assert r["result"]["payload_kind"] == "status"
    assert r["result"]["status"]["version"] == "fake-1.0" and r["result"]["status"]["hostname"] == "host-1"

    content = b"listen 8080;\nworkers 2;\n"
    r = s.command("agent-c", "apply_config", {"files": [
        {"path": "/etc/onepanel/onepanel.conf", "content": base64.b64encode(content).decode()},
        {"path": "/etc/onepanel/old.conf", "delete": True}], "dry_run": True})
    assert r["result"]["apply_config"]["status"] == "dry_run_ok"
    assert [f["action"] for f in r["result"]["apply_config"]["files"]] == ["write", "delete"]
    [m] = [m for m in a.messages() if m.command_id == r["id"]]
    assert m.apply_config.files[0].content == content and m.apply_config.dry_run
    assert m.apply_config.files[1].WhichOneof("change") == "delete"

    r = s.command("agent-c", "start_syscall_investigation", {"duration_s": 2.5})
    assert r["result"]["syscall_investigation"]["state"] == "running"
    assert r["result"]["syscall_investigation"]["requested_s"] == 2.5
    r = s.command("agent-c", "get_config")
    assert r["result"]["config"]["files"][0]["mode"] == 0o644
    r = s.command("agent-c", "get_config_file", {"path": "/etc/onepanel/onepanel.conf"})
    assert base64.b64decode(r["result"]["config_file"]["content"]) == b"listen 80;\n"
    r = s.command("agent-c", "get_syscall_investigation")
    assert r["result"]["syscall_investigation"]["state"] == "idle"

    ids = [c["id"] for c in s.get("/v1/agents/agent-c/commands").json()["commands"]]
    assert len(ids) == len(set(ids)) == 7
    assert [m.command_id for m in a.messages() if m.command_id] == ids
    assert s.get(f"/v1/commands/{ids[0]}").json()["state"] == "done"

    # refusals
    assert s.post("/v1/agents/nobody/commands", {"kind": "ping"}).status_code == 404
    assert s.post("/v1/agents/agent-c/commands", {"kind": "reboot"}).status_code == 400
    bad = s.post("/v1/agents/agent-c/commands", {"kind": "start_syscall_investigation",
                                                  "args": {"duration_s": "long"}})
    assert bad.status_code == 400 and "duration_s" in bad.json()["error"]
    assert s.post("/v1/agents/agent-c/commands", "not an object").status_code == 400
    a.close()
    a.wait_end()
    s.wait_agent("agent-c", lambda d: not d["connected"], "disconnected")
    r = s.post("/v1/agents/agent-c/commands", {"kind": "ping"})
    assert r.status_code == 409 and "not connected" in r.json()["error"]


def test_command_in_doubt_then_answered_on_a_later_stream(tmp_path, servers, fakes):
    s = servers(tmp_path)
    a = fakes(s.target, "agent-d", answer=None)  # never answers
    a.hello_ack()
    r = s.command("agent-d", "apply_config", {"files": [{"path": "/x", "content": ""}]}, wait=False)
    cid = r["id"]
    wait_for(lambda: [m for m in a.messages() if m.command_id == cid], what="the command")
    wait_for(lambda: s.get(f"/v1/commands/{cid}").json()["state"] == "sent", what="state sent")
    a.cancel()
    assert a.wait_end() == SC.CANCELLED
    wait_for(lambda: s.get(f"/v1/commands/{cid}").json()["state"] == "in_doubt", what="state in_doubt")
    b = fakes(s.target, "agent-d", answer=None)
    b.hello_ack()
    b.send(mpb.AgentMessage(command_result=mpb.CommandResult(
        command_id=cid, code=SC.ABORTED.value[0], message="busy",
        apply_config=apb.ApplyConfigResult(status="busy"))))
    c = wait_for(lambda: (lambda c: c if c["state"] == "done" else None)(s.get(f"/v1/commands/{cid}").json()),
                 what="state done")
    assert c["result"]["code"] == SC.ABORTED.value[0] and c["result"]["apply_config"]["status"] == "busy"
    assert c["connection"] != 0
    # a result nobody asked for is kept aside
    b.send(mpb.AgentMessage(command_result=mpb.CommandResult(command_id="no-such-id")))
    b.send(mpb.AgentMessage(command_result=mpb.CommandResult(command_id=cid)))
    d = s.wait_agent("agent-d", lambda d: len(d["unexpected_results"]) == 2, "2 unexpected results")
    assert [u["why"] for u in d["unexpected_results"]] == ["unknown command id", "second result"]


# ---- authentication and refusals ----

@pytest.mark.parametrize("md", [
    [("authorization", "Bearer wrong")],
    [],
    [("authorization", f"Basic {TOKEN}")],
    [("authorization", f"Bearer {TOKEN}x")],
], ids=["wrong", "missing", "basic", "longer"])
def test_bad_token_unauthenticated(tmp_path, servers, fakes, md):
    s = servers(tmp_path)
    a = fakes(s.target, "agent-x", metadata=md)
    assert a.wait_end() == SC.UNAUTHENTICATED
    assert a.messages() == []
    assert s.agents() == []
    # the server carries on; every line of the token file is a token
    b = fakes(s.target, "agent-y", token="second-token")
    b.hello_ack()
    c = fakes(s.target, "agent-z", metadata=[("authorization", f"bearer {TOKEN}")])
    c.hello_ack()


def test_no_token_file_accepts_everyone(tmp_path, servers, fakes):
    s = servers(tmp_path, token=False)
    assert "no --token-file: every agent is accepted" in s.log.text()
    a = fakes(s.target, "agent-open", metadata=[])
    a.hello_ack()


def test_protocol_errors(tmp_path, servers, fakes):
    s = servers(tmp_path)
    a = fakes(s.target, "agent-p", hello=False)
    a.event(1)
    assert a.wait_end() == SC.FAILED_PRECONDITION
    assert "first message must be hello" in a.details
    b = fakes(s.target, "")
    assert b.wait_end() == SC.INVALID_ARGUMENT and "agent_id" in b.details
    c = fakes(s.target, "x" * 257)
    assert c.wait_end() == SC.INVALID_ARGUMENT
    d = fakes(s.target, "agent-p")
    d.hello_ack()
    d.send(mpb.AgentMessage(hello=mpb.Hello(agent_id="agent-p")))
    assert d.wait_end() == SC.INVALID_ARGUMENT and "second hello" in d.details
    e = fakes(s.target, "agent-q")
    e.hello_ack()
    e.event(0)
    assert e.wait_end() == SC.INVALID_ARGUMENT and "spool_seq 0" in e.details
    f = fakes(s.target, "agent-r")
    f.hello_ack()
    f.send(mpb.AgentMessage(events_lost=mpb.EventsLost(from_spool_seq=5, to_spool_seq=4)))
    assert f.wait_end() == SC.INVALID_ARGUMENT and "bad range" in f.details

    # garbage from an agent: refused with a clear message (a length past the
    # end; a field number 0, which Python's parser only warns about)
    ch = grpc.insecure_channel(s.target)
    call = ch.stream_stream(METHOD, request_serializer=lambda b: b, response_deserializer=None)
    for garbage in (b"\x0a\xff\xff\xff\x0fgarbage", b"\x00\xff\xff\xff"):
        it = call(iter([garbage]), metadata=[("authorization", f"Bearer {TOKEN}")])
        with pytest.raises(grpc.RpcError) as ei:
            list(it)
        assert ei.value.code() == SC.INVALID_ARGUMENT and "malformed AgentMessage" in ei.value.details()
    ch.close()
    g = fakes(s.target, "agent-after")
    g.hello_ack()
    assert s.agent("agent-after")["connected"]


def test_newer_stream_replaces_older(tmp_path, servers, fakes):
    s = servers(tmp_path)
    a = fakes(s.target, "agent-twice", hostname="first")
    a.hello_ack()
    b = fakes(s.target, "agent-twice", hostname="second")
    b.hello_ack()
    assert a.wait_end() == SC.ABORTED and "replaced" in a.details
    d = s.agent("agent-twice")
    assert d["connected"] and d["hostname"] == "second" and d["connections"] == 2
    b.event(1)
    b.wait_ack(1)
    assert s.agent("agent-twice")["connected"]


def test_many_concurrent_agents(tmp_path, servers, fakes):
    n, per = 50, 20
    s = servers(tmp_path)
    agents = [fakes(s.target, f"agent-{i:02d}", hostname=f"host-{i:02d}", spool_id=f"sp-{i}") for i in range(n)]
    for a in agents:
        a.events(range(1, per + 1))
        a.send(mpb.AgentMessage(metrics=apb.MetricsSnapshot(time_unix_nano=1)))
    for a in agents:
        a.wait_ack(per)
        assert a.acks() == list(range(1, per + 1))
        assert a.hello_ack().resume_after_spool_seq == 0
    rows = wait_for(lambda: (lambda rows: rows if all(r["metrics_received"] == 1 for r in rows)
                             and len(rows) == n else None)(s.agents()), what="metrics of every agent")
    assert [r["agent_id"] for r in rows] == [f"agent-{i:02d}" for i in range(n)]
    for i, r in enumerate(rows):
        assert r["hostname"] == f"host-{i:02d}" and r["connected"]
        assert r["events_received"] == per and r["last_seq"] == per and r["duplicates"] == 0 and r["gaps"] == []
    # and a command reaches each, answered by the right one
    for i in range(0, n, 7):
        r = s.command(f"agent-{i:02d}", "get_status")
        assert r["result"]["status"]["hostname"] == f"host-{i:02d}"


def test_disconnect_through_control_api(tmp_path, servers, fakes):
    s = servers(tmp_path)
    a = fakes(s.target, "agent-k")
    a.hello_ack()
    assert s.post("/v1/agents/agent-k/disconnect", {}).status_code == 200
    assert a.wait_end() == SC.UNAVAILABLE
    d = s.wait_agent("agent-k", lambda d: not d["connected"], "disconnected")
    assert d["disconnects"][-1]["code"] == "UNAVAILABLE"
    assert s.post("/v1/agents/agent-k/disconnect", {}).status_code == 409


# ---- acknowledgement modes and misbehaviour ----

def test_ack_every_n(tmp_path, servers, fakes):
    s = servers(tmp_path, "--ack-every", "3")
    a = fakes(s.target, "agent-n")
    a.hello_ack()
    a.events(range(1, 10))
    a.wait_ack(9)
    assert a.acks() == [3, 6, 9]
    a.event(10)
    s.wait_agent("agent-n", lambda d: d["events_received"] == 10, "10 events")
    a.lost(11, 12)
    a.event(13)  # the third since the last ack
    a.wait_ack(13)
    assert a.acks() == [3, 6, 9, 13]


def test_ack_delay_and_settings(tmp_path, servers, fakes):
    s = servers(tmp_path, "--ack-delay", "3600")
    assert s.get("/v1/settings").json()["ack_delay"] == 3600
    a = fakes(s.target, "agent-delay")
    a.hello_ack()
    a.events([1, 2])
    s.wait_agent("agent-delay", lambda d: d["events_received"] == 2, "2 events")
    assert a.acks() == []  # due in an hour
    assert s.settings(ack_delay=0)["ack_delay"] == 0
    a.event(3)
    a.wait_ack(3)
    assert a.acks() == [3]
    assert s.post("/v1/settings", {"ack_delay": -1}).status_code == 400
    assert s.post("/v1/settings", {"nonsense": 1}).status_code == 400
    assert s.post("/v1/settings", {"ack_every": 1.5}).status_code == 400


def test_ack_delay_small(tmp_path, servers, fakes):
    s = servers(tmp_path, "--ack-delay", "0.05")
    a = fakes(s.target, "agent-late")
    a.hello_ack()
    a.events(range(1, 6))
    a.wait_ack(5)
    acks = a.acks()
    assert acks == sorted(set(acks)) and acks[-1] == 5


def test_withhold_acks(tmp_path, servers, fakes):
    s = servers(tmp_path, "--withhold-acks")
    a = fakes(s.target, "agent-w")
    a.hello_ack()
    a.events([1, 2, 3])
    s.wait_agent("agent-w", lambda d: d["events_received"] == 3, "3 events")
    a.close()
    a.wait_end()
    assert a.acks() == []
    # hello_ack names only what was acknowledged: nothing, so all is resent
    b = fakes(s.target, "agent-w")
    assert b.hello_ack().resume_after_spool_seq == 0
    b.events([1, 2, 3, 4])
    s.wait_agent("agent-w", lambda d: d["duplicates"] == 3 and d["events_received"] == 4, "resend recorded")
    assert b.acks() == []
    # releasing acks acknowledges everything at once, on the live stream
    assert s.settings(withhold_acks=False)["withhold_acks"] is False
    b.wait_ack(4)
    assert b.acks() == [4]
    b.close()
    b.wait_end()
    c = fakes(s.target, "agent-w")
    assert c.hello_ack().resume_after_spool_seq == 4


def test_close_after_n_messages(tmp_path, servers, fakes):
    s = servers(tmp_path, "--close-after", "3")
    a = fakes(s.target, "agent-close")
    a.hello_ack()
    a.events([1, 2])  # hello, 1, 2: the third message ends the stream
    assert a.wait_end() == SC.UNAVAILABLE and "close-after" in a.details
    assert a.acks() == [1]  # 2 was recorded, not acknowledged
    assert s.agent("agent-close")["events_received"] == 2
    # the agent resends from what it saw acknowledged; the server knows better
    b = fakes(s.target, "agent-close", last_acked=1)
    assert b.hello_ack().resume_after_spool_seq == 2
    b.events([3, 4])
    assert b.wait_end() == SC.UNAVAILABLE
    assert b.acks() == [3]
    assert seqs(s.events("agent-close")) == [1, 2, 3, 4]


def test_garbage_after_n_messages(tmp_path, servers, fakes):
    s = servers(tmp_path, "--garbage-after", "1")
    # a raw client sees exactly what was sent: hello_ack, then bytes that no
    # ServerMessage parser accepts, then the stream goes on
    ch = grpc.insecure_channel(s.target)
    q = queue.Queue()
    call = ch.stream_stream(METHOD, request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=None)(iter(q.get, None),
                                                        metadata=[("authorization", f"Bearer {TOKEN}")])
    q.put(mpb.AgentMessage(hello=mpb.Hello(agent_id="agent-raw")))
    first = next(call)
    assert mpb.ServerMessage.FromString(first).WhichOneof("kind") == "hello_ack"
    garbage = next(call)
    with pytest.raises(Exception) as ei:
        mpb.ServerMessage.FromString(garbage)
    assert "DecodeError" in type(ei.value).__name__
    q.put(mpb.AgentMessage(event=mpb.SpooledEvent(spool_seq=1, event=apb.Event(seq=1))))
    assert mpb.ServerMessage.FromString(next(call)).ack.spool_seq == 1
    q.put(None)
    assert list(call) == []
    ch.close()
    # a client of the generated stubs cannot parse it: its call fails
    a = fakes(s.target, "agent-stub")
    assert a.wait_end() == SC.INTERNAL, a.details
    assert [m.WhichOneof("kind") for m in a.messages()] == ["hello_ack"]


def test_unknown_command(tmp_path, servers, fakes):
    s = servers(tmp_path, "--unknown-command")
    a = fakes(s.target, "agent-u")
    a.hello_ack()
    m = wait_for(lambda: [m for m in a.messages() if m.command_id], what="the unknown command")[0]
    # a v1 agent sees a command id and no kind it knows (the field is kept unknown)
    assert m.WhichOneof("kind") is None
    assert m.SerializeToString().endswith(b"\x9a\x06\x00")  # field 99, length 0
    c = wait_for(lambda: (lambda c: c if c["state"] == "done" else None)(s.get(f"/v1/commands/{m.command_id}").json()),
                 what="its result")
    assert c["kind"] == "unknown" and c["result"]["code"] == SC.UNIMPLEMENTED.value[0]
    # also on request through the control API
    r = s.command("agent-u", "unknown")
    assert r["state"] == "done" and r["result"]["code"] == SC.UNIMPLEMENTED.value[0]


# ---- --summary, ctl, process ----

def test_summary_mode(tmp_path, servers, fakes):
    s = servers(tmp_path, "--summary", "--summary-interval", "0.05")
    a = fakes(s.target, "agent-s", hostname="web-7")
    a.hello_ack()
    a.events([1, 2])
    a.lost(3, 4)
    a.send(mpb.AgentMessage(metrics=apb.MetricsSnapshot(time_unix_nano=5)))
    a.wait_ack(4)
    s.out.wait_line(r"^agent-s host=web-7 connected=yes events=2 last_seq=4 lost=2 gaps=0 dup=0 "
                    r"metrics=1@\d\d:\d\d:\d\d$")
    a.close()
    a.wait_end()
    s.out.wait_line(r"^agent-s host=web-7 connected=no events=2 last_seq=4 ")
    assert s.out.wait_line(r"^-- \d\d:\d\d:\d\d 1 agent\(s\)$")


def ctl(server, *args):
    return subprocess.run([PYTHON, SERVER, "ctl", "--control", server.base.removeprefix("http://"), *args],
                          capture_output=True, text=True, timeout=DEADLINE + 30)


def test_ctl_client(tmp_path, servers, fakes):
    s = servers(tmp_path)
    a = fakes(s.target, "agent-ctl", hostname="h9")
    a.hello_ack()
    a.events([1, 2])
    a.wait_ack(2)
    r = ctl(s, "agents")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("agent-ctl host=h9 connected=yes events=2 last_seq=2 lost=0 gaps=0 metrics=0")
    r = ctl(s, "events", "agent-ctl", "--after", "1")
    assert [json.loads(ln)["spool_seq"] for ln in r.stdout.splitlines()] == [2]
    r = ctl(s, "cmd", "agent-ctl", "ping")
    assert r.returncode == 0 and json.loads(r.stdout)["result"]["code"] == 0
    local = os.path.join(str(tmp_path), "new.conf")
    with open(local, "wb") as f:
        f.write(b"listen 81;\n")
    r = ctl(s, "apply", "agent-ctl", f"/etc/onepanel/onepanel.conf={local}", "--delete", "/etc/onepanel/b.conf")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["result"]["apply_config"]["status"] == "applied"
    [m] = a.messages("apply_config")
    assert m.apply_config.files[0].content == b"listen 81;\n" and not m.apply_config.dry_run
    r = ctl(s, "cmd", "agent-ctl", "unknown")
    assert r.returncode == 2  # answered, not OK
    r = ctl(s, "set", "ack_every=2")
    assert r.returncode == 0 and json.loads(r.stdout)["ack_every"] == 2
    r = ctl(s, "cmd", "nobody", "ping")
    assert r.returncode != 0 and "404" in r.stderr


def test_bad_command_lines(tmp_path):
    def run(*args):
        return subprocess.run([PYTHON, SERVER, "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", *args],
                              capture_output=True, text=True, timeout=DEADLINE)

    r = run("--token-file", os.path.join(str(tmp_path), "none"))
    assert r.returncode == 1 and "--token-file" in r.stderr and "No such file" in r.stderr
    empty = os.path.join(str(tmp_path), "empty")
    open(empty, "w").close()
    r = run("--token-file", empty)
    assert r.returncode == 1 and "no token" in r.stderr
    r = run("--control", "0.0.0.0:0")
    assert r.returncode == 1 and "not a loopback address" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run("--listen", f"127.0.0.1:{port}")
        assert r.returncode == 1 and "cannot listen there" in r.stderr
        r = run("--control", f"127.0.0.1:{port}")
        assert r.returncode == 1 and "--control" in r.stderr and "in use" in r.stderr
    r = run("--ack-every", "-1")
    assert r.returncode == 2 and "--ack-every" in r.stderr


def test_a_status_lost_to_a_gone_agent_is_one_line(capsys):
    """The race seen in CI: the agent leaves right after its half-close and
    grpcio fails to send the stream's final status in a task of its own.
    The server's loop exception handler says so in one line (no traceback);
    any other exception still gets asyncio's default report."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("mgmt_server_mod", SERVER)
    spec = importlib.util.spec_from_loader("mgmt_server_mod", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)

    class ExecuteBatchError(Exception):
        pass

    class Loop:
        def __init__(self):
            self.defaults = []

        def default_exception_handler(self, ctx):
            self.defaults.append(ctx)

    loop = Loop()
    mod.loop_exception(loop, {"exception": ExecuteBatchError(
        'Failed "execute_batch": (<grpc._cython.cygrpc.SendStatusFromServerOperation object at 0x1>,)')})
    assert loop.defaults == []
    assert "its agent had already gone" in capsys.readouterr().err
    other = {"exception": ValueError("a real bug")}
    mod.loop_exception(loop, other)
    mod.loop_exception(loop, {"message": "no exception at all"})
    assert loop.defaults == [other, {"message": "no exception at all"}]
