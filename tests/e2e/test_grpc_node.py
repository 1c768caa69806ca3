"""The gRPC API from a second implementation: Node's @grpc/grpc-js with
@grpc/proto-loader (tests/node/client.js, dependencies pinned by the
committed package-lock.json and installed with `npm ci` once per session)."""
import fcntl
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile

import conftest
import grpc
import pytest
import requests

from conftest import DEADLINE, EXPECT_MODE, ROOT, agent_yaml, free_port, have, sim_onepanel, wait_for
from grpcstubs import stubs

pb, pb_grpc = stubs()

NODE_DIR = os.path.join(ROOT, "tests", "node")
CLIENT = os.path.join(NODE_DIR, "client.js")
CALL_TIMEOUT = 3 * DEADLINE


@pytest.fixture(scope="session")
def node_ready():
    if not have("node"):
        pytest.skip("node is not installed")
    npm = shutil.which("npm")
    assert npm, "node is installed but npm is not"
    # `npm ci` replaces tests/node/node_modules: not while another session on
    # this checkout uses it. Exclusive to install, shared while we use it.
    lock = os.path.join(tempfile.gettempdir(),
                        "oneshield-npm-ci-" + hashlib.sha1(NODE_DIR.encode()).hexdigest()[:12] + ".lock")
    with open(lock, "w") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True,
                           text=True, timeout=600)
        fcntl.flock(lf, fcntl.LOCK_SH)
        assert r.returncode == 0, f"npm ci failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        yield


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


def node_cmd(target, *args):
    return ["node", CLIENT, target, *(str(a) for a in args)]


def node_env(target):
    """The client's environment: its deadline, and the agent's token (the
    fixture's, see conftest's authentication notes)."""
    env = dict(os.environ, ONESHIELD_CLIENT_DEADLINE_MS=str(int(CALL_TIMEOUT * 1000)))
    if conftest.TOKENS.get(target):
        env["ONESHIELD_TOKEN"] = conftest.TOKENS[target]
    return env


def parse(out):
    return [json.loads(ln) for ln in out.splitlines() if ln.strip()]


def node(target, *args):
    """Run client.js to completion: (exit code, JSON lines)."""
    r = subprocess.run(node_cmd(target, *args), capture_output=True, text=True, timeout=CALL_TIMEOUT + 30,
                       env=node_env(target))
    out = parse(r.stdout)
    if r.returncode not in (0, 1) or not out:
        raise AssertionError(f"client.js {' '.join(map(str, args))}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r.returncode, out


class G:
    def __init__(self, agent):
        self.a = agent
        self.channel = grpc.insecure_channel(agent.grpc_target)
        self.stub = pb_grpc.AgentStub(self.channel)

    def status(self):
        return self.stub.GetStatus(pb.GetStatusRequest(), timeout=DEADLINE)

    def gen(self, count):
        before = self.status().events.last_seq
        r = requests.post(self.a.base + "/v1/test/events", params={"count": count, "rate": 0}, timeout=DEADLINE)
        assert r.status_code == 202, r.text
        return before + count


@pytest.fixture
def gagent(agents, tmp_path, monkeypatch, node_ready):
    made = []

    def make(onepanel=None, interval=None):
        monkeypatch.setenv("ONESHIELD_TEST_EVENTS", "1")
        text = agent_yaml(onepanel, grpc=True)
        if interval:
            text = text.replace("interval: 200ms", f"interval: {interval}")
        g = G(agents(tmp_path, text))
        made.append(g)
        return g

    yield make
    for g in made:
        g.channel.close()


def test_node_get_status(tmp_path, private_sim, gagent):
    sim = private_sim
    pid = sim.start()
    g = gagent(sim_onepanel(sim))
    g.a.wait_event("ONEPANEL_FOUND_MESSAGE")
    rc, out = node(g.a.grpc_target, "status")
    assert rc == 0 and len(out) == 1
    st, r = out[0], g.a.get("/v1/status").json()
    assert st["version"] == r["version"] and st["version"]
    assert st["pid"] == r["pid"] == g.a.proc.pid
    assert st["mode"] == r["mode"] == EXPECT_MODE
    assert st["config_path"] == g.a.config_path
    assert st["onepanel"]["state"] == r["onepanel"]["state"] == "running"
    assert st["onepanel"]["pid"] == r["onepanel"]["pid"] == pid
    assert st["onepanel"]["tracking"] == r["onepanel"]["tracking"]
    assert st["onepanel"]["binary"] == r["onepanel"]["binary"] == conftest.SIM_BIN
    # 64-bit fields come as decimal strings
    assert int(st["events"]["last_seq"]) == r["events"]["last_seq"]
    assert int(st["events"]["capacity"]) == r["events"]["capacity"]
    assert st["api"]["grpc_listen"] == g.a.grpc_target
    assert st["api"]["rest_listen"] == r["api"]["rest_listen"]


def same_number(rest_value, node_value):
    """/v1/metrics writes NaN/Inf as strings (JSON.stringify: null) and
    numbers with cJSON's 15 significant digits."""
    if isinstance(rest_value, str):
        return node_value is None and rest_value in ("NaN", "+Inf", "-Inf")
    return isinstance(node_value, (int, float)) and math.isclose(rest_value, node_value, rel_tol=1e-14, abs_tol=0)


def exact(node_value, pb_value):
    """A double through protobufjs and JSON.stringify is the one Python got."""
    if node_value is None:
        return math.isnan(pb_value) or math.isinf(pb_value)
    return node_value == pb_value


@pytest.mark.parametrize("prefix", ["", "node_", "oneshield_agent_", "no_such_metric_"])
def test_node_get_metrics(tmp_path, gagent, prefix):
    g = gagent(interval="1h")       # one snapshot for the whole test
    rc, out = node(g.a.grpc_target, "metrics", prefix)
    assert rc == 0 and len(out) == 1
    snap = out[0]
    rest = g.a.get("/v1/metrics", params={"prefix": prefix} if prefix else {}).json()["metrics"]
    py = g.stub.GetMetrics(pb.GetMetricsRequest(name_prefix=prefix), timeout=DEADLINE)
    assert [f["name"] for f in snap["families"]] == [f["name"] for f in rest] == [f.name for f in py.families]
    assert bool(rest) == (prefix != "no_such_metric_")
    types = {"counter": "METRIC_TYPE_COUNTER", "gauge": "METRIC_TYPE_GAUGE", "histogram": "METRIC_TYPE_HISTOGRAM"}
    for f, rf, pf in zip(snap["families"], rest, py.families):
        assert f["type"] == types[rf["type"]] and f["help"] == rf["help"], f["name"]
        assert len(f["samples"]) == len(rf["samples"]) == len(pf.samples)
        for s, rs, ps in zip(f["samples"], rf["samples"], pf.samples):
            assert [(lb["name"], lb["value"]) for lb in s["labels"]] == list(rs["labels"].items())
            if rf["type"] == "histogram":
                assert int(s["histogram"]["count"]) == rs["count"] == ps.histogram.count
                assert [(b["upper_bound"], int(b["cumulative_count"])) for b in s["histogram"]["buckets"]] == \
                    [(b["le"], b["count"]) for b in rs["buckets"]]
                assert exact(s["histogram"]["sum"], ps.histogram.sum)
            else:
                assert same_number(rs["value"], s["value"]), (f["name"], rs, s)
                assert exact(s["value"], ps.value), (f["name"], s, ps)
    assert int(snap["time_unix_nano"]) > 0


def test_node_subscribe_type_filter_and_after_seq(tmp_path, private_sim, gagent):
    sim = private_sim
    pid = sim.start()
    g = gagent(sim_onepanel(sim))
    found = g.a.wait_event("ONEPANEL_FOUND_MESSAGE")
    g.gen(5)
    sim.kill(signal.SIGKILL)
    stop = g.a.wait_event("ONEPANEL_STOP_MESSAGE")
    last = g.gen(5)
    types = ["ONEPANEL_STOP_MESSAGE", "TEST_EVENT_MESSAGE"]

    # journaled: everything after FOUND of those types, in order
    rc, out = node(g.a.grpc_target, "subscribe", found["seq"], ",".join(types), 11)
    assert rc == 0
    want = g.a.events(after=found["seq"], types=types)
    assert len(want) == 11 and want[-1]["seq"] == last
    assert [(int(e["seq"]), e["type"]) for e in out] == [(e["seq"], e["type"]) for e in want]
    (s,) = [e for e in out if e["type"] == "ONEPANEL_STOP_MESSAGE"]
    assert int(s["seq"]) == stop["seq"] and s["pid"] == pid
    assert s["exit"] == "signal" and s["signal"] == 9
    assert all(e["type"] == "TEST_EVENT_MESSAGE" and e["level"] == "LEVEL_DEBUG" for e in out if e is not s)

    # live: started before the events exist
    p = subprocess.Popen(node_cmd(g.a.grpc_target, "subscribe", last, "TEST_EVENT_MESSAGE", 3),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=node_env(g.a.grpc_target))
    try:
        wait_for(lambda: g.status().api.grpc_subscribers == 1 or p.poll() is not None, what="node subscriber")
        assert p.poll() is None, p.communicate()
        sim.start()
        g.a.wait_event("ONEPANEL_FOUND_MESSAGE", after=last)   # filtered out
        end = g.gen(3)
        stdout, stderr = p.communicate(timeout=CALL_TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, stderr
    live = parse(stdout)
    assert [int(e["seq"]) for e in live] == [end - 2, end - 1, end]
    assert all(e["type"] == "TEST_EVENT_MESSAGE" for e in live)
    wait_for(lambda: g.status().api.grpc_streams == 0, what="node stream closed")


def test_node_stream_metrics(tmp_path, gagent):
    g = gagent()
    rc, out = node(g.a.grpc_target, "stream-metrics", "node_", 1, 3)
    assert rc == 0 and len(out) == 3
    times = [int(s["time_unix_nano"]) for s in out]
    assert times[0] < times[1] < times[2]
    for s in out:
        assert s["families"] and all(f["name"].startswith("node_") for f in s["families"])
    wait_for(lambda: g.status().api.grpc_streams == 0, what="cancelled stream freed")


def test_node_error_status(tmp_path, gagent):
    g = gagent()
    rc, out = node(g.a.grpc_target, "subscribe", 0, "AGENT_START_MESSAGE,99", 5)
    assert rc == 1
    assert out[-1]["error"]["code"] == 3 and out[-1]["error"]["name"] == "INVALID_ARGUMENT"
    assert not [ln for ln in out if "error" not in ln], "events before the error"
    assert g.status().api.grpc_subscribers == 0
    # nobody listening: UNAVAILABLE, a clean error too
    rc, out = node(f"127.0.0.1:{free_port()}", "status")
    assert rc == 1 and out[-1]["error"]["code"] == 14
