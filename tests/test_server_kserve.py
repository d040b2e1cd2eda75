"""KServe v2 gRPC protocol of the server: tritonclient interop, typed and raw tensors, errors, metrics.

A real stedq server (StedqServer: interceptors, batcher, onnxruntime) runs in a background thread on
127.0.0.1 with a real model (the shipped bundle, or one exported from stedq.training.model until it
exists; see tests/server_support.py). Scores are compared with in-process onnxruntime on the same file.

tritonclient.grpc and stedq.kserve both register the protobuf package `inference`; one process cannot
import both. The tritonclient side therefore runs in a subprocess (tests/kserve_triton_probe.py),
while the server and the tests that use our own generated stubs stay in this process.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from stedq.bundle import read_manifest, variant_path
from stedq.kserve import grpc_service_pb2 as pb
from stedq.kserve import grpc_service_pb2_grpc as pb_grpc
from stedq.pixels import demo_image
from stedq.server.kserve_tensors import _packed_floats
from tests.conftest import IN_CI, REPO_ROOT
from tests.server_support import (
    HeldEngine,
    ThreadedServer,
    copy_bundle,
    model_bundle,
    read_version,
    sample_value,
    scrape,
    server_settings,
    settled_value,
)

MODEL = "quality"
MAX_QUEUE = 64
SIZE = 224


@pytest.fixture(scope="module")
def bundle():
    return model_bundle()


@pytest.fixture(scope="module")
def version(bundle) -> str:
    return read_version(bundle)


@pytest.fixture(scope="module")
def server(bundle):
    with ThreadedServer(server_settings(bundle, max_queue_size=MAX_QUEUE)) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def reference(bundle):
    """In-process onnxruntime on the same file: float32 (N, [1,] 224, 224) in [0, 1] -> (N,) scores."""
    manifest = read_manifest(bundle)
    session = ort.InferenceSession(str(variant_path(bundle, manifest, "fp32")), providers=["CPUExecutionProvider"])
    return lambda batch: session.run(None, {"image": np.asarray(batch, np.float32).reshape(-1, 1, SIZE, SIZE)})[0].reshape(-1)


def sted_images(n: int, seed: int = 0) -> np.ndarray:
    """float32 (n, 1, 224, 224) in [0, 1]: synthetic fibre images of varying brightness."""
    rng = np.random.default_rng(seed)
    return np.stack([demo_image(SIZE, seed=seed + i) * np.float32(rng.uniform(0.3, 1.0))
                     for i in range(n)])[:, None].astype(np.float32)


def u16_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, size=(n, SIZE, SIZE), dtype=np.uint16)


def raw_request(images: np.ndarray, datatype: str = "FP32", **fields) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(**{"model_name": MODEL, **fields})
    request.inputs.add(name="image", datatype=datatype, shape=list(images.shape))
    request.raw_input_contents.append(np.ascontiguousarray(images).tobytes())
    return request


def typed_request(images: np.ndarray, datatype: str = "FP32", **fields) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(**{"model_name": MODEL, **fields})
    tensor = request.inputs.add(name="image", datatype=datatype, shape=list(images.shape))
    if datatype == "FP32":
        tensor.contents.fp32_contents.extend(images.ravel().tolist())
    else:
        tensor.contents.uint_contents.extend(images.ravel().astype(np.uint32).tolist())
    return request


def raw_scores(response: pb.ModelInferResponse) -> np.ndarray:
    output, fit = response.outputs   # every output when none is requested: score, then the fit verdicts
    assert (output.name, output.datatype, fit.name, fit.datatype) == ("score", "FP32", "fit", "BYTES")
    assert len(response.raw_output_contents) == 2
    return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(list(output.shape))


def requests_total(server: ThreadedServer, code: str) -> float:
    return sample_value(scrape(server.server.metrics_port), "stedq_requests_total", method="ModelInfer", code=code)


def inference_calls(server: ThreadedServer) -> float:
    return sample_value(scrape(server.server.metrics_port), "stedq_batch_size_count")


# --- tritonclient.grpc from PyPI, in its own process

def test_tritonclient_interop(server, reference, version, tmp_path):
    if importlib.util.find_spec("tritonclient") is None:  # find_spec of the top package imports nothing
        if IN_CI:
            pytest.fail("tritonclient is not installed; the dev extra should have installed it")
        pytest.skip("tritonclient is not installed (pip install 'stedq[bench]')")
    fp32, u16 = sted_images(3, seed=10), u16_images(2, seed=11)
    np.savez(tmp_path / "images.npz", fp32=fp32, u16=u16)
    probe = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "kserve_triton_probe.py"), server.address, MODEL,
         str(tmp_path / "images.npz")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)

    assert seen["server_live"] and seen["server_ready"] and seen["model_ready"]
    assert seen["unknown_model_ready"] is False
    assert seen["server_metadata"]["name"] == "stedq"
    metadata = seen["model_metadata"]
    assert metadata["name"] == MODEL and metadata["versions"] == [version]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": ["-1", "1", "-1", "-1"]}]
    assert metadata["outputs"] == [{"name": "score", "datatype": "FP32", "shape": ["-1", "1"]},
                                   {"name": "fit", "datatype": "BYTES", "shape": ["-1", "1"]}]

    expected = {
        "fp32": reference(fp32),
        "u16": reference(u16[:, None].astype(np.float32) / np.float32(65535)),
        "u8": reference((u16 >> 8)[:, None].astype(np.float32) / np.float32(65535)),   # counts, any dtype
    }
    assert len(set(np.round(expected["fp32"], 6))) == 3, "test images must get distinct scores"
    for key, want in expected.items():
        got = seen[f"raw_{key}"]
        assert got["id"] == f"raw-{key}" and got["raw_outputs"] == 2   # score and fit
        assert len(got["fit"]) == len(want) and all(v for v in got["fit"])   # tritonclient decodes BYTES
        assert (got["model_name"], got["model_version"]) == (MODEL, version)
        np.testing.assert_allclose(np.array(got["scores"]).reshape(-1), want, rtol=0, atol=1e-6)
        assert np.array(got["scores"]).shape == (len(want), 1)
    for key in ("fp32", "u16"):
        got = seen[f"typed_{key}"]
        assert got["id"] == f"typed-{key}" and got["raw_outputs"] == 0
        assert got["output"] == ["score", "FP32", [len(expected[key]), 1]]
        np.testing.assert_allclose(np.array(got["scores"]).reshape(-1), expected[key], rtol=0, atol=1e-6)

    check_triton_statistics_and_config(seen, version, metadata, server.server.scorer.settings)

    errors = seen["errors"]
    for case in ("unknown_model", "wrong_version", "unknown_model_metadata"):
        assert errors[case]["status"] == "StatusCode.NOT_FOUND", (case, errors[case])
    assert "no-such-model" in errors["unknown_model"]["message"]
    assert "999" in errors["wrong_version"]["message"]
    for case in ("unknown_model_config", "unknown_model_statistics", "unknown_version_statistics"):
        assert errors[case]["status"] == "StatusCode.NOT_FOUND", (case, errors[case])
    assert "999" in errors["unknown_version_statistics"]["message"]
    for case, fragment in [("wrong_byte_length", "raw_input_contents"), ("wrong_shape", "smaller than the minimum 64x64"),
                           ("out_of_range", "[0, 1]"), ("bad_datatype", "FP64"), ("unknown_output", "'nope'")]:
        assert errors[case]["status"] == "StatusCode.INVALID_ARGUMENT", (case, errors[case])
        assert fragment in errors[case]["message"], (case, errors[case]["message"])


def _version_stats(statistics: dict, version: str) -> dict:
    (stats,) = [s for s in statistics["model_stats"] if s["name"] == MODEL and s["version"] == version]
    return stats


def _count(stats: dict, *path: str) -> int:
    for key in path:
        stats = stats.get(key, {})
    return int(stats or 0)   # tritonclient's JSON: uint64 as strings, zeros left out


def check_triton_statistics_and_config(seen: dict, version: str, metadata: dict, settings) -> None:
    """tritonclient's get_inference_statistics moved exactly with the probe's 5 requests (12 images, one
    per execution: they were sent one after another), and get_model_config states the v2 metadata."""
    before, after = (_version_stats(seen[key], version) for key in ("statistics_before", "statistics_after"))
    moved = {path: _count(after, *path.split(".")) - _count(before, *path.split("."))
             for path in ("inference_count", "execution_count", "inference_stats.success.count",
                          "inference_stats.fail.count", "inference_stats.success.ns",
                          "inference_stats.queue.ns", "inference_stats.compute_infer.ns")}
    assert moved["inference_count"] == 3 + 2 + 2 + 3 + 2 and moved["execution_count"] == 5
    assert moved["inference_stats.success.count"] == 5 and moved["inference_stats.fail.count"] == 0
    assert moved["inference_stats.success.ns"] > moved["inference_stats.compute_infer.ns"] > 0
    assert moved["inference_stats.queue.ns"] > 0
    assert int(after["last_inference"]) >= int(before.get("last_inference", 0)) and int(after["last_inference"]) > 0
    batches = {int(b["batch_size"]): _count(b, "compute_infer", "count") for b in after["batch_stats"]}
    assert {2, 3} <= set(batches) and sum(batches.values()) == int(after["execution_count"])
    assert _version_stats(seen["statistics_all"], version)["inference_count"] == after["inference_count"]

    config = seen["model_config"]["config"]
    assert (config["name"], config["platform"], config["backend"]) == (MODEL, "onnxruntime_onnx", "onnxruntime")
    assert config["max_batch_size"] == settings.max_batch_size == 8 and config["version_policy"] == {"latest": {"num_versions": 1}}
    (image,) = config["input"]
    assert image["name"] == metadata["inputs"][0]["name"] and image["data_type"] == "TYPE_FP32"
    assert image["dims"] == metadata["inputs"][0]["shape"][1:]   # Triton's dims leave the batch axis out
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("score", "TYPE_FP32", ["1"]), ("fit", "TYPE_STRING", ["1"])]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "5000"   # the settings' 5 ms
    assert config["parameters"]["min_image_size"] == {"string_value": "64"}
    assert config["default_model_filename"].endswith(".onnx")


# --- our own generated stubs, in this process

def test_health_and_metadata(stub, version):
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL)).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version=version)).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version="other")).ready
    meta = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "stedq" and meta.version
    model = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL, version=version))
    assert list(model.inputs[0].shape) == [-1, 1, -1, -1] and model.outputs[0].name == "score"


def test_requests_are_validated_against_the_declared_metadata(stub, version):
    """Shapes built from what ModelMetadata declares (not from constants here): the declared name, datatype
    and rank with every -1 dim filled are scored; each fixed dim changed, a rank off by one, another input
    name, or a byte count that does not match the shape are INVALID_ARGUMENT."""
    declared = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL, version=version)).inputs[0]
    shape = list(declared.shape)
    dtype = {"FP32": np.float32}[declared.datatype]
    minimum = 64   # the documented minimum (docs/server.md; the small-image error names it)

    def send(dims, name=declared.name, trim=0):
        values = np.full(dims, 0.2, dtype)
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name=name, datatype=declared.datatype, shape=dims)
        request.raw_input_contents.append(values.tobytes()[:len(values.tobytes()) - trim])
        return stub.ModelInfer(request, timeout=30)

    filled = [2 if d == -1 and i == 0 else (minimum + 16 * i if d == -1 else d) for i, d in enumerate(shape)]
    scored = send(filled)
    assert np.frombuffer(scored.raw_output_contents[0], "<f4").shape == (filled[0],)
    bad = []
    for i, d in enumerate(shape):
        if d != -1:
            bad.append(filled[:i] + [d + 1] + filled[i + 1:])          # a fixed dim changed
        elif i > 0:
            bad.append(filled[:i] + [minimum - 1] + filled[i + 1:])   # below the minimum
    bad += [filled[1:], filled + [1]]                                  # rank off by one
    for dims in bad:
        with pytest.raises(grpc.RpcError) as error:
            send(dims)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (dims, error.value.details())
    for kwargs in ({"name": declared.name + "_x"}, {"trim": 4}):
        with pytest.raises(grpc.RpcError) as error:
            send(filled, **kwargs)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kwargs


def test_raw_and_typed_agree_with_onnxruntime(stub, reference, version):
    images = sted_images(4, seed=20)
    want = reference(images)
    raw = stub.ModelInfer(raw_request(images, id="r1"), timeout=30)
    assert raw.id == "r1" and raw.model_version == version
    np.testing.assert_allclose(raw_scores(raw).reshape(-1), want, rtol=0, atol=1e-6)
    typed = stub.ModelInfer(typed_request(images, id="t1"), timeout=30)
    assert typed.id == "t1" and not typed.raw_output_contents
    assert list(typed.outputs[0].shape) == [4, 1]
    np.testing.assert_allclose(typed.outputs[0].contents.fp32_contents, want, rtol=0, atol=1e-6)
    u8 = (images * 255).round().astype(np.uint8)
    typed_u8 = stub.ModelInfer(typed_request(u8, "UINT8"), timeout=30)
    np.testing.assert_allclose(typed_u8.outputs[0].contents.fp32_contents,
                               reference(u8.astype(np.float32) / np.float32(65535)), rtol=0, atol=1e-6)


def test_outputs_filter(stub):
    images = sted_images(1)
    request = raw_request(images)
    request.outputs.add(name="score")
    response = stub.ModelInfer(request, timeout=30)
    assert [o.name for o in response.outputs] == ["score"] and len(response.raw_output_contents) == 1


def _bad_requests() -> dict[str, tuple[pb.ModelInferRequest, grpc.StatusCode, str]]:
    one = sted_images(1)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases: dict[str, tuple[pb.ModelInferRequest, grpc.StatusCode, str]] = {}

    def case(name, request, fragment, code=invalid):
        cases[name] = (request, code, fragment)

    case("unknown model", raw_request(one, model_name="nope"), "unknown model 'nope'", grpc.StatusCode.NOT_FOUND)
    case("wrong version", raw_request(one, model_version="7"), "no version '7'", grpc.StatusCode.NOT_FOUND)
    case("no inputs", pb.ModelInferRequest(model_name=MODEL), "exactly one input 'image'")
    two = raw_request(one)
    two.inputs.add(name="mask", datatype="FP32", shape=[1, 1, 224, 224])
    case("two inputs", two, "got 'image', 'mask'")
    renamed = raw_request(one)
    renamed.inputs[0].name = "input_1"
    case("input name", renamed, "unknown input 'input_1'")
    case("datatype", raw_request(one.astype(np.int32), "INT32"), "datatype 'INT32' is not supported")
    case("empty batch", raw_request(np.zeros((0, 1, 224, 224), np.float32)), "empty batch")
    unknown_n = raw_request(one)
    unknown_n.inputs[0].shape[0] = -1
    case("negative N", unknown_n, "shape [-1, 1, 224, 224] has a negative dimension")
    case("small image", raw_request(np.zeros((1, 1, 63, 100), np.float32)),
         "shape [1, 1, 63, 100]: image is 63x100, smaller than the minimum 64x64")
    case("rank 3", raw_request(np.zeros((1, 224, 224), np.float32)), "shape [1, 224, 224] is not [N, 1, H, W]")
    case("two channels", raw_request(np.zeros((1, 2, 224, 224), np.float32)), "is not [N, 1, H, W] (the model metadata declares [-1, 1, -1, -1]")
    short = raw_request(one)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
    case("raw length", short, "has 200700 bytes, expected 200704")
    long = raw_request(one)
    long.raw_input_contents[0] = long.raw_input_contents[0] + b"\0" * 4
    case("raw too long", long, "has 200708 bytes, expected 200704")
    extra = raw_request(one)
    extra.raw_input_contents.append(b"\0")
    case("raw count", extra, "raw_input_contents has 2 entries")
    both = typed_request(one)
    both.raw_input_contents.append(one.tobytes())
    case("raw and typed", both, "both in contents and raw_input_contents")
    few = typed_request(one)
    del few.inputs[0].contents.fp32_contents[-1]
    case("typed count", few, "contents.fp32_contents has 50175 values, expected 50176")
    wrong_field = typed_request(one)
    wrong_field.inputs[0].datatype = "UINT16"
    case("typed field", wrong_field, "takes its values in contents.uint_contents, not contents.fp32_contents")
    nan = one.copy()
    nan[0, 0, 5, 5] = np.nan
    case("NaN raw", raw_request(nan), "1 NaN/Inf pixel")
    case("NaN typed", typed_request(nan), "image 0: float32 image has 1 NaN/Inf")
    inf = one.copy()
    inf[0, 0, 5, 5] = np.inf
    case("Inf raw", raw_request(inf), "image 0: float32 image has 1 NaN/Inf")
    case("out of range", raw_request(one + 1.5), "must be in [0, 1]")
    big = typed_request(np.zeros((1, 1, 224, 224), np.uint16), "UINT16")
    big.inputs[0].contents.uint_contents[7] = 70000
    case("uint16 range", big, "outside the uint16 range")
    case("over the limit", raw_request(np.zeros((MAX_QUEUE + 1, 1, 224, 224), np.uint8), "UINT8"),
         "per-request limit")
    unknown_output = raw_request(one)
    unknown_output.outputs.add(name="quality_map")
    case("unknown output", unknown_output, "unknown output 'quality_map'")
    shared = pb.ModelInferRequest(model_name=MODEL)
    shared.inputs.add(name="image", datatype="FP32", shape=[1, 1, 224, 224])
    shared.inputs[0].parameters["shared_memory_region"].string_param = "input_data"
    case("shared memory", shared, "shared memory is not supported")
    classes = raw_request(one)
    classes.outputs.add(name="score").parameters["classification"].int64_param = 3
    case("classification", classes, "classification extension is not supported")
    return cases


BAD_REQUESTS = _bad_requests()


@pytest.mark.parametrize("count", [1, 31, 32, 4096, 3 * 224 * 224])
def test_typed_floats_read_in_one_step_equal_the_field(count):
    values = np.random.default_rng(count).random(count, dtype=np.float32)
    contents = pb.InferTensorContents(fp32_contents=values.tolist())
    np.testing.assert_array_equal(_packed_floats(contents), values)


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request(stub, name):
    request, code, fragment = BAD_REQUESTS[name]
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request, timeout=30)
    assert error.value.code() == code, error.value.details()
    assert fragment in error.value.details()


def test_unknown_model_metadata_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_concurrent_good_and_bad_requests_batch_and_stay_correct(server, stub, reference):
    """Requests from many clients are merged into batches; bad ones fail alone."""
    images = sted_images(24, seed=40)
    want = reference(images)
    ok_before, bad_before = requests_total(server, "OK"), requests_total(server, "INVALID_ARGUMENT")
    batches_before = inference_calls(server)
    bad = raw_request(images[:1] + 1.5)

    def one(index: int):
        if index % 4 == 3:
            try:
                stub.ModelInfer(bad, timeout=30)
            except grpc.RpcError as exc:
                return exc.code()
            return "unexpected success"
        response = stub.ModelInfer(raw_request(images[index:index + 1], id=str(index)), timeout=30)
        assert response.id == str(index)
        return float(raw_scores(response)[0, 0])

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(one, range(24)))
    for index, result in enumerate(results):
        if index % 4 == 3:
            assert result == grpc.StatusCode.INVALID_ARGUMENT
        else:
            assert abs(result - want[index]) <= 1e-6, index
    assert requests_total(server, "OK") - ok_before == 18
    bad = settled_value(server.server.metrics_port, "stedq_requests_total", bad_before + 6, method="ModelInfer",
                        code="INVALID_ARGUMENT")
    assert bad - bad_before == 6
    batches = inference_calls(server) - batches_before
    assert batches < 18, f"18 concurrent single-image requests ran as {batches} inference calls"


def test_readiness_follows_warm_up_and_model_name(bundle):
    """Before warm-up the server is live but not ready; a configured model name is the one served."""
    with ThreadedServer(server_settings(bundle, model_name="sted-quality"), warm=False) as running:
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(pb.ServerLiveRequest()).live
            assert not stub.ServerReady(pb.ServerReadyRequest()).ready
            assert not stub.ModelReady(pb.ModelReadyRequest(name="sted-quality")).ready
            running.call(running.server.warm_up())
            assert stub.ServerReady(pb.ServerReadyRequest()).ready
            assert stub.ModelReady(pb.ModelReadyRequest(name="sted-quality")).ready
            assert not stub.ModelReady(pb.ModelReadyRequest(name=MODEL)).ready
            response = stub.ModelInfer(raw_request(sted_images(1), model_name="sted-quality"), timeout=30)
            assert response.model_name == "sted-quality"


def test_triton_client_example(server, reference, tmp_path):
    """clients/examples/triton_client.py (tritonclient only) scores files and reports rejections."""
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    images = u16_images(2, seed=50)
    np.save(tmp_path / "stack.npy", images)
    np.save(tmp_path / "bright.npy", np.full((224, 224), 2.0, np.float32))
    example = REPO_ROOT / "clients" / "examples" / "triton_client.py"
    run = subprocess.run([sys.executable, str(example), "--server", server.address,
                          str(tmp_path / "stack.npy"), str(tmp_path / "bright.npy")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 1, run.stderr   # one file rejected, the other scored
    assert "bright.npy: rejected: input 'image', image 0: float32 values on the model scale must be in [0, 1]" in run.stderr
    lines = [line.split("\t") for line in run.stdout.splitlines() if "\t" in line]
    assert [name for name, _ in lines] == [f"{tmp_path / 'stack.npy'}[{i}]" for i in range(2)]
    want = reference(images.astype(np.float32) / np.float32(65535))
    np.testing.assert_allclose([float(value) for _, value in lines], want, rtol=0, atol=1e-4)  # printed to 4 places
    # --fp32: the form every server of the model takes (Triton too) scores the same counts the same
    run = subprocess.run([sys.executable, str(example), "--server", server.address, "--fp32", str(tmp_path / "stack.npy")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    portable = [float(line.split("\t")[1]) for line in run.stdout.splitlines() if "\t" in line]
    np.testing.assert_allclose(portable, want, rtol=0, atol=1e-4)


def test_random_malformed_requests_get_clear_errors_and_leave_the_server_working(stub, reference):
    """Random shapes, datatypes, names, payload sizes and contents fields (fixed seed): every answer is
    OK, INVALID_ARGUMENT or NOT_FOUND (never INTERNAL/UNKNOWN), and the server still scores afterwards."""
    rng = np.random.default_rng(1)
    seen: dict[str, int] = {}
    for _ in range(120):
        request = pb.ModelInferRequest(model_name=str(rng.choice([MODEL] * 5 + ["other", ""])),
                                       model_version=str(rng.choice([""] * 5 + ["1"])))
        for _ in range(int(rng.choice([0, 1, 1, 1, 1, 2]))):
            shape = ([int(rng.integers(0, 3)), 1, 224, 224] if rng.random() < 0.5 else
                     [int(v) for v in rng.choice([-2, -1, 0, 1, 3, 224, 225, 2**40, 2**62], size=rng.integers(0, 6))])
            tensor = request.inputs.add(name=str(rng.choice(["image"] * 4 + ["x", ""])), shape=shape,
                                        datatype=str(rng.choice(["FP32", "UINT16", "UINT8", "FP16", "BYTES", ""])))
            size = int(rng.choice([0, 1, 4, 50176, 100352, 200704]))
            mode = rng.integers(0, 4)
            if mode == 0:
                request.raw_input_contents.append(rng.bytes(size))
            elif mode == 1:
                tensor.contents.fp32_contents.extend(rng.normal(0.5, 0.4, size // 2).astype(np.float32))
            elif mode == 2:
                tensor.contents.uint_contents.extend(rng.integers(0, 70000, size // 2, dtype=np.uint32))
            else:
                tensor.contents.bytes_contents.append(b"x")
        if rng.random() < 0.2:
            request.outputs.add(name=str(rng.choice(["score", "x"])))
        try:
            stub.ModelInfer(request, timeout=30)
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
        seen[code] = seen.get(code, 0) + 1
    assert set(seen) <= {"OK", "INVALID_ARGUMENT", "NOT_FOUND"}, seen
    assert seen.get("INVALID_ARGUMENT", 0) > 50, seen
    images = sted_images(2, seed=60)
    np.testing.assert_allclose(raw_scores(stub.ModelInfer(raw_request(images), timeout=30)).reshape(-1),
                               reference(images), rtol=0, atol=1e-6)


def test_versions_follow_a_model_reload(bundle, tmp_path):
    """After a reload the new bundle version is the one served, reported and accepted."""
    served = copy_bundle(bundle, tmp_path / "bundle", version="v-old")
    with ThreadedServer(server_settings(served)) as running, grpc.insecure_channel(running.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelInfer(raw_request(sted_images(1)), timeout=30).model_version == "v-old"
        copy_bundle(bundle, tmp_path / "bundle", version="v-new")
        assert running.call(running.server.reload())
        assert stub.ModelInfer(raw_request(sted_images(1), model_version="v-new"), timeout=30).model_version == "v-new"
        assert list(stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL)).versions) == ["v-new"]
        assert not stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version="v-old")).ready
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(raw_request(sted_images(1), model_version="v-old"), timeout=30)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND and "serving version 'v-new'" in error.value.details()
        # statistics keep one entry per version served, with its own counts
        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL), timeout=30).model_stats
        assert [(s.version, s.inference_stats.success.count, s.inference_count) for s in stats] == [
            ("v-old", 1, 1), ("v-new", 1, 1)]
        (new,) = stub.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL, version="v-new"), timeout=30).model_stats
        assert new.version == "v-new" and new.execution_count == 1
        assert stub.ModelConfig(pb.ModelConfigRequest(name=MODEL), timeout=30).config.default_model_filename


def test_statistics_count_failed_requests_not_invalid_ones(stub, server, version):
    """A request that expires in the queue behind a held engine counts as a failure, never as an
    inference; a request refused as invalid counts in neither (it is the sender's mistake)."""
    def totals():
        (stats,) = stub.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL, version=version), timeout=30).model_stats
        return stats.inference_stats.success.count, stats.inference_stats.fail.count, stats.inference_count

    before = totals()
    with pytest.raises(grpc.RpcError) as invalid:
        stub.ModelInfer(raw_request(sted_images(1)[:, :, :63, :63]), timeout=30)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT and totals() == before
    with ThreadPoolExecutor(1) as pool, HeldEngine(server.server.scorer) as held:
        first = pool.submit(stub.ModelInfer, raw_request(sted_images(16)), timeout=120)
        assert held.entered.wait(30)
        with pytest.raises(grpc.RpcError) as late:
            stub.ModelInfer(raw_request(sted_images(2)), timeout=0.2)
        held.release.set()
        assert first.result().outputs[0].shape == [16, 1]
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(100):   # the late request's handler ends on the server after the client gave up
        if totals()[1] == before[1] + 1:
            break
        time.sleep(0.05)
    assert totals() == (before[0] + 1, before[1] + 1, before[2] + 16)


def test_token_auth_with_tritonclient_headers(bundle):
    """With --token, v2 calls need `authorization: Bearer <token>` (tritonclient: headers=...)."""
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    example = str(REPO_ROOT / "clients" / "examples" / "triton_client.py")
    with ThreadedServer(server_settings(bundle, token="s3cret")) as running:
        without = subprocess.run([sys.executable, example, "--server", running.address], capture_output=True,
                                 text=True, timeout=120)
        assert without.returncode == 3 and "UNAUTHENTICATED" in without.stderr, without.stderr
        wrong = subprocess.run([sys.executable, example, "--server", running.address, "--token", "nope"],
                               capture_output=True, text=True, timeout=120)
        assert wrong.returncode == 3 and "invalid bearer token" in wrong.stderr, wrong.stderr
        right = subprocess.run([sys.executable, example, "--server", running.address, "--token", "s3cret"],
                               capture_output=True, text=True, timeout=120)
        assert right.returncode == 0 and "test image\t" in right.stdout, right.stderr


BESIDE_TRITONCLIENT = """
import asyncio, json, sys
import tritonclient.grpc  # registers the protobuf package 'inference' first
from stedq.server.app import StedqServer
from stedq.settings import Settings

async def main():
    server = StedqServer(Settings(model=sys.argv[1], host="127.0.0.1", port=0, metrics_port=0,
                                  intra_op_threads=1, watch_model=False))
    await server.open()
    services = list(server.services)
    await server.stop(0)
    return services

try:
    import stedq.server.kserve
except ImportError as exc:
    error = str(exc)
print(json.dumps({"error": error, "services": asyncio.run(main())}))
"""


def test_in_a_process_with_tritonclient_the_server_starts_without_kserve(bundle):
    """One process cannot hold two `inference` protobuf modules: importing ours after tritonclient's is
    a clear ImportError, and the server then starts with its own API only (it logs a warning)."""
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    run = subprocess.run([sys.executable, "-c", BESIDE_TRITONCLIENT, str(bundle)], capture_output=True,
                         text=True, timeout=120, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.splitlines()[-1])
    assert "already registered the protobuf package 'inference'" in seen["error"]
    assert "stedq.v1.QualityService" in seen["services"]
    assert "inference.GRPCInferenceService" not in seen["services"]
    assert "KServe v2 protocol not served" in run.stderr


def test_model_config_follows_the_settings(server):
    """Without batching the config has no dynamic_batching; the limits are the settings'."""
    from stedq.server.kserve import model_config

    info = server.server.scorer.model_info
    on = model_config(MODEL, info, "model.onnx", server.server.scorer.settings)
    off = model_config(MODEL, info, "model.onnx", server.server.scorer.settings.model_copy(update={"batching": False}))
    assert on.HasField("dynamic_batching") and not off.HasField("dynamic_batching")
    assert on.parameters["max_request_inputs"].string_value == str(MAX_QUEUE)
    assert on.parameters["tile_stride"].string_value == str(info.tile_stride)
