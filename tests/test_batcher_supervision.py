"""The batcher's collect loop is supervised: when it dies, what waits on it fails at once with
UNAVAILABLE (not at its deadline), health says NOT_SERVING until a new loop runs, and scoring goes on."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc
from tests.server_support import ThreadedServer, model_bundle, pb_image, server_settings


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(server_settings(model_bundle())) as running:
        yield running


def test_a_dead_collect_loop_fails_fast_reports_not_serving_and_restarts(server):
    batcher = server.server.scorer.batcher
    real_form = batcher._form_batch
    seen_alive: list[bool] = []
    real_alive = batcher.on_alive

    def recording(alive: bool) -> None:
        seen_alive.append(alive)
        real_alive(alive)

    async def dying(*args, **kwargs):
        batcher._form_batch = real_form      # dies once
        raise RuntimeError("injected: the collect loop dies")

    batcher.on_alive = recording
    batcher._form_batch = dying
    request = pb.ScoreRequest(images=[pb_image(np.zeros((224, 224), np.uint16))])
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.QualityServiceStub(channel)
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as error:
                stub.Score(request, timeout=30)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE and "restarted" in error.value.details()
            assert time.monotonic() - started < 5          # at once, not at the 30 s deadline
            assert seen_alive == [False, True] and batcher.restarts == 1
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING
            assert len(stub.Score(request, timeout=30).results) == 1   # the new loop scores
    finally:
        batcher.on_alive = real_alive
        batcher._form_batch = real_form
