"""Python stubs for proto/oneshield/agent/v1/agent.proto, generated at test
time (once per pytest session) with Debian's protoc and grpc_python_plugin
into a temporary directory; nothing generated is committed.

    from grpcstubs import stubs
    pb, pb_grpc = stubs()          # agent_pb2, agent_pb2_grpc
    stub = pb_grpc.AgentStub(channel)
    stub.GetStatus(pb.GetStatusRequest())
"""
import atexit
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")
AGENT_PROTO = "oneshield/agent/v1/agent.proto"
PROTOC = os.environ.get("PROTOC", "protoc")
GRPC_PYTHON_PLUGIN = os.environ.get("GRPC_PYTHON_PLUGIN", "/usr/bin/grpc_python_plugin")

_cache = {}


def _generate():
    out = tempfile.mkdtemp(prefix="oneshield-pb-")
    atexit.register(shutil.rmtree, out, True)
    cmd = [PROTOC, f"-I{PROTO_DIR}", f"--python_out={out}",
           f"--plugin=protoc-gen-grpc_python={GRPC_PYTHON_PLUGIN}", f"--grpc_python_out={out}",
           os.path.join(PROTO_DIR, AGENT_PROTO)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return out


def stubs():
    """(agent_pb2, agent_pb2_grpc), generated and imported on first use."""
    if "mods" not in _cache:
        out = _generate()
        sys.path.insert(0, out)
        importlib.invalidate_caches()
        pb = importlib.import_module("oneshield.agent.v1.agent_pb2")
        pb_grpc = importlib.import_module("oneshield.agent.v1.agent_pb2_grpc")
        _cache["mods"] = (pb, pb_grpc)
    return _cache["mods"]


# ---- the management plane (proto/oneshield/mgmt/v1/mgmt.proto) ----

MGMT_PROTO = "oneshield/mgmt/v1/mgmt.proto"


def mgmt_stubs():
    """(mgmt_pb2, mgmt_pb2_grpc), generated and imported on first use; they
    import agent_pb2, which stubs() provides (and is called for)."""
    if "mgmt" not in _cache:
        stubs()
        out = tempfile.mkdtemp(prefix="oneshield-mgmt-pb-")
        atexit.register(shutil.rmtree, out, True)
        cmd = [PROTOC, f"-I{PROTO_DIR}", f"--python_out={out}",
               f"--plugin=protoc-gen-grpc_python={GRPC_PYTHON_PLUGIN}", f"--grpc_python_out={out}",
               os.path.join(PROTO_DIR, MGMT_PROTO)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        sys.path.insert(0, out)
        importlib.invalidate_caches()
        pb = importlib.import_module("oneshield.mgmt.v1.mgmt_pb2")
        pb_grpc = importlib.import_module("oneshield.mgmt.v1.mgmt_pb2_grpc")
        _cache["mgmt"] = (pb, pb_grpc)
    return _cache["mgmt"]
