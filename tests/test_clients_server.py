"""The Python clients against a real stedq server (127.0.0.1, random port, real onnxruntime)."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from stedq.clients import AsyncQualityClient, QualityClient, QualityError
from tests.server_support import (
    ThreadedServer,
    free_port,
    model_bundle,
    random_images,
    read_version,
    reference_scores,
    server_settings,
)

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def bundle():
    return model_bundle()


@pytest.fixture(scope="module")
def server(bundle):
    with ThreadedServer(server_settings(bundle)) as running:
        yield running


@pytest.fixture(scope="module")
def strict_server(bundle):
    """A server that wants a token and accepts messages of at most 1 MiB."""
    with ThreadedServer(server_settings(bundle, token="lab-secret", max_message_mb=1)) as running:
        yield running


@pytest.fixture
def client(server):
    with QualityClient(server.address, timeout=30) as connected:
        yield connected


def as_dtype(images: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(images in dtype, the float32 [0, 1] images the server should see)."""
    if dtype == np.float32:
        return images, images
    top = np.iinfo(dtype).max
    counts = np.round(images * top).astype(dtype)
    return counts, counts.astype(np.float32) / top


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_scores_match_onnxruntime_for_each_dtype_and_shape(client, bundle, dtype):
    images, seen = as_dtype(random_images(5, seed=3), dtype)
    expected = reference_scores(bundle, seen)
    if dtype != np.uint8:  # 8 bits cannot hold counts this dim (they round to 0): only the path is compared
        assert len(set(np.round(expected, 7))) > 1      # different images score differently: order shows
    stack = client.score(images)                         # N×H×W
    listed = client.score(list(images))                  # list of H×W
    single = client.score(images[2])                     # one H×W
    assert stack.dtype == np.float32 and stack.shape == (5,)
    np.testing.assert_allclose(stack, expected, atol=TOLERANCE)
    np.testing.assert_array_equal(listed, stack)
    assert single.shape == (1,) and single[0] == pytest.approx(expected[2], abs=TOLERANCE)
    assert client.model_version == read_version(bundle)


def test_mixed_sizes_and_quality_maps(client, bundle):
    small, large = random_images(1, seed=4)[0], random_images(1, seed=5, size=(300, 400))[0]
    results = client.score_images([small, large])
    assert results[0].map is None and results[1].map is not None
    quality_map = client.score_map(large)
    np.testing.assert_array_equal(quality_map.scores, results[1].map.scores)
    assert quality_map.scores.shape == (2, 3) and quality_map.tile_size == 224
    # every tile's score is the model's score of that crop, at the place the client puts it
    boxes = quality_map.tile_boxes(300, 400)
    crops = np.stack([large[top:bottom, left:right] for top, left, bottom, right, _ in boxes])
    np.testing.assert_allclose([b[4] for b in boxes], reference_scores(bundle, crops), atol=TOLERANCE)
    assert results[1].score == pytest.approx(quality_map.scores.mean(), abs=TOLERANCE)
    one_tile = client.score_map(small)
    assert one_tile.scores.shape == (1, 1) and one_tile.scores[0, 0] == pytest.approx(results[0].score)


def test_model_info_and_health(client, bundle):
    client.wait_ready(timeout=10)
    info = client.model_info()
    assert (info.name, info.version) == ("quality", read_version(bundle))
    assert (info.input_height, info.input_width) == (224, 224) and info.providers


def test_server_errors_carry_code_and_message(client):
    with pytest.raises(QualityError) as info:
        client.score(np.zeros((60, 100), np.uint16))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "60x100" in info.value.details and "64x64" in info.value.details
    assert str(info.value).startswith("INVALID_ARGUMENT")


def test_deadline_is_applied_and_not_retried(client):
    started = time.monotonic()
    with pytest.raises(QualityError) as info:
        client.score(random_images(32, seed=6), timeout=0.001)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2.0


def test_stream_answers_each_request_and_reports_errors_inline(client, bundle):
    images = random_images(4, seed=7)
    expected = reference_scores(bundle, images)
    batches = [images[0], images[1:3], np.zeros((50, 50), np.float32), images[3]]
    results = {r.request_id: r for r in client.stream(batches, raise_on_error=False)}
    assert sorted(results) == ["0", "1", "2", "3"]
    np.testing.assert_allclose(np.concatenate([results[i].scores for i in "013"]), expected, atol=TOLERANCE)
    assert results["2"].error.code == grpc.StatusCode.INVALID_ARGUMENT and not results["2"].results
    with pytest.raises(QualityError, match="50x50"):
        list(client.stream(batches))


def test_stream_raises_a_bad_array_after_the_answers_before_it(client):
    answered = []
    with pytest.raises(TypeError, match="stream request 1: image 0: dtype complex64"):
        for result in client.stream([random_images(1)[0], np.zeros((224, 224), np.complex64)]):
            answered.append(result.request_id)
    assert answered == ["0"]


def test_one_client_shared_by_threads(client, bundle):
    images = random_images(8, seed=12)
    expected = reference_scores(bundle, images)
    with ThreadPoolExecutor(4) as pool:
        scores = list(pool.map(lambda i: client.score(images[i])[0], range(8)))
    np.testing.assert_allclose(scores, expected, atol=TOLERANCE)


def test_an_empty_batch_needs_no_call():
    with QualityClient(f"127.0.0.1:{free_port()}", retries=0) as nowhere:
        scores = nowhere.score([])
    assert scores.shape == (0,) and scores.dtype == np.float32


def test_unreachable_server_fails_fast_with_unavailable():
    started = time.monotonic()
    with QualityClient(f"127.0.0.1:{free_port()}", timeout=5, retries=2, backoff_s=0.05) as nowhere:
        with pytest.raises(QualityError) as info:
            nowhere.score(random_images(1)[0])
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(QualityError, match="not ready after 0.5 s"):
            nowhere.wait_ready(timeout=0.5)
    assert time.monotonic() - started < 5.0


def test_retries_reach_a_server_that_comes_up_late(bundle):
    port = free_port()
    started: list[ThreadedServer] = []
    thread = threading.Timer(0.5, lambda: started.append(
        ThreadedServer(server_settings(bundle, port=port))))
    thread.start()
    try:
        with QualityClient(f"127.0.0.1:{port}", timeout=60, retries=30, backoff_s=0.1, max_backoff_s=0.5) as late:
            scores = late.score(random_images(2, seed=8))
        np.testing.assert_allclose(scores, reference_scores(bundle, random_images(2, seed=8)), atol=TOLERANCE)
    finally:
        thread.join()
        for running in started:
            running.stop(0)


def test_calls_a_stopping_server_cuts_are_retried_on_its_replacement(bundle):
    """16 clients score while the server on their port drains and stops (as on SIGTERM) and a new one takes
    the port (a rolling restart): the calls refused (UNAVAILABLE) or cancelled by grpc's stop() (CANCELLED)
    are retried, and every call ends with its score."""
    port = free_port()
    image = random_images(1, seed=3)
    expected = reference_scores(bundle, image)[0]
    scores, errors, done = [], [], threading.Event()

    def caller():
        with QualityClient(f"127.0.0.1:{port}", timeout=60, retries=200, backoff_s=0.02, max_backoff_s=0.2) as client:
            while not done.is_set():
                try:
                    scores.append(float(client.score(image)[0]))
                except QualityError as exc:
                    errors.append(exc.code)
    first = ThreadedServer(server_settings(bundle, port=port, grace_period_s=5))
    callers = [threading.Thread(target=caller) for _ in range(16)]
    for thread in callers:
        thread.start()
    time.sleep(1.0)
    answered_before = len(scores)
    first.stop(5)   # drain: admitted calls finish, new ones are refused, then grpc's stop()
    second = ThreadedServer(server_settings(bundle, port=port))
    try:
        end = time.monotonic() + 30
        while len(scores) < answered_before + 64 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        done.set()
        for thread in callers:
            thread.join(60)
        second.stop(0)
    assert errors == []
    assert answered_before > 0 and len(scores) >= answered_before + 64
    np.testing.assert_allclose(scores, expected, atol=TOLERANCE)


def test_token_is_sent_and_large_batches_are_split_under_the_message_limit(strict_server, bundle):
    images = np.round(random_images(24, seed=9) * 65535).astype(np.uint16)  # 2.4 MB: over the 1 MiB limit
    expected = reference_scores(bundle, images.astype(np.float32) / 65535)
    with QualityClient(strict_server.address, timeout=30) as anonymous:
        with pytest.raises(QualityError) as info:
            anonymous.score(images[:1])
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED and "authorization" in info.value.details
    with QualityClient(strict_server.address, token="lab-secret", max_message_bytes=2**20) as authorized:
        np.testing.assert_allclose(authorized.score(images), expected, atol=TOLERANCE)
    # without splitting the same batch is refused by the server: the split is what made it work
    with QualityClient(strict_server.address, token="lab-secret", max_message_bytes=8 * 2**20) as unsplit:
        with pytest.raises(QualityError) as info:
            unsplit.score(images)
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_async_client(server, bundle):
    images = random_images(3, seed=10)
    expected = reference_scores(bundle, images)

    async def session():
        async with AsyncQualityClient(server.address, timeout=30) as client:
            await client.wait_ready(timeout=10)
            scores = await client.score(images)
            info = await client.model_info()
            streamed = [r async for r in client.stream([images[0], images[1:]])]
            quality_map = await client.score_map(random_images(1, seed=11, size=(224, 448))[0])
            try:
                await client.score(np.zeros((10, 10), np.uint8))
            except QualityError as exc:
                error = exc
            return scores, info, streamed, quality_map, error

    async def unreachable():
        async with AsyncQualityClient(f"127.0.0.1:{free_port()}", timeout=5, retries=1, backoff_s=0.05) as client:
            try:
                await client.score(images)
            except QualityError as exc:
                return exc

    assert asyncio.run(unreachable()).code == grpc.StatusCode.UNAVAILABLE
    scores, info, streamed, quality_map, error = asyncio.run(session())
    np.testing.assert_allclose(scores, expected, atol=TOLERANCE)
    assert info.version == read_version(bundle)
    by_id = {r.request_id: r.scores for r in streamed}
    np.testing.assert_allclose(np.concatenate([by_id["0"], by_id["1"]]), expected, atol=TOLERANCE)
    assert quality_map.scores.shape == (1, 3)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


def test_every_answer_says_where_its_time_went(client, server):
    """Score (Python client, sync and asyncio) and KServe v2 ModelInfer carry stedq-timing-ms in trailing metadata: every
    stage present, none negative, and the parts within the total."""
    import grpc as grpc_module

    from stedq.kserve import grpc_service_pb2 as kpb
    from stedq.kserve import grpc_service_pb2_grpc as kpb_grpc
    from stedq.timing import STAGES, timing_from

    images = [np.random.default_rng(0).poisson(20, (224, 224)).astype(np.uint16)] * 3
    results = client.score_images(images)
    timing = results[0].timing
    assert timing is not None and set(timing) == set(STAGES) and timing == client.last_timing
    assert all(r.timing == timing for r in results) and min(timing.values()) >= 0
    assert timing["decode"] + timing["queue"] + timing["inference"] <= timing["total"] + 0.01
    assert timing["inference"] > 0

    async def score_async():
        async with AsyncQualityClient(server.address, timeout=30) as aio_client:
            return await aio_client.score_images(images[:2]), aio_client.last_timing
    aio_results, aio_timing = asyncio.run(score_async())
    assert aio_timing is not None and set(aio_timing) == set(STAGES) and aio_timing["inference"] > 0
    assert all(r.timing == aio_timing for r in aio_results)
    request = kpb.ModelInferRequest(model_name="quality")
    request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 224, 224])
    request.raw_input_contents.append(np.full((1, 1, 224, 224), 0.1, np.float32).tobytes())
    with grpc_module.insecure_channel(server.address) as channel:
        _, call = kpb_grpc.GRPCInferenceServiceStub(channel).ModelInfer.with_call(request, timeout=30)
    kserve = timing_from(call.trailing_metadata())
    assert kserve is not None and set(kserve) == set(STAGES) and kserve["inference"] > 0
    # ScoreStream: one trailer for the whole stream, so each answer carries its own timing_ms
    images = images[:1]
    answers = list(client.stream([images, images]))
    assert len(answers) == 2
    for answer in answers:
        assert answer.timing is not None and set(answer.timing) == set(STAGES) and answer.timing["inference"] > 0
        assert answer.results[0].timing == answer.timing
        assert answer.timing["decode"] + answer.timing["queue"] + answer.timing["inference"] <= answer.timing["total"] + 0.01
