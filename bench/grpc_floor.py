"""The transport floor: stedq.v1.QualityService in a bare grpc.aio server that answers at once.

    python -m stedq.bench.grpc_floor --port PORT

It parses the request and answers one score per image, with no decoding, no batching, no model and no
interceptors: what a single-image call costs in Python gRPC alone (client library, protobuf, HTTP/2, the
event loops on both ends). `stedq bench` measures it with the same client as the stedq server, so the
single-image overhead can be read against what no Python gRPC server can go below.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["QualityService"].full_name


class FloorServicer(pb_grpc.QualityServiceServicer):
    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        return pb.ScoreResponse(results=[pb.ImageScore(score=0.5) for _ in request.images],
                                client_id=request.client_id, model_version="floor")


async def serve(port: int, max_message_mb: int = 64) -> None:
    limit = max_message_mb * 1024 * 1024
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit)])
    pb_grpc.add_QualityServiceServicer_to_server(FloorServicer(), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for service in ("", SERVICE_NAME):
        await checker.set(service, health_pb2.HealthCheckResponse.SERVING)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
