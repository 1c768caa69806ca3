"""Config management over gRPC (GetConfig, GetConfigFile, ApplyConfig),
against the simulator: the same semantics as the REST API."""
import hashlib
import os
import re
import urllib.request

import grpc
import pytest

from conftest import agent_yaml, sim_onepanel, wait_for
from grpcstubs import stubs


def sim_port(sim):
    import re
    m = re.findall(r"listening on 127\.0\.0\.1:(\d+)", open(sim.error_log).read())
    return int(m[-1])


def served(sim):
    return urllib.request.urlopen(f"http://127.0.0.1:{sim_port(sim)}/", timeout=10).read().decode()


@pytest.fixture
def env(tmp_path, sim, agents):
    # the simulator's config alone in its own allowed dir
    sim.start()
    a = agents(tmp_path, agent_yaml(sim_onepanel(sim), grpc=True))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    pb, pbg = stubs()
    ch = grpc.insecure_channel(a.grpc_target)
    yield a, sim, pb, pbg.AgentStub(ch), ch
    ch.close()


def result_from(err, pb):
    md = dict(err.trailing_metadata() or ())
    raw = md.get("oneshield-apply-result-bin")
    assert raw is not None, f"no result trailer in {md}"
    r = pb.ApplyConfigResult()
    r.ParseFromString(raw)
    return r


def test_get_config_and_file_match_rest(env):
    a, sim, pb, stub, _ = env
    listing = stub.GetConfig(pb.GetConfigRequest(), timeout=10)
    rest = a.get("/v1/config").json()["files"]
    assert [f.path for f in listing.files] == [f["path"] for f in rest]
    assert [f.sha256 for f in listing.files] == [f["sha256"] for f in rest]
    assert [f.size for f in listing.files] == [f["size"] for f in rest]
    assert [f.mode for f in listing.files] == [int(f["mode"], 8) for f in rest]
    f = stub.GetConfigFile(pb.GetConfigFileRequest(path=sim.conf), timeout=10)
    data = open(sim.conf, "rb").read()
    assert f.content == data and f.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(grpc.RpcError) as e:
        stub.GetConfigFile(pb.GetConfigFileRequest(path="/etc/passwd"), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as e:
        stub.GetConfigFile(pb.GetConfigFileRequest(path=os.path.join(sim.dir, "missing.conf")), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_apply_success_reloads(env):
    a, sim, pb, stub, _ = env
    new = open(sim.conf).read() + "message via-grpc;\n"
    r = stub.ApplyConfig(pb.ApplyConfigRequest(files=[pb.FileChange(path=sim.conf, content=new.encode())]),
                         timeout=60)
    assert r.status == "applied" and r.reloaded
    assert r.validator.exit_code == 0 and r.validator.WhichOneof("end") == "exit_code"
    assert r.files[0].sha256_after == hashlib.sha256(new.encode()).hexdigest()
    wait_for(lambda: "via-grpc" in served(sim), what="new message served")
    evs = {e["seq"]: e for e in a.events()}
    assert [evs[s]["type"] for s in r.events] == ["ONEPANEL_RELOAD_SUCCESS_MESSAGE", "CONFIG_APPLY_SUCCESS_MESSAGE"]
    assert all(evs[s]["correlation_id"] == r.correlation_id for s in r.events)
    a.log.wait_line(r"grpc:.*" + re.escape(r.correlation_id) + "|" + re.escape(r.correlation_id) + ".*grpc:")  # audit line names the peer


def test_apply_invalid_is_failed_precondition_with_result(env):
    a, sim, pb, stub, _ = env
    before = open(sim.conf, "rb").read()
    with pytest.raises(grpc.RpcError) as e:
        stub.ApplyConfig(pb.ApplyConfigRequest(files=[pb.FileChange(path=sim.conf, content=before + b"bogus 1;\n")]),
                         timeout=60)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    r = result_from(e.value, pb)
    assert r.status == "invalid" and r.validator.exit_code == 1 and "[emerg]" in r.validator.output
    assert open(sim.conf, "rb").read() == before


def test_apply_dry_run_and_no_reload(env):
    a, sim, pb, stub, _ = env
    before = open(sim.conf, "rb").read()
    r = stub.ApplyConfig(pb.ApplyConfigRequest(files=[pb.FileChange(path=sim.conf, content=before + b"message dry;\n")],
                                               dry_run=True), timeout=60)
    assert r.status == "dry_run_ok" and r.dry_run and not r.reloaded
    assert open(sim.conf, "rb").read() == before
    r = stub.ApplyConfig(pb.ApplyConfigRequest(files=[pb.FileChange(path=sim.conf, content=before + b"message nr;\n")],
                                               no_reload=True), timeout=60)
    assert r.status == "applied" and not r.reloaded
    assert b"message nr;" in open(sim.conf, "rb").read()
    assert "nr" not in served(sim)


@pytest.mark.parametrize("path,code", [
    ("/etc/oneshield-escape.conf", grpc.StatusCode.PERMISSION_DENIED),
    ("relative.conf", grpc.StatusCode.INVALID_ARGUMENT),
])
def test_apply_bad_paths(env, path, code):
    a, sim, pb, stub, _ = env
    with pytest.raises(grpc.RpcError) as e:
        stub.ApplyConfig(pb.ApplyConfigRequest(files=[pb.FileChange(path=path, content=b"x")]), timeout=30)
    assert e.value.code() == code
    assert not os.path.exists("/etc/oneshield-escape.conf")


def test_apply_limits_and_malformed(env):
    a, sim, pb, stub, ch = env
    with pytest.raises(grpc.RpcError) as e:
        stub.ApplyConfig(pb.ApplyConfigRequest(files=[pb.FileChange(path=f"{sim.dir}/f{i}.conf", content=b"x")
                                                      for i in range(300)]), timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as e:
        stub.ApplyConfig(pb.ApplyConfigRequest(files=[pb.FileChange(path=sim.conf, content=b"a"),
                                                      pb.FileChange(path=sim.conf, content=b"b")]), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        ch.unary_unary("/oneshield.agent.v1.Agent/ApplyConfig")(b"\xff\xff\xff", timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not any(n.startswith("f") for n in os.listdir(sim.dir))


def _yaml_with(sim, extra):
    cfg = agent_yaml(sim_onepanel(sim), grpc=True)
    lines = "".join(f"  {k}: {v}\n" for k, v in extra.items())
    return cfg.replace("onepanel:\n", "onepanel:\n" + lines, 1)


def test_health_url_must_answer_2xx(tmp_path, sim, agents):
    """With health_url, a reload counts only once the URL answers 2xx: the
    simulator's /healthz does, a port with nothing listening never does,
    so that apply fails and is rolled back (and the rollback cannot be
    verified either: rollback_failed)."""
    sim.start()
    port = sim_port(sim)
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    good = agents(tmp_path / "good", _yaml_with(sim, {"health_url": f"http://127.0.0.1:{port}/healthz"}))
    good.wait_event("ONEPANEL_FOUND_MESSAGE")
    pb, pbg = stubs()
    new = open(sim.conf).read() + "message healthy;\n"
    with grpc.insecure_channel(good.grpc_target) as ch:
        r = pbg.AgentStub(ch).ApplyConfig(pb.ApplyConfigRequest(files=[pb.FileChange(path=sim.conf,
                                                                                     content=new.encode())]),
                                          timeout=60)
    assert r.status == "applied" and r.reloaded
    good.stop()

    from conftest import free_port
    dead = free_port()
    bad = agents(tmp_path / "bad", _yaml_with(sim, {"health_url": f"http://127.0.0.1:{dead}/healthz",
                                                    "reload_timeout": "1s"}))
    bad.wait_event("ONEPANEL_FOUND_MESSAGE")
    before = open(sim.conf, "rb").read()
    with grpc.insecure_channel(bad.grpc_target) as ch:
        with pytest.raises(grpc.RpcError) as e:
            pbg.AgentStub(ch).ApplyConfig(pb.ApplyConfigRequest(files=[pb.FileChange(
                path=sim.conf, content=before.replace(b"message healthy;", b"message unhealthy;"))]), timeout=60)
    r = result_from(e.value, pb)
    assert r.status == "rollback_failed", r
    assert f"127.0.0.1:{dead}" in r.message
    assert open(sim.conf, "rb").read() == before


def test_configured_limits(tmp_path, sim, agents):
    sim.start()
    a = agents(tmp_path, _yaml_with(sim, {"max_file_size": "1KiB", "max_files": 2}))
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    r = requests_post(a, {"files": [{"path": f"{sim.dir}/big.conf", "content": "x" * 1025}]})
    assert r.status_code == 413
    r = requests_post(a, {"files": [{"path": f"{sim.dir}/f{i}.conf", "content": "x"} for i in range(3)]})
    assert r.status_code == 413
    assert not any(n.startswith(("f", "big")) for n in os.listdir(sim.dir))


def requests_post(a, body):
    import requests
    return requests.post(a.base + "/v1/config/apply", json=body, timeout=60)


@pytest.mark.parametrize("strict", [False, True])
def test_validator_warnings_fail_only_when_asked(tmp_path, sim, agents, strict):
    sim.start()
    script = tmp_path / "warn-validator.sh"
    script.write_text("#!/bin/sh\necho 'onepanel: [warn] conflicting server name \"x\" on 0.0.0.0:80, ignored'\n"
                      "exit 0\n")
    script.chmod(0o755)
    extra = {"validate_command": f"\"{script}\""}
    if strict:
        extra["validate_fail_on_warn"] = "true"
    cfg = _yaml_with(sim, extra)
    # the later validate_command line of sim_onepanel must not win: drop it
    cfg = "\n".join(ln for ln in cfg.splitlines() if not (ln.startswith("  validate_command:") and
                                                          str(script) not in ln)) + "\n"
    a = agents(tmp_path, cfg)
    a.wait_event("ONEPANEL_FOUND_MESSAGE")
    before = open(sim.conf).read()
    r = requests_post(a, {"files": [{"path": sim.conf, "content": before + "message warned;\n"}]})
    if strict:
        assert r.status_code == 422 and r.json()["status"] == "invalid"
        assert open(sim.conf).read() == before
    else:
        assert r.status_code == 200 and r.json()["status"] == "applied"
    assert "[warn]" in r.json()["validator"]["output"]
