"""The transport floor: stedq.v1.QualityService in a bare grpc.aio server, with or without the model.

    python -m stedq.bench.grpc_floor --port PORT                      # answers at once
    python -m stedq.bench.grpc_floor --port PORT --model BUNDLE       # runs the model, then answers
    python -m stedq.bench.grpc_floor --port PORT --wait-ms 8 [--sync] # waits idle, then answers

It parses the request and answers one score per image, with no batching, no interceptors, no checks and
(without --model) no decoding: what a single-image call costs in Python gRPC alone (client library,
protobuf, HTTP/2, the event loops on both ends). `stedq bench` measures it with the same client as the
stedq server, so the single-image overhead can be read against what no Python gRPC server can go below.
With --model the handler reads the uint16 pixels and runs the bundle in one worker thread, the least a
Python gRPC server that really scores can do (`grpc-floor-model` in the bench). --wait-ms (and --sync: a
thread-pool grpc.server instead of grpc.aio) separate waiting from computing: how much a call's overhead
grows when its server is busy for milliseconds, with no CPU used (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["QualityService"].full_name
SERVER_TIME_KEY = "server-ms"


class FloorWork:
    """What the handler does before it answers: nothing, an idle wait, or the model on the images."""

    def __init__(self, model: Path | None = None, variant: str = "fp32", threads: int = 0, wait_ms: float = 0.0,
                 device: str = "cpu"):
        self.engine = None
        self.wait_s = wait_ms / 1000.0
        if model is not None:
            from stedq.engine import Engine

            self.engine = Engine(model, device=device, variant=variant, intra_op_threads=threads)
            self.engine.warm_up((1,))

    def run(self, request: pb.ScoreRequest) -> None:
        if self.wait_s:
            time.sleep(self.wait_s)
        if self.engine is not None:
            batch = np.stack([np.frombuffer(image.data, np.uint16).reshape(image.height, image.width)
                              for image in request.images]).astype(np.float32)[:, None] / 65535.0
            self.engine.run(batch)


def _answer(request: pb.ScoreRequest, context, began: float) -> pb.ScoreResponse:
    """One score per image; the handler's own time in trailing metadata 'server-ms' (the rest of a call's
    latency is outside the handler: client, transport, gRPC's threads and event loops)."""
    context.set_trailing_metadata(((SERVER_TIME_KEY, f"{(time.perf_counter() - began) * 1000:.4f}"),))
    return pb.ScoreResponse(results=[pb.ImageScore(score=0.5) for _ in request.images],
                            client_id=request.client_id, model_version="floor")


class FloorServicer(pb_grpc.QualityServiceServicer):
    def __init__(self, work: FloorWork):
        self.work = work
        self.pool = concurrent.futures.ThreadPoolExecutor(1)

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        began = time.perf_counter()
        if self.work.engine is not None:
            await asyncio.get_running_loop().run_in_executor(self.pool, self.work.run, request)
        elif self.work.wait_s:
            await asyncio.sleep(self.work.wait_s)
        return _answer(request, context, began)


class SyncFloorServicer(pb_grpc.QualityServiceServicer):
    def __init__(self, work: FloorWork):
        self.work = work

    def Score(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> pb.ScoreResponse:
        began = time.perf_counter()
        self.work.run(request)
        return _answer(request, context, began)


def _options(max_message_mb: int) -> list[tuple[str, int]]:
    limit = max_message_mb * 1024 * 1024
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


async def serve(port: int, work: FloorWork, max_message_mb: int = 64) -> None:
    server = grpc.aio.server(options=_options(max_message_mb))
    pb_grpc.add_QualityServiceServicer_to_server(FloorServicer(work), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for service in ("", SERVICE_NAME):
        await checker.set(service, health_pb2.HealthCheckResponse.SERVING)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def serve_sync(port: int, work: FloorWork, max_message_mb: int = 64) -> None:
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(8), options=_options(max_message_mb))
    pb_grpc.add_QualityServiceServicer_to_server(SyncFloorServicer(work), server)
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for service in ("", SERVICE_NAME):
        checker.set(service, health_pb2.HealthCheckResponse.SERVING)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, help="bundle or .onnx to run on each request's images")
    parser.add_argument("--variant", default="fp32", help="with --model: fp32 | int8 | fp16")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="with --model: 0 = onnxruntime's default")
    parser.add_argument("--device", default="cpu", help="with --model: cpu | cuda | auto")
    parser.add_argument("--wait-ms", type=float, default=0.0, help="wait this long (idle) before answering")
    parser.add_argument("--sync", action="store_true", help="a thread-pool grpc.server instead of grpc.aio")
    args = parser.parse_args()
    work = FloorWork(args.model, args.variant, args.intra_op_threads, args.wait_ms, args.device)
    if args.sync:
        serve_sync(args.port, work)
    else:
        asyncio.run(serve(args.port, work))


if __name__ == "__main__":
    main()
