"""Request bytes that do not parse: every method the server lists through reflection answers
INVALID_ARGUMENT naming the message type, never UNKNOWN, without a traceback in the log, and the server
keeps scoring. A real `stedq serve` process with its log in a file."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stedq.clients import QualityClient
from tests.server_support import free_port, model_bundle

PAYLOADS_PER_METHOD = 1000


def _methods(channel) -> list[tuple[str, bool, bool]]:
    """(full method path, client streaming, server streaming) of every service, via reflection."""
    from google.protobuf import descriptor_pb2

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    services = [s.name for r in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]), timeout=10) for s in r.list_services_response.service]
    found = []
    for service in services:
        [answer] = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol=service)]), timeout=10)
        for raw in answer.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            for svc in proto.service:
                if f"{proto.package}.{svc.name}" != service:
                    continue
                for method in svc.method:
                    found.append((f"/{service}/{method.name}", method.client_streaming, method.server_streaming))
    return found


@pytest.mark.slow
def test_random_payloads_get_invalid_argument_and_no_traceback(tmp_path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stedq", "serve", "--model", str(model_bundle()), "--port", str(port),
             "--metrics-port", "0", "--intra-op-threads", "1", "--no-watch-model"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    address = f"127.0.0.1:{port}"
    try:
        with QualityClient(address) as client:
            client.wait_ready(60)
        rng = np.random.default_rng(0)
        codes: dict[str, dict[str, int]] = {}
        started = time.monotonic()
        with grpc.insecure_channel(address) as channel:
            methods = _methods(channel)
            unary = [m for m in methods if not m[1] and not m[2]]
            assert len(unary) >= 9, methods     # health Check, 5+ KServe v2, 3 of ours
            for path, client_streaming, server_streaming in methods:
                call = (channel.stream_stream if client_streaming and server_streaming else
                        channel.stream_unary if client_streaming else
                        channel.unary_stream if server_streaming else channel.unary_unary)(path)
                count = PAYLOADS_PER_METHOD if (path, False, False) in unary else 20
                for _ in range(count):
                    payload = rng.bytes(int(rng.integers(1, 64)))
                    try:
                        if client_streaming:
                            response = call(iter([payload]), timeout=10)
                        else:
                            response = call(payload, timeout=10)
                        if server_streaming:
                            next(iter(response), None)
                        code = "OK"
                    except grpc.RpcError as exc:
                        code = exc.code().name
                        if "is not a valid" in (exc.details() or ""):
                            code = "INVALID_ARGUMENT (does not parse)"
                    codes.setdefault(path, {}).setdefault(code, 0)
                    codes[path][code] += 1
        elapsed = time.monotonic() - started
        with QualityClient(address) as client:
            assert client.score(np.zeros((224, 224), np.uint16)).shape == (1,)   # still scoring
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(30)
    seen = {code for per_method in codes.values() for code in per_method}
    assert "UNKNOWN" not in seen and "INTERNAL" not in seen, codes
    # most random bytes do not parse (the rest parse as some message and get the domain's own answer)
    for path, *_ in unary:
        assert codes[path].get("INVALID_ARGUMENT (does not parse)", 0) > PAYLOADS_PER_METHOD // 2, codes[path]
    log_text = log_path.read_text()
    assert "Traceback" not in log_text and "DecodeError" not in log_text.replace("DecodeError:", "")
    # rate-limited: a burst of 5 lines per 10 s window (ErrorBoundaryInterceptor), not thousands
    assert log_text.count("does not parse") <= 5 * (elapsed // 10 + 1), elapsed
    print({path: per_method for path, per_method in codes.items()})
