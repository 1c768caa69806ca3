"""Black-box tests of the gRPC API (service oneshield.agent.v1.Agent and
server reflection) with the Python grpcio client.

Stubs come from proto/ at test time (grpcstubs.py). Events are made by the
onepanel simulator or by the agent's test generator (ONESHIELD_TEST_EVENTS=1,
POST /v1/test/events). Every wait is a poll with a deadline or a blocking
read with a deadline; nothing asserts how long anything took."""
import calendar
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import conftest
import grpc
import pytest
import requests

from conftest import DEADLINE, EXPECT_MODE, agent_yaml, sim_onepanel, wait_for
from grpcstubs import stubs

pb, pb_grpc = stubs()

SERVICE = "oneshield.agent.v1.Agent"
PATH = f"/{SERVICE}/"
ET = pb.EventType
LOST = ET.Value("EVENTS_LOST_MESSAGE")
TEST = ET.Value("TEST_EVENT_MESSAGE")
OK = grpc.StatusCode.OK


# ---- helpers ----

class Stream:
    """Reads one server-streaming call in a thread; messages land in a
    queue, the end of the stream too (so next() never waits past it)."""

    END = object()

    def __init__(self, call, decode=None):
        self.call = call
        self.decode = decode
        self.q = queue.Queue()
        self.error = None
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for m in self.call:
                self.q.put(self.decode(m) if self.decode else m)
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.q.put(self.END)
            self.done.set()

    def next(self, timeout=DEADLINE):
        """The next message; AssertionError if the stream ended or none came."""
        try:
            m = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout}s") from None
        if m is self.END:
            self.q.put(self.END)
            raise AssertionError(f"stream ended: {self.code()} {self.details()}")
        return m

    def read_through(self, seq, timeout=DEADLINE):
        """Messages up to and including the first with .seq >= seq."""
        out = []
        while not out or out[-1].seq < seq:
            out.append(self.next(timeout))
        return out

    def end(self, timeout=DEADLINE):
        """Wait for the stream to end; return the messages still unread."""
        assert self.done.wait(timeout), f"stream did not end within {timeout}s"
        rest = []
        while True:
            m = self.q.get_nowait()
            if m is self.END:
                self.q.put(self.END)
                return rest
            rest.append(m)

    def code(self):
        return self.error.code() if self.error else self.call.code()

    def details(self):
        return self.error.details() if self.error else self.call.details()

    def cancel(self):
        self.call.cancel()


class G:
    """An agent with the gRPC API on, and a channel to it."""

    def __init__(self, agent):
        self.a = agent
        self.channel = grpc.insecure_channel(agent.grpc_target)
        self.stub = pb_grpc.AgentStub(self.channel)

    def status(self):
        return self.stub.GetStatus(pb.GetStatusRequest(), timeout=DEADLINE)

    def last_seq(self):
        return self.status().events.last_seq

    def gen(self, count, rate=0):
        """Journal count TEST_EVENT_MESSAGEs; return the seq of the last one
        when rate is 0 (they are all journaled before the answer)."""
        before = self.last_seq()
        r = requests.post(self.a.base + "/v1/test/events", params={"count": count, "rate": rate}, timeout=DEADLINE)
        assert r.status_code == 202, r.text
        return before + count

    def assert_live(self, streams, count=3):
        """Each of the subscriber streams gets count new events, in order."""
        last = self.gen(count)
        want = list(range(last - count + 1, last + 1))
        for s in streams:
            assert [m.seq for m in s.read_through(last)][-count:] == want

    def subscribe(self, after_seq=0, types=(), timeout=None, channel=None):
        req = pb.SubscribeRequest(after_seq=after_seq, types=list(types))
        stub = pb_grpc.AgentStub(channel) if channel else self.stub
        return Stream(stub.Subscribe(req, timeout=timeout))

    def wait_api(self, what, pred):
        """Poll GetStatus until pred(status.api) holds."""
        return wait_for(lambda: pred(self.status().api), what=what)

    def wait_streams(self, n):
        self.wait_api(f"grpc_streams == {n}", lambda api: api.grpc_streams == n)

    def wait_subscribers(self, n):
        self.wait_api(f"grpc_subscribers == {n}", lambda api: api.grpc_subscribers == n)


@pytest.fixture
def gagent(agents, tmp_path, monkeypatch):
    """Factory: start an agent with gRPC (and the test event generator) on."""
    made = []

    def make(onepanel=None, extra="", api=None, interval=None, test_events=True):
        if test_events:
            monkeypatch.setenv("ONESHIELD_TEST_EVENTS", "1")
        text = agent_yaml(onepanel, extra, grpc=True, api=api)
        if interval:
            text = text.replace("interval: 200ms", f"interval: {interval}")
        g = G(agents(tmp_path, text))
        made.append(g)
        return g

    yield make
    for g in made:
        g.channel.close()


@pytest.fixture
def private_sim(sim, tmp_path, monkeypatch):
    """The simulator from a private copy of its binary. The agent knows
    onepanel by its executable, so a simulator that another test session
    runs from the shared binary at the same time is not taken for ours."""
    own = os.path.join(str(tmp_path), "bin", "onepanel-sim")
    os.makedirs(os.path.dirname(own))
    shutil.copy2(conftest.SIM_BIN, own)
    monkeypatch.setattr(conftest, "SIM_BIN", own)
    assert isinstance(sim, conftest.Sim)    # the module Sim.start reads SIM_BIN from
    return sim


def coverage(msgs, after, last):
    """Check that msgs (an unfiltered Subscribe, in arrival order) account
    for every seq in after+1..last exactly once and in order: each event has
    the next seq, or is an EVENTS_LOST_MESSAGE whose lost_from is the next seq
    and whose seq is its lost_to. Returns (delivered, lost)."""
    expect, delivered, lost = after + 1, 0, 0
    for m in msgs:
        if m.type == LOST:
            assert m.lost_from == expect and m.lost_to >= m.lost_from and m.seq == m.lost_to, \
                (expect, m.seq, m.lost_from, m.lost_to)
            lost += m.lost_to - m.lost_from + 1
            expect = m.lost_to + 1
        else:
            assert m.seq == expect, (expect, m.seq, ET.Name(m.type))
            assert m.lost_from == 0 and m.lost_to == 0
            delivered += 1
            expect += 1
    assert expect == last + 1, (expect, last)
    assert delivered + lost == last - after
    return delivered, lost


def rpc_error(fn):
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value


# ---- GetStatus ----

def test_get_status_agrees_with_rest(tmp_path, private_sim, gagent):
    sim = private_sim
    pid = sim.start()
    g = gagent(sim_onepanel(sim), test_events=False)
    a = g.a
    a.wait_event("ONEPANEL_FOUND_MESSAGE")

    def compare():
        st, r = g.status(), a.get("/v1/status").json()
        assert st.version == r["version"] and st.version
        assert st.hostname == r["hostname"]
        assert st.pid == r["pid"] == a.proc.pid
        assert st.mode == r["mode"] == EXPECT_MODE
        assert st.mode_reason == r.get("mode_reason", "")
        assert st.ebpf.process_events == r["ebpf"]["process_events"]
        assert st.ebpf.scheduler_delay == r["ebpf"]["scheduler_delay"]
        assert st.ebpf.syscall_investigation == r["ebpf"]["syscall_investigation"] in ("idle", "unavailable")
        assert st.onepanel.workers == r["onepanel"].get("workers", -1)
        assert st.config_path == r["config_path"] == a.config_path
        assert st.uptime_seconds >= 0 and st.started_unix_nano > 0
        op, rop = st.onepanel, r["onepanel"]
        assert op.configured is rop["configured"] is True
        assert op.state == rop["state"]
        assert op.pid == rop.get("pid", 0)
        assert op.exe == rop.get("exe", "")
        assert op.restarts == rop["restarts"]
        assert op.tracking == rop["tracking"]
        assert op.binary == rop["binary"] == conftest.SIM_BIN
        assert op.config_file == rop["config_file"] == sim.conf
        assert st.events.first_seq == r["events"]["first_seq"]
        assert st.events.last_seq == r["events"]["last_seq"]
        assert st.events.capacity == r["events"]["capacity"]
        assert st.metrics.interval_seconds == r["metrics"]["interval_seconds"] == 0.2
        assert st.api.rest_listen == r["api"]["rest_listen"]
        assert st.api.grpc_listen == a.grpc_target
        assert st.api.sse_clients == r["api"]["sse_clients"]
        return st, r

    st, _ = compare()
    assert st.onepanel.state == "running" and st.onepanel.pid == pid
    assert st.onepanel.WhichOneof("last_exit") is None

    sim.kill(signal.SIGKILL)
    a.wait_event("ONEPANEL_STOP_MESSAGE")
    st, r = compare()
    assert st.onepanel.state == "stopped" and st.onepanel.pid == 0
    assert st.onepanel.WhichOneof("last_exit") == "last_exit_signal"
    assert st.onepanel.last_exit_signal == 9 and r["onepanel"]["last_exit"] == {"signal": 9}


# ---- GetMetrics / StreamMetrics ----

FAMILY_TYPE = {"counter": pb.METRIC_TYPE_COUNTER, "gauge": pb.METRIC_TYPE_GAUGE,
               "histogram": pb.METRIC_TYPE_HISTOGRAM}


def same_number(j, v):
    """A JSON number from /v1/metrics (NaN/Inf come as strings) is v. The
    JSON has cJSON's 15 significant digits, so equal to about 1e-15."""
    if j == "NaN":
        return math.isnan(v)
    if j in ("+Inf", "-Inf"):
        return v == (math.inf if j == "+Inf" else -math.inf)
    return math.isclose(j, v, rel_tol=1e-14, abs_tol=0)


def assert_same_metrics(snap, rest):
    assert [f.name for f in snap.families] == [f["name"] for f in rest]
    for f, rf in zip(snap.families, rest):
        assert f.type == FAMILY_TYPE[rf["type"]], f.name
        assert f.help == rf["help"], f.name
        assert len(f.samples) == len(rf["samples"]), f.name
        for s, rs in zip(f.samples, rf["samples"]):
            # labels in the order /metrics prints them
            assert [(lb.name, lb.value) for lb in s.labels] == list(rs["labels"].items()), f.name
            if rf["type"] == "histogram":
                h = s.histogram
                assert [(b.upper_bound, b.cumulative_count) for b in h.buckets] == \
                    [(b["le"], b["count"]) for b in rs["buckets"]], f.name
                assert same_number(rs["sum"], h.sum) and h.count == rs["count"], f.name
            else:
                assert same_number(rs["value"], s.value), (f.name, rs, s.value)


PROM_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
PROM_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prom_samples(text):
    """{(series name, ((label, value), ...)): float} from the text format;
    an le label is read as a number."""
    out = {}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        m = PROM_LINE.match(ln)
        assert m, ln
        labels = []
        for k, v in PROM_LABEL.findall(m.group(2) or ""):
            v = re.sub(r"\\(.)", lambda x: "\n" if x.group(1) == "n" else x.group(1), v)
            labels.append((k, float(v) if k == "le" else v))
        out[(m.group(1), tuple(labels))] = float(m.group(3))
    return out


def grpc_samples(snap):
    """The same map from a MetricsSnapshot."""
    out = {}
    for f in snap.families:
        for s in f.samples:
            labels = tuple((lb.name, lb.value) for lb in s.labels)
            if f.type != pb.METRIC_TYPE_HISTOGRAM:
                out[(f.name, labels)] = s.value
                continue
            h = s.histogram
            for b in h.buckets:
                out[(f.name + "_bucket", labels + (("le", b.upper_bound),))] = float(b.cumulative_count)
            out[(f.name + "_bucket", labels + (("le", math.inf),))] = float(h.count)
            out[(f.name + "_sum", labels)] = h.sum
            out[(f.name + "_count", labels)] = float(h.count)
    return out


def assert_same_as_prom(snap, text, prefix):
    want = {k: v for k, v in prom_samples(text).items() if k[0].startswith(prefix)}
    got = grpc_samples(snap)
    assert got.keys() == want.keys()
    # exactly: /metrics prints every value so that it reads back the same
    bad = [(k, got[k], want[k]) for k in got
           if not (got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k])))]
    assert not bad, bad[:5]


def test_get_metrics_agrees_with_rest(tmp_path, gagent):
    # a one-hour interval: the snapshot both APIs serve does not change
    g = gagent(interval="1h", test_events=False)
    collections = g.status().metrics.collections
    prom = g.a.get("/metrics").text
    for prefix in ("", "node_", "oneshield_agent_", "node_load", "no_such_metric_"):
        snap = g.stub.GetMetrics(pb.GetMetricsRequest(name_prefix=prefix), timeout=DEADLINE)
        params = {"prefix": prefix} if prefix else {}
        rest = g.a.get("/v1/metrics", params=params).json()["metrics"]
        assert_same_metrics(snap, rest)
        assert_same_as_prom(snap, prom, prefix)
        assert snap.time_unix_nano > 0
        assert all(f.name.startswith(prefix) for f in snap.families)
        if prefix == "no_such_metric_":
            assert not snap.families
        else:
            assert snap.families, prefix
    assert g.status().metrics.collections == collections, "a collection ran: the comparison is void"
    names = {f.name for f in g.stub.GetMetrics(pb.GetMetricsRequest(), timeout=DEADLINE).families}
    assert {"node_load1", "node_cpu_seconds_total", "oneshield_agent_resident_memory_bytes"} <= names


@pytest.mark.parametrize("interval_ms", [0, 1, 99, 150])
def test_stream_metrics_snapshots(tmp_path, gagent, interval_ms):
    """A snapshot now, then one every interval; 0 means the agent's interval
    and values below 100 are raised (so 1 and 99 work too)."""
    g = gagent(test_events=False)
    s = Stream(g.stub.StreamMetrics(pb.StreamMetricsRequest(name_prefix="node_", interval_ms=interval_ms)))
    snaps = [s.next() for _ in range(4)]
    times = [x.time_unix_nano for x in snaps]
    assert all(b > a for a, b in zip(times, times[1:])), times
    for x in snaps:
        assert x.families and all(f.name.startswith("node_") for f in x.families)
        assert "node_load1" in {f.name for f in x.families}
    assert g.status().api.grpc_streams == 1
    s.cancel()
    g.wait_streams(0)


# ---- Subscribe ----

def test_subscribe_type_filter(tmp_path, private_sim, gagent):
    sim = private_sim
    pid = sim.start()
    g = gagent(sim_onepanel(sim), test_events=False)
    a = g.a
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    stops = g.subscribe(after_seq=0, types=[ET.Value("ONEPANEL_STOP_MESSAGE")])
    two = g.subscribe(after_seq=0, types=[ET.Value("AGENT_START_MESSAGE"), ET.Value("ONEPANEL_FOUND_MESSAGE")])
    e = two.next()
    assert e.type == ET.Value("AGENT_START_MESSAGE") and e.seq == 1
    e = two.next()
    assert e.type == ET.Value("ONEPANEL_FOUND_MESSAGE") and e.pid == pid
    g.wait_subscribers(2)

    sim.kill(signal.SIGKILL)
    e = stops.next()
    assert e.type == ET.Value("ONEPANEL_STOP_MESSAGE")
    assert e.pid == pid
    assert e.WhichOneof("exit") == "signal" and e.signal == 9
    stop_seq = e.seq
    assert stop_seq > 2

    # a FOUND and a clean STOP later: only the STOP reaches the first stream
    pid2 = sim.start()
    found = a.wait_event("ONEPANEL_FOUND_MESSAGE", after=stop_seq)
    e = two.next()
    assert e.type == ET.Value("ONEPANEL_FOUND_MESSAGE") and e.pid == pid2 and e.seq == found["seq"]
    sim.kill(signal.SIGTERM)
    e = stops.next()
    assert e.type == ET.Value("ONEPANEL_STOP_MESSAGE") and e.pid == pid2
    assert e.WhichOneof("exit") == "exit_code" and e.exit_code == 0
    assert e.seq > found["seq"]

    # AGENT_STOP_MESSAGE matches neither filter: both streams just end
    a.proc.send_signal(signal.SIGTERM)
    assert stops.end() == [] and stops.code() == OK
    assert two.end() == [] and two.code() == OK
    assert a.proc.wait(timeout=DEADLINE) == 0


def test_subscribe_resume_after_seq_no_gap_no_duplicate(tmp_path, gagent):
    g = gagent()
    last1 = g.gen(40)
    s1 = g.subscribe(after_seq=0)
    first = [s1.next() for _ in range(15)]
    s1.cancel()
    assert [m.seq for m in first] == list(range(1, 16))
    resume = first[-1].seq

    s2 = g.subscribe(after_seq=resume)
    part = s2.read_through(last1)
    last2 = g.gen(40)        # and live ones after the journaled ones
    part += s2.read_through(last2)
    seqs = [m.seq for m in first + part]
    assert seqs == list(range(1, last2 + 1)), "gap or duplicate across the resume"
    assert all(m.type == TEST for m in part)

    # resuming with a type filter: the same events, only that type
    s3 = g.subscribe(after_seq=resume, types=[TEST])
    again = s3.read_through(last2)
    assert [m.seq for m in again] == [m.seq for m in part]
    assert [m.message for m in again] == [m.message for m in part]
    s2.cancel()
    s3.cancel()
    g.wait_streams(0)


def test_lost_marker_after_journal_overflow(tmp_path, gagent):
    g = gagent(extra="events:\n  journal_size: 16\n")
    last = g.gen(100)
    ev = g.status().events
    assert ev.capacity == 16 and ev.last_seq == last and ev.first_seq == last - 15

    s = g.subscribe(after_seq=1)
    m = s.next()
    assert m.type == LOST
    assert (m.lost_from, m.lost_to, m.seq) == (2, last - 16, last - 16)
    rest = s.read_through(last)
    assert [x.seq for x in rest] == list(range(last - 15, last + 1))
    assert all(x.type == TEST for x in rest)

    # a type filter does not hide the loss
    f = g.subscribe(after_seq=1, types=[TEST])
    m = f.next()
    assert m.type == LOST and (m.lost_from, m.lost_to) == (2, last - 16)
    assert [x.seq for x in f.read_through(last)] == list(range(last - 15, last + 1))

    # from the oldest kept: nothing is lost
    z = g.subscribe(after_seq=0)
    assert [x.seq for x in z.read_through(last)] == list(range(last - 15, last + 1))
    assert g.status().events.lost_by_subscribers == 2 * (last - 17)
    for x in (s, f, z):
        x.cancel()
    g.wait_streams(0)


def test_slow_reader_does_not_delay_others_and_learns_its_loss(tmp_path, gagent):
    g = gagent()
    start = g.last_seq()
    # one reader subscribed before the slow one, one after
    before = g.subscribe(after_seq=start)
    g.wait_subscribers(1)
    # A client that never reads: its own connection, with a small HTTP/2
    # window, so the agent's sends to it block soon.
    slow_ch = grpc.insecure_channel(g.a.grpc_target, options=[
        ("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", 1024)])
    try:
        slow_call = slow_ch.unary_stream(PATH + "Subscribe")(
            pb.SubscribeRequest(after_seq=start).SerializeToString())
        g.wait_subscribers(2)
        after = g.subscribe(after_seq=start)
        g.wait_subscribers(3)

        fast = {"before": [], "after": []}
        last1 = g.gen(5000)
        for name, s in (("before", before), ("after", after)):
            fast[name] += s.read_through(last1)      # while the slow one reads nothing
        last2 = g.gen(5000)
        fast_lost = {}
        for name, s in (("before", before), ("after", after)):
            fast[name] += s.read_through(last2)
            fast_lost[name] = coverage(fast[name], start, last2)[1]

        slow = Stream(slow_call, decode=pb.Event.FromString)
        sgot = slow.read_through(last2)
        _, slow_lost = coverage(sgot, start, last2)
        # it fell behind on its own, and was told exactly what it missed
        assert slow_lost > max(fast_lost.values()), (slow_lost, fast_lost)
        assert g.status().events.lost_by_subscribers == sum(fast_lost.values()) + slow_lost
        for s in (slow, before, after):
            s.cancel()
        g.wait_streams(0)
    finally:
        slow_ch.close()


def test_cancel_frees_the_call(tmp_path, gagent):
    g = gagent()
    sub = g.subscribe(after_seq=0)
    assert sub.next().type == ET.Value("AGENT_START_MESSAGE")
    met = Stream(g.stub.StreamMetrics(pb.StreamMetricsRequest(interval_ms=100)))
    met.next()
    st = g.status().api
    assert (st.grpc_streams, st.grpc_subscribers) == (2, 1)
    sub.cancel()
    g.wait_api("subscriber gone", lambda api: (api.grpc_streams, api.grpc_subscribers) == (1, 0))
    assert sub.end() == [] and sub.code() == grpc.StatusCode.CANCELLED
    met.cancel()
    g.wait_streams(0)
    # events after the cancel go nowhere and harm nothing
    last = g.gen(10)
    assert g.last_seq() == last


KILLED_CLIENT = r"""
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
it = ch.unary_stream(sys.argv[2])(bytes.fromhex(sys.argv[3]), metadata=[("authorization", "Bearer " + sys.argv[4])])
next(it)
print("first", flush=True)
for _ in it:
    pass
"""


@pytest.mark.parametrize("method", ["Subscribe", "StreamMetrics"])
def test_killed_client_frees_the_call(tmp_path, gagent, method):
    g = gagent()
    req = pb.SubscribeRequest() if method == "Subscribe" else pb.StreamMetricsRequest(interval_ms=100)
    p = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, g.a.grpc_target, PATH + method,
                          req.SerializeToString().hex(), g.a.token], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = []
        t = threading.Thread(target=lambda: lines.append(p.stdout.readline()), daemon=True)
        t.start()
        t.join(DEADLINE)
        assert lines == [b"first\n"], (lines, p.poll())
        st = g.status().api
        assert st.grpc_streams == 1 and st.grpc_subscribers == (1 if method == "Subscribe" else 0)
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=DEADLINE) == -signal.SIGKILL
        g.wait_api("killed client's call freed", lambda api: (api.grpc_streams, api.grpc_subscribers) == (0, 0))
        g.gen(10)
        assert g.status().api.grpc_streams == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_hundred_subscribers_get_every_event(tmp_path, gagent):
    # all from one peer: api.limits.max_streams_per_peer (default 16) allows them
    g = gagent(api={"limits": "{ max_streams_per_peer: 100 }"})
    start = g.last_seq()
    subs = [g.subscribe(after_seq=start) for _ in range(100)]
    g.wait_subscribers(100)
    assert g.status().api.grpc_streams == 100
    last = g.gen(200)
    for s in subs:
        got = s.read_through(last)
        assert [m.seq for m in got] == list(range(start + 1, last + 1))
        assert all(m.type == TEST for m in got)
    assert g.status().events.lost_by_subscribers == 0
    for s in subs:
        s.cancel()
    g.wait_api("all subscribers gone", lambda api: (api.grpc_streams, api.grpc_subscribers) == (0, 0))


def test_burst_bigger_than_the_feed_reaches_every_reader_from_the_journal(tmp_path, gagent):
    # The server keeps the last 1024 events serialized for its streams; a
    # burst of 6000 journaled at once leaves every reader thousands behind
    # that, but inside the journal (8192): each must get every event once,
    # in order, none counted lost. Two readers filter, one by the burst's
    # type, one by a type the burst does not have.
    g = gagent(extra="events:\n  journal_size: 8192\n")
    start = g.last_seq()
    subs = [g.subscribe(after_seq=start) for _ in range(3)]
    typed = g.subscribe(after_seq=start, types=[TEST])
    other = g.subscribe(after_seq=start, types=[ET.Value("ONEPANEL_FOUND_MESSAGE")])
    g.wait_subscribers(5)
    last = g.gen(6000)
    for s in subs:
        got = s.read_through(last)
        assert coverage(got, start, last) == (last - start, 0)
    got = typed.read_through(last)
    assert [m.seq for m in got] == list(range(start + 1, last + 1))
    assert g.status().events.lost_by_subscribers == 0
    for s in subs + [typed, other]:
        s.cancel()
    g.wait_api("all subscribers gone", lambda api: (api.grpc_streams, api.grpc_subscribers) == (0, 0))
    assert other.end() == []   # nothing of its type, and no marker either


# ---- syscall investigations ----

# A stand-in for onepanel that makes an exact number of syscalls when told
# (as in test_probes.py): "g N" N getppid(), "c N" N close(-1) (EBADF).
# the "onepanel" that makes an exact number of syscalls on command
from test_probes import Target as SyscallTarget, syscall_links  # noqa: E402


@pytest.fixture
def sctarget(tmp_path):
    t = SyscallTarget(tmp_path)
    yield t
    t.stop()


def sysprobe_links(g):
    """The links of this agent's syscall probes (among its own fds, so other
    agents on the host do not count)."""
    return syscall_links([g.a.proc.pid])


def get_inv(g):
    return g.stub.GetSyscallInvestigation(pb.GetSyscallInvestigationRequest(), timeout=DEADLINE)


def start_inv(g, duration_s):
    return g.stub.StartSyscallInvestigation(pb.StartSyscallInvestigationRequest(duration_s=duration_s),
                                            timeout=DEADLINE)


def rest_inv(g):
    r = g.a.get("/v1/probes/syscalls")
    assert r.status_code == 200, r.text
    return r.json()


def rest_start(g, duration_s):
    return g.a.post("/v1/probes/syscalls", data=json.dumps({"duration_s": duration_s}),
                    headers={"Content-Type": "application/json"})


REST_INV_KEYS = {"state", "reason", "mode", "attached", "max_duration_s", "requested_s", "started_at", "ends_at",
                 "ended_at", "ran_s", "targets", "syscalls", "drops", "drops_by_reason"}


def iso_ns(ts):
    """The REST times ("2024-05-01T12:34:56.789Z") as unix nanoseconds."""
    if ts is None:
        return 0
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z", ts)
    assert m, ts
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) * 10**9 + int(m.group(2)) * 10**6


def rest_view(j, ran=True):
    """GET /v1/probes/syscalls in SyscallInvestigation's terms (absent: 0)."""
    assert set(j) <= REST_INV_KEYS, set(j) - REST_INV_KEYS     # nothing the proto lacks
    dr = j.get("drops_by_reason", {})
    return {
        "state": j["state"], "reason": j.get("reason", ""), "mode": j.get("mode", ""),
        "attached": j.get("attached", False), "max_duration_s": j["max_duration_s"],
        "requested_s": j.get("requested_s", 0), "started_unix_nano": iso_ns(j.get("started_at")),
        "ends_unix_nano": iso_ns(j.get("ends_at")), "ended_unix_nano": iso_ns(j.get("ended_at")),
        "ran_s": j.get("ran_s", 0) if ran else None, "targets": j.get("targets", 0),
        "syscalls": [(s["name"], s["nr"], s["count"], s["errors"], s["p50_us"], s["p90_us"], s["p99_us"],
                      s["sum_us"], [(math.inf if b["le_us"] == "+Inf" else b["le_us"], b["count"])
                                    for b in s["buckets"]])
                     for s in j["syscalls"]],
        "drops": j.get("drops", 0), "drops_no_start": dr.get("no_start", 0),
        "drops_nr_out_of_range": dr.get("nr_out_of_range", 0),
    }


def grpc_view(m, ran=True):
    return {
        "state": m.state, "reason": m.reason, "mode": m.mode, "attached": m.attached,
        "max_duration_s": m.max_duration_s, "requested_s": m.requested_s,
        "started_unix_nano": m.started_unix_nano, "ends_unix_nano": m.ends_unix_nano,
        "ended_unix_nano": m.ended_unix_nano, "ran_s": m.ran_s if ran else None, "targets": m.targets,
        "syscalls": [(s.name, s.nr, s.count, s.errors, s.p50_us, s.p90_us, s.p99_us, s.sum_us,
                      [(b.le_us, b.count) for b in s.buckets])
                     for s in m.syscalls],
        "drops": m.drops, "drops_no_start": m.drops_no_start, "drops_nr_out_of_range": m.drops_nr_out_of_range,
    }


def agree(x, y):
    """Views equal; non-integral numbers to cJSON's printing precision (15
    significant digits, as same_number)."""
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(agree(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(agree(a, b) for a, b in zip(x, y))
    if isinstance(x, float) or isinstance(y, float):
        return x == y or math.isclose(x, y, rel_tol=1e-14, abs_tol=0)
    return x == y


def stat(m, name):
    return next((s for s in m.syscalls if s.name == name), None)


IDLE_STATE = "unavailable" if conftest.FORCE_PROCFS else "idle"


def test_get_syscall_investigation_idle(tmp_path, sctarget, gagent):
    pid = sctarget.start()
    g = gagent({"binary": sctarget.path}, test_events=False)
    assert g.a.wait_event("ONEPANEL_FOUND_MESSAGE")["pid"] == pid
    m = get_inv(g)
    assert m.state == IDLE_STATE
    assert m.max_duration_s == 300                    # ebpf.syscall_probe_max_duration's default
    assert (m.started_unix_nano, m.ends_unix_nano, m.ended_unix_nano, m.requested_s, m.targets) == (0, 0, 0, 0, 0)
    assert not m.attached and not m.syscalls
    assert ("eBPF mode" in m.reason) if conftest.FORCE_PROCFS else (m.reason == "")
    assert agree(grpc_view(m), rest_view(rest_inv(g)))
    assert sysprobe_links(g) == []


def test_start_syscall_investigation_bad_duration(tmp_path, sctarget, gagent):
    """Outside 1..max (here 10 s): INVALID_ARGUMENT, in both modes, and
    nothing starts."""
    sctarget.start()
    g = gagent({"binary": sctarget.path}, extra="ebpf:\n  syscall_probe_max_duration: 10s\n", test_events=False)
    g.a.wait_event("ONEPANEL_FOUND_MESSAGE")
    for d in [None, 0, -1, 0.999, 10.001, 11, 1e308, math.inf, -math.inf, math.nan]:
        req = pb.StartSyscallInvestigationRequest() if d is None else pb.StartSyscallInvestigationRequest(duration_s=d)
        err = rpc_error(lambda: g.stub.StartSyscallInvestigation(req, timeout=DEADLINE))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (d, err)
        assert err.details() == "duration_s must be between 1 and 10 (ebpf.syscall_probe_max_duration)", d
    m = get_inv(g)
    assert m.state == IDLE_STATE and m.max_duration_s == 10 and m.started_unix_nano == 0
    assert rest_inv(g)["state"] == IDLE_STATE
    assert sysprobe_links(g) == []


def test_syscall_investigation_counts_and_agrees_with_rest(tmp_path, sctarget, gagent):
    if conftest.FORCE_PROCFS:
        pytest.skip("eBPF is forced off by the environment")
    pid = sctarget.start()
    g = gagent({"binary": sctarget.path}, test_events=False)
    assert g.a.wait_event("ONEPANEL_FOUND_MESSAGE")["pid"] == pid

    # a short one, to its end: then nothing changes, so both views are equal
    m = start_inv(g, 1)
    assert m.state == "running" and m.requested_s == 1 and m.attached and m.targets == 1 and m.mode
    done = wait_for(lambda: (lambda x: x if x.state == "finished" else None)(get_inv(g)),
                    what="the first investigation to finish")
    assert not done.attached and done.ended_unix_nano >= done.started_unix_nano > 0
    assert agree(grpc_view(done), rest_view(rest_inv(g)))
    assert sysprobe_links(g) == []

    # a long one: running, from zero
    m = start_inv(g, 60)
    assert m.state == "running" and m.requested_s == 60 and m.attached and m.targets == 1
    assert m.started_unix_nano > 0 and m.ended_unix_nano == 0
    assert abs(m.ends_unix_nano - m.started_unix_nano - 60 * 10**9) <= 10**6     # both in ms
    assert len(sysprobe_links(g)) == 4                  # sys_enter, sys_exit, fork, exit

    # a second start is refused and changes nothing; REST says the same
    err = rpc_error(lambda: start_inv(g, 5))
    assert err.code() == grpc.StatusCode.ABORTED, err
    assert "ends in" in err.details()
    r = rest_start(g, 5)
    assert r.status_code == 409 and "ends in" in r.json()["error"]
    again = get_inv(g)
    assert (again.state, again.requested_s, again.started_unix_nano) == ("running", 60, m.started_unix_nano)

    sctarget.do("g", 1000)
    sctarget.do("c", 77)
    m = get_inv(g)
    gp, cl = stat(m, "getppid"), stat(m, "close")
    assert (gp.count, gp.errors) == (1000, 0)
    assert (cl.count, cl.errors) == (77, 77)
    for s in (gp, cl):
        assert s.nr > 0 and s.sum_us > 0
        assert s.p50_us <= s.p90_us <= s.p99_us
        assert sum(b.count for b in s.buckets) == s.count
        les = [b.le_us for b in s.buckets]
        assert les == sorted(les) and len(set(les)) == len(les)
    # The target's own write and read around each command may still be
    # completing: poll until both APIs show the same (ran_s moves on).
    wait_for(lambda: agree(grpc_view(get_inv(g), ran=False), rest_view(rest_inv(g), ran=False)),
             what="gRPC and REST to show the same investigation")


def test_start_syscall_investigation_when_always_on(tmp_path, sctarget, gagent):
    if conftest.FORCE_PROCFS:
        pytest.skip("eBPF is forced off by the environment")
    sctarget.start()
    g = gagent({"binary": sctarget.path}, extra="ebpf:\n  syscall_probe_always_on: true\n", test_events=False)
    g.a.wait_event("ONEPANEL_FOUND_MESSAGE")
    assert get_inv(g).state == "always_on"
    err = rpc_error(lambda: start_inv(g, 1))
    assert err.code() == grpc.StatusCode.ABORTED, err
    assert err.details() == rest_start(g, 1).json()["error"]
    sctarget.do("g", 42)
    m = get_inv(g)
    assert m.state == "always_on" and m.attached and stat(m, "getppid").count == 42
    assert len(sysprobe_links(g)) == 4


def test_start_syscall_investigation_refused_in_procfs_mode(tmp_path, sctarget, gagent):
    """Forced by the environment, or by ebpf.enabled: false."""
    sctarget.start()
    extra = "" if conftest.FORCE_PROCFS else "ebpf:\n  enabled: false\n"
    g = gagent({"binary": sctarget.path}, extra=extra, test_events=False)
    g.a.wait_event("ONEPANEL_FOUND_MESSAGE")
    assert g.status().mode == "procfs"
    err = rpc_error(lambda: start_inv(g, 1))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
    assert "eBPF mode" in err.details()
    r = rest_start(g, 1)
    assert r.status_code == 503 and r.json()["error"] == err.details()
    m = get_inv(g)
    assert m.state == "unavailable" and "eBPF mode" in m.reason and not m.attached
    assert agree(grpc_view(m), rest_view(rest_inv(g)))
    assert sysprobe_links(g) == []


def test_start_syscall_investigation_refused_without_onepanel(tmp_path, sctarget, gagent):
    g = gagent({"binary": sctarget.path}, test_events=False)      # configured, not running
    g.a.wait_event("AGENT_START_MESSAGE")
    err = rpc_error(lambda: start_inv(g, 1))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
    assert ("eBPF mode" if conftest.FORCE_PROCFS else "not running") in err.details()
    r = rest_start(g, 1)
    assert r.status_code == 503 and r.json()["error"] == err.details()
    assert get_inv(g).state == IDLE_STATE
    assert sysprobe_links(g) == []


# ---- errors ----

@pytest.mark.parametrize("method,body", [
    ("GetStatus", b"\xff\xff"),
    ("GetMetrics", b"\xff\xff"),
    ("GetMetrics", b"\x0a\x05ab"),          # name_prefix longer than the message
    ("StreamMetrics", b"\xff\xff"),
    ("StreamMetrics", b"\x10"),             # interval_ms without its varint
    ("Subscribe", b"\xff\xff"),
    ("Subscribe", b"\x12\x01a"),            # after_seq with the wrong wire type
    ("StartSyscallInvestigation", b"\xff\xff"),
    ("StartSyscallInvestigation", b"\x09\x00\x00"),  # duration_s: 2 of a double's 8 bytes
    ("GetSyscallInvestigation", b"\xff\xff"),
])
def test_malformed_request_is_invalid_argument(tmp_path, gagent, method, body):
    g = gagent()
    if method in ("GetStatus", "GetMetrics", "StartSyscallInvestigation", "GetSyscallInvestigation"):
        err = rpc_error(lambda: g.channel.unary_unary(PATH + method)(body, timeout=DEADLINE))
    else:
        err = rpc_error(lambda: list(g.channel.unary_stream(PATH + method)(body, timeout=DEADLINE)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    g.wait_streams(0)
    assert g.status().api.grpc_subscribers == 0
    assert g.status().pid == g.a.proc.pid      # still serving


@pytest.mark.parametrize("method", ["GetStatus", "GetMetrics", "StreamMetrics", "Subscribe",
                                    "StartSyscallInvestigation", "GetSyscallInvestigation"])
def test_call_without_request_message_fails_cleanly(tmp_path, gagent, method):
    """The client half-closes without sending a request: an error, not OK
    and not a call left open."""
    g = gagent()
    err = rpc_error(lambda: list(g.channel.stream_stream(PATH + method)(iter([]), timeout=DEADLINE)))
    assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), err
    g.wait_api("no call left open", lambda api: (api.grpc_streams, api.grpc_subscribers) == (0, 0))


def test_oversized_request_is_refused(tmp_path, gagent):
    g = gagent(test_events=False)
    err = rpc_error(lambda: g.stub.GetMetrics(pb.GetMetricsRequest(name_prefix="x" * (2 << 20)),
                                              timeout=DEADLINE))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert g.status().pid == g.a.proc.pid


@pytest.mark.parametrize("path,stream", [
    (PATH + "GetConfigs", False),
    (PATH + "applyConfig", True),
    ("/oneshield.agent.v1.Nope/GetStatus", False),
    ("/no.such.Service/Method", True),
])
def test_unknown_method_is_unimplemented(tmp_path, gagent, path, stream):
    g = gagent()
    if stream:
        err = rpc_error(lambda: list(g.channel.unary_stream(path)(b"", timeout=DEADLINE)))
    else:
        err = rpc_error(lambda: g.channel.unary_unary(path)(b"", timeout=DEADLINE))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED, err
    g.wait_streams(0)
    assert g.status().version


@pytest.mark.parametrize("types", [[99], [max(ET.values()) + 1], [-1], [ET.Value("AGENT_START_MESSAGE"), 1000]])
def test_unknown_event_type_is_invalid_argument(tmp_path, gagent, types):
    g = gagent()
    s = g.subscribe(after_seq=0, types=types)
    assert s.end() == []
    assert s.code() == grpc.StatusCode.INVALID_ARGUMENT, s.details()
    g.wait_streams(0)
    assert g.status().api.grpc_subscribers == 0


def test_max_subscribers_resource_exhausted(tmp_path, gagent):
    g = gagent(api={"max_subscribers": 2})
    s1, s2 = g.subscribe(), g.subscribe()
    assert s1.next().seq == 1 and s2.next().seq == 1
    g.wait_subscribers(2)
    s3 = g.subscribe()
    assert s3.end() == []
    assert s3.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, s3.details()
    # other streams do not count against the cap
    met = Stream(g.stub.StreamMetrics(pb.StreamMetricsRequest(interval_ms=100)))
    met.next()
    s1.cancel()
    g.wait_subscribers(1)
    s4 = g.subscribe()
    assert s4.next().seq == 1
    # the survivors still get live events
    g.assert_live((s2, s4))
    for s in (s2, s4, met):
        s.cancel()
    g.wait_streams(0)


def test_deadlines_are_honoured(tmp_path, gagent):
    g = gagent()
    sub = g.subscribe(after_seq=0, timeout=1)
    met = Stream(g.stub.StreamMetrics(pb.StreamMetricsRequest(interval_ms=100), timeout=1))
    # whatever arrived before the deadline is right; then the call ends
    assert [ET.Name(m.type) for m in sub.end()] in ([], ["AGENT_START_MESSAGE"])
    assert all(m.families for m in met.end())
    assert sub.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert met.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    g.wait_api("calls freed after their deadline",
               lambda api: (api.grpc_streams, api.grpc_subscribers) == (0, 0))


def test_shutdown_delivers_agent_stop_to_every_stream(tmp_path, gagent):
    g = gagent()
    start = g.last_seq()
    subs = [g.subscribe(after_seq=start) for _ in range(10)]
    met = Stream(g.stub.StreamMetrics(pb.StreamMetricsRequest(interval_ms=100)))
    g.wait_subscribers(10)
    met.next()
    g.a.proc.send_signal(signal.SIGTERM)
    for s in subs:
        e = s.next()
        assert e.type == ET.Value("AGENT_STOP_MESSAGE") and e.seq == start + 1
        assert e.pid == g.a.proc.pid
        assert s.end() == [], "messages after AGENT_STOP_MESSAGE"
        assert s.code() == OK, s.details()
    met.end()
    assert met.code() == OK, met.details()
    assert g.a.proc.wait(timeout=DEADLINE) == 0
    assert "did not finish" not in g.a.log.text()


def test_new_calls_refused_cleanly_after_shutdown(tmp_path, gagent):
    """After the agent exits, a call fails as UNAVAILABLE, not a hang."""
    g = gagent()
    assert g.a.stop() == 0
    err = rpc_error(lambda: g.status())
    assert err.code() == grpc.StatusCode.UNAVAILABLE


# ---- server reflection (tests/e2e/reflection_client.py) ----

def _reflection_client():
    try:
        import reflection_client
    except ModuleNotFoundError as e:
        if e.name != "reflection_client":
            raise
        pytest.skip("tests/e2e/reflection_client.py is not there")
    return reflection_client


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
def test_reflection_lists_services(tmp_path, gagent, version):
    rc = _reflection_client()
    g = gagent(test_events=False)
    names = rc.list_services(g.a.grpc_target, version=version, timeout=DEADLINE)
    assert set(names) == {SERVICE, "grpc.reflection.v1alpha.ServerReflection",
                          "grpc.reflection.v1.ServerReflection"}, names
    assert len(names) == len(set(names))
    g.wait_streams(0)


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
@pytest.mark.parametrize("symbol", [SERVICE, "oneshield.agent.v1.Event", f"{SERVICE}.Subscribe",
                                    f"{SERVICE}.GetSyscallInvestigation", "oneshield.agent.v1.SyscallBucket"])
def test_reflection_file_containing_symbol(tmp_path, gagent, symbol, version):
    rc = _reflection_client()
    g = gagent(test_events=False)
    files = rc.file_containing_symbol(g.a.grpc_target, symbol, version=version, timeout=DEADLINE)
    fd = files[0]
    assert fd.name == "oneshield/agent/v1/agent.proto"
    assert fd.package == "oneshield.agent.v1"
    svc = {s.name: s for s in fd.service}["Agent"]
    streams = {m.name: m.server_streaming for m in svc.method}
    assert streams == {"GetStatus": False, "GetMetrics": False, "StreamMetrics": True, "Subscribe": True,
                       "GetConfig": False, "GetConfigFile": False, "ApplyConfig": False,
                       "StartSyscallInvestigation": False, "GetSyscallInvestigation": False}
    # the served descriptor is the one these tests were generated from
    ours = pb.DESCRIPTOR.services_by_name["Agent"]
    assert [m.name for m in svc.method] == [m.name for m in ours.methods]
    assert [m.name for m in fd.message_type] == list(pb.DESCRIPTOR.message_types_by_name)
    assert [e.name for e in fd.enum_type] == list(pb.DESCRIPTOR.enum_types_by_name)
    # and it is complete: a pool built from it resolves the service's types
    pool = rc.pool_of(files)
    m = pool.FindMethodByName(f"{SERVICE}.Subscribe")
    assert m.input_type.full_name == "oneshield.agent.v1.SubscribeRequest"
    assert m.output_type.full_name == "oneshield.agent.v1.Event"
    m = pool.FindMethodByName(f"{SERVICE}.StartSyscallInvestigation")
    assert m.input_type.full_name == "oneshield.agent.v1.StartSyscallInvestigationRequest"
    assert m.output_type.full_name == "oneshield.agent.v1.SyscallInvestigation"
    stat_fields = pool.FindMessageTypeByName("oneshield.agent.v1.SyscallStat").fields_by_name
    assert stat_fields["buckets"].message_type.full_name == "oneshield.agent.v1.SyscallBucket"
    g.wait_streams(0)


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
def test_reflection_unknown_symbol_not_found(tmp_path, gagent, version):
    rc = _reflection_client()
    g = gagent(test_events=False)
    with pytest.raises(rc.ReflectionError) as ei:
        rc.file_containing_symbol(g.a.grpc_target, "no.such.Symbol", version=version, timeout=DEADLINE)
    assert ei.value.code == rc.NOT_FOUND
    g.wait_streams(0)
    assert g.status().version
