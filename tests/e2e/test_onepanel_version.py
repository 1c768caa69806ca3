"""onepanel's own version (onepanel.version_command): found out each time
onepanel is found, shown in the status (REST and gRPC), the metrics and One
Shield's Hello."""
import re
import signal

from conftest import SIM_BIN, agent_yaml, free_port, sim_onepanel, wait_for, yq
from grpcstubs import stubs
from test_mgmt_client import oneshield_yaml, status as mgmt_status, wait_connected
from test_mgmt_server import servers  # noqa: F401 (the fixture)

import grpc

pb, pb_grpc = stubs()


def onepanel_status(a):
    return a.get("/v1/status").json()["onepanel"]


def wait_version(a, want):
    return wait_for(lambda: (lambda o: o if o.get("version_state") != "running" and
                             o.get("version") == want else None)(onepanel_status(a)),
                    what=f"onepanel version {want!r}")


def test_version_everywhere_and_again_at_each_find(tmp_path, sim, agents):
    runs = tmp_path / "runs"
    # counts its runs: the version says which run it came from
    cmd = f"/bin/sh -c 'echo run >> {runs}; echo \"x version: n$(wc -l < {runs})\"'"
    sim.start()
    op = dict(sim_onepanel(sim), version_command=yq(cmd))
    a = agents(tmp_path, agent_yaml(op, grpc=True))
    wait_version(a, "n1")
    # in the next collection
    wait_for(lambda: 'onepanel_info{version="n1"} 1' in a.get("/metrics").text, what="onepanel_info in /metrics")
    with grpc.insecure_channel(a.grpc_target) as ch:
        st = pb_grpc.AgentStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10)
    assert st.onepanel.version == "n1"

    # a restart may be an upgrade: found again, asked again
    after = a.last_seq()
    sim.kill()
    a.wait_event("ONEPANEL_STOP_MESSAGE", after=after)
    sim.start()
    a.wait_event("ONEPANEL_FOUND_MESSAGE", after=after)
    wait_version(a, "n2")
    assert open(runs).read() == "run\nrun\n"
    a.log.wait_line(r"onepanel: version n2")

    # the simulator's own -v, by a reload of the agent's config
    text = open(a.config_path).read()
    with open(a.config_path, "w") as f:
        f.write(re.sub(r"^  version_command: .*$", f"  version_command: \"{SIM_BIN} -v\"", text, flags=re.M))
    a.proc.send_signal(signal.SIGHUP)
    wait_version(a, "onepanel-sim/1.0.0")
    assert open(runs).read() == "run\nrun\n"   # the old command is not run again
    assert a.stop() == 0


def test_failing_command_is_said_and_changes_nothing_else(tmp_path, sim, agents):
    sim.start()
    op = dict(sim_onepanel(sim), version_command=yq("/bin/sh -c 'echo no such flag >&2; exit 2'"))
    a = agents(tmp_path, agent_yaml(op))
    o = wait_for(lambda: (lambda o: o if o.get("version_state") == "failed" else None)(onepanel_status(a)),
                 what="version_state failed")
    assert o["version_error"] == "exited with status 2" and "version" not in o
    assert o["state"] == "running"
    a.log.wait_line(r"WARN\s+onepanel: version_command: exited with status 2")
    n = a.get("/v1/status").json()["metrics"]["collections"]
    wait_for(lambda: a.get("/v1/status").json()["metrics"]["collections"] > n + 1, what="a collection after it")
    assert "onepanel_info{" not in a.get("/metrics").text
    assert a.stop() == 0


def test_off_by_default(tmp_path, sim, agents):
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim)))
    wait_for(lambda: onepanel_status(a)["state"] == "running", what="onepanel found")
    o = onepanel_status(a)
    assert "version" not in o and "version_state" not in o
    assert "onepanel_info" not in a.get("/metrics").text
    assert a.stop() == 0


def test_relative_command_is_refused(tmp_path, sim):
    from test_tls import refused
    op = dict(sim_onepanel(sim), version_command="\"onepanel-sim -v\"")
    rc, err = refused(tmp_path, agent_yaml(op))
    assert rc == 1 and "onepanel.version_command:" in err and "absolute" in err, err


def test_hello_carries_the_version(tmp_path, sim, agents, servers):  # noqa: F811
    sim.start()
    port = free_port()
    op = dict(sim_onepanel(sim), version_command=f"\"{SIM_BIN} -v\"")
    a = agents(tmp_path, agent_yaml(op, extra=oneshield_yaml(tmp_path, port)))
    # the server comes up after the version is known: the Hello has it
    wait_version(a, "onepanel-sim/1.0.0")
    srv = servers(tmp_path, port=port)
    aid = wait_connected(a)["agent_id"]
    d = srv.wait_agent(aid, lambda x: x["metrics_received"] >= 1, "a metrics report")
    assert d["hello"]["onepanel_version"] == "onepanel-sim/1.0.0"

    # a report from a collection after the version was known (the first one
    # may come from an earlier snapshot)
    def info():
        m = srv.get(f"/v1/agents/{aid}/metrics").json()["snapshot"] or {"families": []}
        return next((f for f in m["families"] if f["name"] == "onepanel_info"), None)
    fam = wait_for(info, what="onepanel_info in a report")
    assert "onepanel-sim/1.0.0" in str(fam)
    assert mgmt_status(a)["connected"]
    assert a.stop() == 0
