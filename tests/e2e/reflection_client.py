"""A small gRPC server reflection client for the black-box tests.

    from reflection_client import list_services, file_containing_symbol

    assert "oneshield.agent.v1.Agent" in list_services("localhost:9441")
    files = file_containing_symbol("localhost:9441", "oneshield.agent.v1.Agent")
    assert files[0].name == "oneshield/agent/v1/agent.proto"

It needs nothing but Debian's python3-grpcio and python3-protobuf and
protoc: the message classes are generated at first use from the repository's
own proto/grpc/reflection/<version>/reflection.proto with
`protoc --python_out` into a temporary directory (grpc_tools is not packaged
by Debian), and the bidi stream is a hand-written stub over
channel.stream_stream().

Every function takes a target ("localhost:9441") or an open grpc.Channel,
and version "v1alpha" (the default, as grpcurl asks first) or "v1". A
response carrying error_response raises ReflectionError with its code.

Run as a script: `reflection_client.py --self-check` generates and exercises
the message classes without a server; `reflection_client.py TARGET [SYMBOL]`
lists the services, or prints the files defining SYMBOL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator, List, Union

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"
PROTOC = os.environ.get("PROTOC", "protoc")

VERSIONS = ("v1alpha", "v1")
METHODS = {v: f"/grpc.reflection.{v}.ServerReflection/ServerReflectionInfo" for v in VERSIONS}

# gRPC status codes the agent puts in error_response.error_code.
INVALID_ARGUMENT = 3
NOT_FOUND = 5

Target = Union[str, grpc.Channel]

_modules: dict = {}
_lock = threading.Lock()


class ReflectionError(Exception):
    """A response that carried error_response."""

    def __init__(self, code: int, message: str):
        super().__init__(f"reflection error {code}: {message}")
        self.code = code
        self.message = message


def reflection_pb2(version: str = "v1alpha"):
    """The protoc-generated module of proto/grpc/reflection/<version>/reflection.proto.

    Generated once per process. The file is loaded under a private module
    name: its natural one, grpc.reflection.<version>.reflection_pb2, lives in
    the package `grpc`, which is grpcio's.
    """
    if version not in VERSIONS:
        raise ValueError(f"unknown reflection version {version!r}")
    with _lock:
        mod = _modules.get(version)
        if mod is not None:
            return mod
        rel = f"grpc/reflection/{version}/reflection.proto"
        out = tempfile.mkdtemp(prefix="reflection-pb2-")
        try:
            proc = subprocess.run([PROTOC, f"--python_out={out}", f"-I{PROTO_DIR}", str(PROTO_DIR / rel)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"protoc failed on {rel}: {proc.stderr.strip()}")
            path = os.path.join(out, "grpc", "reflection", version, "reflection_pb2.py")
            name = f"_oneshield_reflection_{version}_pb2"
            spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        _modules[version] = mod
        return mod


@contextlib.contextmanager
def _channel(target: Target) -> Iterator[grpc.Channel]:
    if isinstance(target, str):
        with grpc.insecure_channel(target) as ch:
            yield ch
    else:
        yield target  # the caller's: left open


def info(target: Target, requests: Iterable, version: str = "v1alpha", timeout: float = 10.0) -> list:
    """Sends requests (ServerReflectionRequest of that version) on one
    ServerReflectionInfo stream and returns every response, in order."""
    pb = reflection_pb2(version)
    reqs = list(requests)
    with _channel(target) as ch:
        call = ch.stream_stream(METHODS[version],
                                request_serializer=pb.ServerReflectionRequest.SerializeToString,
                                response_deserializer=pb.ServerReflectionResponse.FromString)
        return list(call(iter(reqs), timeout=timeout))


def request(version: str = "v1alpha", **fields):
    """A ServerReflectionRequest, e.g. request(file_containing_symbol="x.Y")."""
    pb = reflection_pb2(version)
    ext = fields.pop("file_containing_extension", None)
    req = pb.ServerReflectionRequest(**fields)
    if ext is not None:
        containing_type, number = ext
        req.file_containing_extension.containing_type = containing_type
        req.file_containing_extension.extension_number = number
    return req


def _one(target: Target, version: str, timeout: float, expect: str, **fields):
    (resp,) = info(target, [request(version, **fields)], version=version, timeout=timeout)
    kind = resp.WhichOneof("message_response")
    if kind == "error_response":
        raise ReflectionError(resp.error_response.error_code, resp.error_response.error_message)
    if kind != expect:
        raise AssertionError(f"expected {expect}, got {kind}: {resp}")
    return resp


def _files(resp) -> List[descriptor_pb2.FileDescriptorProto]:
    files = []
    for raw in resp.file_descriptor_response.file_descriptor_proto:
        fd = descriptor_pb2.FileDescriptorProto()
        fd.ParseFromString(raw)
        files.append(fd)
    return files


def list_services(channel_target: Target, version: str = "v1alpha", timeout: float = 10.0) -> List[str]:
    """Names of the services the server says it serves, in its order."""
    resp = _one(channel_target, version, timeout, "list_services_response", list_services="*")
    return [s.name for s in resp.list_services_response.service]


def file_containing_symbol(target: Target, symbol: str, version: str = "v1alpha",
                           timeout: float = 10.0) -> List[descriptor_pb2.FileDescriptorProto]:
    """The file defining symbol, first, then the files it imports."""
    return _files(_one(target, version, timeout, "file_descriptor_response",
                       file_containing_symbol=symbol))


def file_by_filename(target: Target, filename: str, version: str = "v1alpha",
                     timeout: float = 10.0) -> List[descriptor_pb2.FileDescriptorProto]:
    """That file, first, then the files it imports."""
    return _files(_one(target, version, timeout, "file_descriptor_response", file_by_filename=filename))


def all_extension_numbers_of_type(target: Target, type_name: str, version: str = "v1alpha",
                                  timeout: float = 10.0):
    """(base_type_name, [extension numbers]) of a message type."""
    resp = _one(target, version, timeout, "all_extension_numbers_response",
                all_extension_numbers_of_type=type_name)
    r = resp.all_extension_numbers_response
    return r.base_type_name, list(r.extension_number)


def pool_of(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> descriptor_pool.DescriptorPool:
    """A fresh DescriptorPool holding files (any order; imports first is
    worked out here), e.g. pool_of(files).FindMethodByName("pkg.Svc.M")."""
    pending = {f.name: f for f in files}
    pool = descriptor_pool.DescriptorPool()
    added: set = set()

    def add(name: str, stack: tuple = ()) -> None:
        if name in added:
            return
        if name in stack:
            raise ValueError(f"import cycle through {name}")
        fd = pending[name]
        for dep in fd.dependency:
            add(dep, stack + (name,))
        pool.Add(fd)
        added.add(name)

    for name in pending:
        add(name)
    return pool


def _self_check() -> None:
    """Without a server: the stubs generate, and requests and responses of
    both versions round-trip."""
    for version in VERSIONS:
        pb = reflection_pb2(version)
        assert reflection_pb2(version) is pb
        full = pb.DESCRIPTOR.package + ".ServerReflection"
        assert pb.DESCRIPTOR.services_by_name["ServerReflection"].full_name == full
        assert METHODS[version] == "/" + full + "/ServerReflectionInfo"
        req = request(version, host="h", file_containing_extension=("a.B", 7))
        back = pb.ServerReflectionRequest.FromString(req.SerializeToString())
        assert back.WhichOneof("message_request") == "file_containing_extension"
        assert back.file_containing_extension.extension_number == 7
        # the wire numbers of the public API
        assert request(version, list_services="*").SerializeToString() == b"\x3a\x01*"
        assert request(version, file_containing_symbol="x").SerializeToString() == b"\x22\x01x"
        fd = descriptor_pb2.FileDescriptorProto(name="a.proto", package="a")
        resp = pb.ServerReflectionResponse(valid_host="h", original_request=req)
        resp.file_descriptor_response.file_descriptor_proto.append(fd.SerializeToString())
        assert _files(pb.ServerReflectionResponse.FromString(resp.SerializeToString()))[0].name == "a.proto"
        resp = pb.ServerReflectionResponse(error_response=pb.ErrorResponse(error_code=NOT_FOUND,
                                                                            error_message="no"))
        assert resp.WhichOneof("message_response") == "error_response"
        assert resp.SerializeToString() == b"\x3a\x06\x08\x05\x12\x02no"
    pool = pool_of([descriptor_pb2.FileDescriptorProto(name="b.proto", package="b", dependency=["c.proto"]),
                    descriptor_pb2.FileDescriptorProto(name="c.proto", package="c")])
    assert pool.FindFileByName("b.proto").dependencies[0].name == "c.proto"
    print("reflection_client self-check: ok")


def main(argv: List[str]) -> int:
    if argv[1:] == ["--self-check"]:
        _self_check()
        return 0
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print(f"usage: {argv[0]} --self-check | TARGET [SYMBOL]", file=sys.stderr)
        return 2
    try:
        if len(argv) == 2:
            for name in list_services(argv[1]):
                print(name)
        else:
            for fd in file_containing_symbol(argv[1], argv[2]):
                print(fd.name)
    except ReflectionError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
