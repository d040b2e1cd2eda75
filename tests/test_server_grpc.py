"""stedq.v1.QualityService over a real gRPC server (127.0.0.1, random port, real onnxruntime)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stedq.bundle import read_manifest
from stedq.pixels import demo_image
from stedq.tiling import tile_origins
from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc
from tests.server_support import (
    HeldEngine,
    ThreadedServer,
    model_bundle,
    pb_image,
    random_images,
    read_version,
    reference_scores,
    sample_value,
    scrape,
    server_settings,
    settled_value,
)

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def bundle():
    return model_bundle()


@pytest.fixture(scope="module")
def server(bundle):
    with ThreadedServer(server_settings(bundle)) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as chan:
        yield chan


@pytest.fixture
def stub(channel):
    return pb_grpc.QualityServiceStub(channel)


def test_scores_equal_in_process_onnxruntime_in_order(stub, bundle):
    images = random_images(6, seed=1)
    response = stub.Score(pb.ScoreRequest(images=[pb_image(i) for i in images], client_id="lab-7"), timeout=60)
    expected = reference_scores(bundle, images)
    got = np.array([r.score for r in response.results])
    assert response.client_id == "lab-7" and response.model_version == read_version(bundle)
    assert np.max(np.abs(got - expected)) <= TOLERANCE
    assert len(set(np.round(expected, 7))) > 1  # the images really score differently: order is tested
    reversed_response = stub.Score(pb.ScoreRequest(images=[pb_image(i) for i in images[::-1]]), timeout=60)
    np.testing.assert_allclose([r.score for r in reversed_response.results], expected[::-1], atol=TOLERANCE)


def test_integer_images_are_photon_counts_whatever_the_dtype(stub, bundle):
    # A structured image of real counts (peak 250: fits uint8), so the expected score is not 0 and a dtype
    # read at the wrong scale would show.
    rng = np.random.default_rng(3)
    counts = rng.poisson(demo_image(224, seed=3) * 250)
    images = [pb_image(counts.astype(dtype)) for dtype in (np.uint8, np.uint16, np.int16, np.uint32)]
    float_counts = pb_image(counts.astype(np.float32))
    float_counts.intensity = pb.INTENSITY_COUNTS
    response = stub.Score(pb.ScoreRequest(images=[*images, float_counts]), timeout=60)
    expected = reference_scores(bundle, (counts / np.float32(65535)).astype(np.float32)[None])[0]
    np.testing.assert_allclose([r.score for r in response.results], [expected] * 5, atol=TOLERANCE)
    as_model_scale = reference_scores(bundle, (counts / np.float32(255)).astype(np.float32)[None])[0]
    assert abs(expected - as_model_scale) > 10 * TOLERANCE, (expected, as_model_scale)


def test_float32_is_on_the_model_scale_unless_it_says_counts(stub):
    counts = pb_image(np.full((224, 224), 30.0, np.float32))
    with pytest.raises(grpc.RpcError) as error:
        stub.Score(pb.ScoreRequest(images=[counts]), timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "images[0]: float32 values on the model scale must be in [0, 1]" in error.value.details()
    counts.intensity = pb.INTENSITY_COUNTS
    assert 0.0 <= stub.Score(pb.ScoreRequest(images=[counts]), timeout=60).results[0].score <= 1.0
    uint = pb_image(np.zeros((224, 224), np.uint16))
    uint.intensity = pb.INTENSITY_MODEL_SCALE
    with pytest.raises(grpc.RpcError, match="uint16 pixels are photon counts"):
        stub.Score(pb.ScoreRequest(images=[uint]), timeout=60)


def test_a_larger_image_gets_a_quality_map(stub, bundle):
    image = random_images(1, seed=4, size=(300, 500))[0]
    (result,) = stub.Score(pb.ScoreRequest(images=[pb_image(image)]), timeout=60).results
    ys, xs = tile_origins(300, 224, 112), tile_origins(500, 224, 112)
    tiles = np.stack([image[y:y + 224, x:x + 224] for y in ys for x in xs])
    expected = reference_scores(bundle, tiles)
    assert (result.map.rows, result.map.cols, result.map.tile_size, result.map.stride) == (2, 4, 224, 112)
    np.testing.assert_allclose(result.map.scores, expected, atol=TOLERANCE)
    assert abs(result.score - expected.mean()) <= TOLERANCE


def test_stream_answers_each_request_with_its_id_and_survives_errors(stub, bundle):
    images = random_images(3, seed=5)
    bad = pb.Image(data=b"\0" * 10, dtype=pb.DTYPE_UINT8, height=224, width=224)
    requests = [pb.ScoreStreamRequest(request_id="r0", images=[pb_image(images[0])]),
                pb.ScoreStreamRequest(request_id="bad", images=[bad]),
                pb.ScoreStreamRequest(request_id="r1", images=[pb_image(images[1]), pb_image(images[2])])]
    answers = {r.request_id: r for r in stub.ScoreStream(iter(requests), timeout=60)}
    assert set(answers) == {"r0", "bad", "r1"}
    expected = reference_scores(bundle, images)
    assert abs(answers["r0"].results[0].score - expected[0]) <= TOLERANCE
    np.testing.assert_allclose([r.score for r in answers["r1"].results], expected[1:], atol=TOLERANCE)
    assert answers["bad"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "images[0]: data has 10 bytes" in answers["bad"].error.message
    assert not answers["bad"].results


def _float_image(value: float) -> pb.Image:
    pixels = np.full((224, 224), 0.5, np.float32)
    pixels[10, 20] = value
    return pb_image(pixels)


GOOD = pb_image(np.zeros((224, 224), np.uint8))
BAD_REQUESTS = {
    "empty batch": ([], "images: empty batch"),
    "wrong byte length": ([GOOD, pb.Image(data=b"\0" * 100, dtype=pb.DTYPE_UINT16, height=224, width=224)],
                          "images[1]: data has 100 bytes but a 224x224 uint16 image needs 100352"),
    "over-long byte string": ([pb.Image(data=b"\0" * (224 * 224 * 2 + 2), dtype=pb.DTYPE_UINT16, height=224, width=224)],
                              "images[0]: data has 100354 bytes but a 224x224 uint16 image needs 100352"),
    "unknown dtype": ([pb.Image(data=b"\0" * 50176, dtype=7, height=224, width=224)], "images[0]: unknown dtype 7"),
    "unset dtype": ([pb.Image(data=b"\0" * 50176, height=224, width=224)], "images[0]: dtype is not set"),
    "too small": ([pb_image(np.zeros((63, 224), np.uint8))],
                  "images[0]: image is 63x224, smaller than the minimum 64x64"),
    "NaN": ([_float_image(np.nan)], "images[0]: float32 image has 1 NaN/Inf pixel(s)"),
    "Inf": ([_float_image(np.inf)], "NaN/Inf"),
    "float above 1": ([_float_image(1.5)], "images[0]: float32 values on the model scale must be in [0, 1] (got min 0.5, max 1.5)"),
    "negative float": ([_float_image(-0.1)], "float32 values on the model scale must be in [0, 1]"),
    "batch over the limit": ([GOOD] * 65, "images: the request needs 65 model inputs (65 images"),
    "quality map over the limit": ([pb_image(np.zeros((224, 224 + 112 * 70), np.uint8))],
                                   "the request needs 71 model inputs (1 images"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_invalid_argument_naming_the_field(stub, case):
    images, message = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as error:
        stub.Score(pb.ScoreRequest(images=images), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()


def test_a_big_upload_is_decoded_and_checked_off_the_event_loop(stub):
    pixels = np.full((1200, 1000), 0.5, np.float32)  # 4.8 MB: decoded in a worker thread
    pixels[1100, 900] = np.nan
    with pytest.raises(grpc.RpcError) as error:
        stub.Score(pb.ScoreRequest(images=[GOOD, pb_image(pixels)]), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "images[1]: float32 image has 1 NaN/Inf pixel(s)" in error.value.details()


def test_32_concurrent_clients_get_correct_answers_in_batches(stub, bundle, server):
    images = random_images(32, seed=9)
    expected = reference_scores(bundle, images)
    before = scrape(server.server.metrics_port)
    start = threading.Barrier(32)

    def one(index: int) -> float:
        start.wait(10)
        if index % 8 == 7:  # bad requests mixed in never disturb the good ones batched with them
            with pytest.raises(grpc.RpcError):
                stub.Score(pb.ScoreRequest(images=[pb.Image(data=b"x", dtype=1, height=224, width=224)]))
        return stub.Score(pb.ScoreRequest(images=[pb_image(images[index])]), timeout=60).results[0].score

    with ThreadPoolExecutor(32) as pool:
        got = np.array(list(pool.map(one, range(32))))
    assert np.max(np.abs(got - expected)) <= TOLERANCE
    invalid_before = sample_value(before, "stedq_requests_total", method="Score", code="INVALID_ARGUMENT")
    settled_value(server.server.metrics_port, "stedq_requests_total", invalid_before + 4, method="Score",
                  code="INVALID_ARGUMENT")
    after = scrape(server.server.metrics_port)
    batches = sample_value(after, "stedq_batch_size_count") - sample_value(before, "stedq_batch_size_count")
    rows = sample_value(after, "stedq_batch_size_sum") - sample_value(before, "stedq_batch_size_sum")
    assert rows == 32 and batches < 32, f"{batches} inference calls for 32 images: no batching"
    singles = sample_value(after, "stedq_batch_size_bucket", le="1.0") - sample_value(before, "stedq_batch_size_bucket", le="1.0")
    assert singles < batches  # at least one real (multi-image) batch
    ok = (sample_value(after, "stedq_requests_total", method="Score", code="OK")
          - sample_value(before, "stedq_requests_total", method="Score", code="OK"))
    invalid = (sample_value(after, "stedq_requests_total", method="Score", code="INVALID_ARGUMENT")
               - sample_value(before, "stedq_requests_total", method="Score", code="INVALID_ARGUMENT"))
    assert (ok, invalid) == (32, 4)
    assert sample_value(after, "stedq_images_scored_total") - sample_value(before, "stedq_images_scored_total") == 32


def test_metrics_follow_the_contract(server, stub):
    stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    samples = scrape(server.server.metrics_port)
    for name in ("stedq_request_duration_seconds_bucket", "stedq_queue_wait_seconds_bucket",
                 "stedq_inference_duration_seconds_bucket", "stedq_batch_size_bucket", "stedq_queue_depth",
                 "stedq_in_flight_requests", "stedq_images_scored_total", "stedq_model_reloads_total"):
        assert name in samples, name
    buckets = {labels["le"] for labels, _ in samples["stedq_request_duration_seconds_bucket"]}
    assert "0.0001" in buckets and "0.0005" in buckets  # sub-millisecond resolution
    assert {labels["le"] for labels, _ in samples["stedq_batch_size_bucket"]} >= {"1.0", "32.0", "128.0"}
    (labels, value), = samples["stedq_model_info"]
    info = server.server.scorer.model_info
    assert value == 1 and labels == {"name": info.name, "version": info.version, "variant": info.variant,
                                     "provider": info.providers[0], "device": info.device}
    assert labels["provider"] == ("CUDAExecutionProvider" if info.device == "cuda" else "CPUExecutionProvider")
    assert sample_value(samples, "stedq_requests_total", method="GetModelInfo", code="OK") >= 1
    assert samples["stedq_in_flight_requests"][0][1] == 0 and samples["stedq_queue_depth"][0][1] == 0


def test_model_info_describes_the_served_bundle(stub, bundle):
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert (info.version, info.input_height, info.input_width) == (read_version(bundle), 224, 224)
    assert info.max_batch_size == 8 and info.tile_stride == 112
    assert len(info.normalization_mean) == 1 and len(info.normalization_std) == 1
    assert info.input_transform == read_manifest(bundle).normalization.transform
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():  # a GPU machine (STEDQ_DEVICE)
        assert info.providers[-1] == "CPUExecutionProvider" and info.device in {"cuda", "cpu"}
    else:
        assert list(info.providers) == ["CPUExecutionProvider"] and info.device == "cpu" and info.variant == "fp32"
        assert "CUDA" in info.metadata["device_note"]  # --device auto fell back to the CPU and says so


def test_health_serving_and_reflection_lists_every_service(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "stedq.v1.QualityService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                             timeout=10)
    names = {s.name for s in answer.list_services_response.service}
    assert {"stedq.v1.QualityService", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_a_full_queue_answers_resource_exhausted(stub, server):
    """The engine is held on the first batch, so the 64-image request fills the queue (64) for certain."""
    big = pb.ScoreRequest(images=[GOOD] * 64)
    with ThreadPoolExecutor(1) as pool, HeldEngine(server.server.scorer) as held:
        first = pool.submit(stub.Score, big, timeout=120)
        assert held.entered.wait(30)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Score(pb.ScoreRequest(images=[GOOD] * 16), timeout=60)
        held.release.set()
        assert len(first.result().results) == 64  # the queued request itself is unharmed
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the queue is full" in refused.value.details()


def test_requests_past_their_deadline_are_dropped_before_compute(stub, server):
    """The engine is held on the first request's first batch; a request with a 0.2 s deadline waits
    behind it and expires there; released, the server computes the first request only."""
    before = scrape(server.server.metrics_port)
    with ThreadPoolExecutor(1) as pool, HeldEngine(server.server.scorer) as held:
        first = pool.submit(stub.Score, pb.ScoreRequest(images=[GOOD] * 64), timeout=120)
        assert held.entered.wait(30)
        with pytest.raises(grpc.RpcError) as late:
            stub.Score(pb.ScoreRequest(images=[GOOD] * 2), timeout=0.2)
        held.release.set()
        assert len(first.result().results) == 64
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stub.Score(pb.ScoreRequest(images=[GOOD]), timeout=30)   # a later batch: the late one had its turn
    after = scrape(server.server.metrics_port)
    computed = sample_value(after, "stedq_batch_size_sum") - sample_value(before, "stedq_batch_size_sum")
    assert computed == 64 + 1  # the late request's 2 images never reached onnxruntime
