"""Streams lose no answer: every ScoreStream request is answered exactly once whatever fails (a rejected
image, an unexpected error inside the scorer), and the loop's StreamScorer survives a rejected frame."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from stedq.clients import QualityClient
from stedq.clients.errors import QualityError
from stedq.clients.loop import StreamScorer
from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc
from tests.server_support import ThreadedServer, model_bundle, pb_image, server_settings


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(server_settings(model_bundle())) as running:
        yield running


def test_stream_scorer_survives_a_rejected_frame(server):
    good = np.random.default_rng(1).poisson(20, (224, 224)).astype(np.uint16)
    with QualityClient(server.address) as client:
        scorer = StreamScorer(client)
        try:
            first = scorer(good)
            with pytest.raises(QualityError) as error:
                scorer(np.zeros((10, 10), np.uint16))
            assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and "minimum 64x64" in error.value.details
            assert scorer(good) == pytest.approx(first, abs=1e-6)   # the same stream goes on
        finally:
            scorer.close()


def test_every_stream_request_is_answered_once_even_when_the_scorer_fails(server):
    """An unexpected error inside the scorer for one request (injected into the real server's scorer)
    is that request's INTERNAL answer; the requests around it are answered as usual."""
    scorer = server.server.scorer
    real_score = scorer.score
    images = [pb_image(np.full((224, 224), value, np.uint16)) for value in (3, 7, 11)]

    async def failing_for_seven(batch, **kwargs):
        if round(float(batch[0].max()) * 65535) == 7:
            raise RuntimeError("injected fault")
        return await real_score(batch, **kwargs)

    scorer.score = failing_for_seven
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.QualityServiceStub(channel)
            requests = [pb.ScoreStreamRequest(request_id=f"r{i}", images=[image]) for i, image in enumerate(images)]
            answers = list(stub.ScoreStream(iter(requests), timeout=30))
    finally:
        scorer.score = real_score
    assert sorted(a.request_id for a in answers) == ["r0", "r1", "r2"]   # each exactly once
    by_id = {a.request_id: a for a in answers}
    assert by_id["r1"].error.code == grpc.StatusCode.INTERNAL.value[0] and "r1" in by_id["r1"].error.message
    assert len(by_id["r0"].results) == 1 and len(by_id["r2"].results) == 1


def test_an_unexpected_error_is_internal_with_a_request_id_in_one_log_line(server, caplog):
    scorer = server.server.scorer
    real_score = scorer.score

    async def broken(batch, **kwargs):
        raise RuntimeError("injected fault")

    scorer.score = broken
    try:
        with grpc.insecure_channel(server.address) as channel, caplog.at_level("ERROR"):
            stub = pb_grpc.QualityServiceStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.Score(pb.ScoreRequest(images=[pb_image(np.zeros((224, 224), np.uint16))]), timeout=30)
    finally:
        scorer.score = real_score
    assert error.value.code() == grpc.StatusCode.INTERNAL
    request_id = error.value.details().split("request id ")[1].split(")")[0]
    lines = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert len(lines) == 1 and "RuntimeError: injected fault" in lines[0] and "/stedq.v1.QualityService/Score" in lines[0]


def test_repeated_unexpected_errors_are_logged_rate_limited(server, caplog):
    """60 failing requests: every one INTERNAL with its own id, but the log gets the interceptor's burst of
    lines and then one line counting (and naming) the ones held back, not 60 lines."""
    scorer = server.server.scorer
    real_score = scorer.score

    async def broken(batch, **kwargs):
        raise RuntimeError("injected fault")

    scorer.score = broken
    ids = []
    try:
        with grpc.insecure_channel(server.address) as channel, caplog.at_level("ERROR"):
            stub = pb_grpc.QualityServiceStub(channel)
            for _ in range(60):
                with pytest.raises(grpc.RpcError) as error:
                    stub.Score(pb.ScoreRequest(images=[pb_image(np.zeros((224, 224), np.uint16))]), timeout=30)
                assert error.value.code() == grpc.StatusCode.INTERNAL
                ids.append(error.value.details().split("request id ")[1].split(")")[0])
            server.server.error_boundary.failures._window_start = -float("inf")   # the next window opens now, not in 10 s
            with pytest.raises(grpc.RpcError):
                stub.Score(pb.ScoreRequest(images=[pb_image(np.zeros((224, 224), np.uint16))]), timeout=30)
    finally:
        scorer.score = real_score
    lines = [r.getMessage() for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(set(ids)) == 60
    assert len(lines) <= 6, lines
    assert "more held back since the last line" in lines[-1] and ids[-1] in lines[-1], lines[-1]
