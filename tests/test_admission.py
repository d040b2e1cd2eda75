"""Admission by memory: the estimate of what a request holds, the bound refusing at once with
RESOURCE_EXHAUSTED through a real server (one request too big for any moment, and one too big for now),
and the held bytes freed whatever the answer."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from stedq.kserve import grpc_service_pb2 as kpb
from stedq.kserve import grpc_service_pb2_grpc as kpb_grpc
from stedq.server.admission import InFlightBytes, MemoryBoundExceeded, model_inputs, request_cost
from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc
from tests.server_support import HeldEngine, ThreadedServer, model_bundle, pb_image, scrape, server_settings

TILE, STRIDE = 224, 112


def test_the_estimate_counts_payload_decoded_pixels_and_model_inputs():
    assert model_inputs(100, 100, TILE, STRIDE) == 1 and model_inputs(224, 224, TILE, STRIDE) == 1
    assert model_inputs(300, 500, TILE, STRIDE) == 2 * 4
    u16 = 224 * 224 * 2
    assert request_cost(u16, [(224, 224)], tile=TILE, stride=STRIDE) == u16 + 4 * 224 * 224 + 4 * TILE * TILE
    # dimensions the bytes cannot hold are the decoder's business: only the payload counts
    assert request_cost(100, [(10_000, 10_000)], tile=TILE, stride=STRIDE) == 100


def test_the_bound_refuses_and_frees():
    bound = InFlightBytes(1000)
    with bound.hold(600):
        assert bound.used == 600
        with pytest.raises(MemoryBoundExceeded, match="retry shortly"):
            with bound.hold(500):
                pass
        assert bound.used == 600
    assert bound.used == 0
    with pytest.raises(MemoryBoundExceeded, match="send it in parts"):
        with bound.hold(1001):
            pass
    with pytest.raises(RuntimeError), bound.hold(10):   # freed on any failure inside
        raise RuntimeError
    assert bound.used == 0


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(server_settings(model_bundle(), max_inflight_mb=1)) as running:
        yield running


def test_a_request_past_the_bound_is_resource_exhausted_and_the_bytes_are_freed(server):
    small = pb_image(np.random.default_rng(0).poisson(20, (224, 224)).astype(np.uint16))   # ~0.5 MiB held
    big = pb_image(np.zeros((1000, 1000), np.uint16))                                       # ~19 MiB: never fits
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.QualityServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Score(pb.ScoreRequest(images=[big]), timeout=30)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "send it in parts" in error.value.details()

        with ThreadPoolExecutor(1) as pool, HeldEngine(server.server.scorer) as held:
            first = pool.submit(stub.Score, pb.ScoreRequest(images=[small]), timeout=60)
            assert held.entered.wait(30)
            with pytest.raises(grpc.RpcError) as busy:      # 0.5 + 0.5 MiB > 1 MiB while the first is held
                stub.Score(pb.ScoreRequest(images=[small, small]), timeout=30)
            answers = list(stub.ScoreStream(iter([pb.ScoreStreamRequest(request_id="s", images=[small, small])]),
                                            timeout=30))
            request = kpb.ModelInferRequest(model_name="quality")
            request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 224, 224])
            request.raw_input_contents.append(np.full((1, 1, 224, 224), 0.1, np.float32).tobytes())
            with pytest.raises(grpc.RpcError) as kserve_busy:
                kpb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
            held.release.set()
            assert len(first.result().results) == 1
        assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry shortly" in busy.value.details()
        assert answers[0].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert kserve_busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(stub.Score(pb.ScoreRequest(images=[small]), timeout=30).results) == 1   # freed: admitted again
    assert server.server.scorer.in_flight.used == 0
    assert scrape(server.server.metrics_port)["stedq_in_flight_bytes"][0][1] == 0


def test_clients_that_cancel_mid_batch_free_their_slot_and_bytes(server):
    """Calls cancelled while the engine holds the first batch: once released, nothing of them stays in
    the queue, the in-flight gauges and the held bytes return to 0, and their rows are not computed."""
    small = pb_image(np.random.default_rng(1).poisson(20, (224, 224)).astype(np.uint16))
    before = scrape(server.server.metrics_port)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.QualityServiceStub(channel)
        with HeldEngine(server.server.scorer) as held:
            first = stub.Score.future(pb.ScoreRequest(images=[small]), timeout=60)
            assert held.entered.wait(30)
            waiting = stub.Score.future(pb.ScoreRequest(images=[small]), timeout=60)
            for _ in range(200):                      # until the server holds it in the queue
                if server.server.scorer.batcher.queue_depth == 1:
                    break
                time.sleep(0.01)
            assert server.server.scorer.batcher.queue_depth == 1
            assert waiting.cancel()
            held.release.set()
            assert len(first.result().results) == 1
        assert len(stub.Score(pb.ScoreRequest(images=[small]), timeout=30).results) == 1
    after = scrape(server.server.metrics_port)

    def total(samples, name):
        return sum(value for _, value in samples.get(name, []))
    assert server.server.scorer.batcher.queue_depth == 0 and server.server.scorer.in_flight.used == 0
    assert total(after, "stedq_in_flight_requests") == 0 and total(after, "stedq_in_flight_bytes") == 0
    # computed: the first request's image and the last one's, never the cancelled one's
    assert total(after, "stedq_batch_size_sum") - total(before, "stedq_batch_size_sum") == 2
