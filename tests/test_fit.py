"""The fit verdict on every result: real-dev images and their physical degradations are `ok`; shuffled
pixels, an 8-bit stretched copy, a float-normalised copy, a saturated copy and the stored values of an
ImageJ-offset file sent without its calibration are each flagged with the right reason, alike through
`stedq score`, `stedq data fit`, the Python client, KServe v2 and the Node client."""

import json
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tifffile

import stedq
from stedq.bundle import read_manifest
from stedq.clients import QualityClient
from stedq.files import read_frames
from stedq.kserve import grpc_service_pb2 as v2
from stedq.kserve import grpc_service_pb2_grpc as v2_grpc
from tests.conftest import REPO_ROOT
from tests.server_support import ThreadedServer, scrape, server_settings
from tests.test_clients_cli import NODE_DIR, node_client

REAL = REPO_ROOT / "validation" / "real-dev"


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(server_settings(stedq.DEFAULT_MODEL_DIR)) as running:
        yield running


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """{file name: expected reason ('ok' or the one reason that must be named)} in a folder."""
    folder = tmp_path_factory.mktemp("fit")
    expected = {}
    for name in ("axon_actin_1", "dendrite_01_Block_2"):
        for kind in ("base", "thin050", "blur30"):
            tifffile.imwrite(folder / f"{name}__{kind}.tif", tifffile.imread(REAL / "degraded" / f"{name}__{kind}.tif"))
            expected[f"{name}__{kind}.tif"] = "ok"
        tifffile.imwrite(folder / f"{name}__shuffle.tif", tifffile.imread(REAL / "degraded" / f"{name}__shuffle.tif"))
        expected[f"{name}__shuffle.tif"] = "no_structure"
    counts = tifffile.imread(REAL / "degraded" / "axon_actin_2__base.tif").astype(np.float64)
    tifffile.imwrite(folder / "stretched_8bit.tif", np.round(counts / counts.max() * 255).astype(np.uint8))
    expected["stretched_8bit.tif"] = "stretched"
    tifffile.imwrite(folder / "normalised_float.tif", (counts / counts.max()).astype(np.float32))
    expected["normalised_float.tif"] = "normalised"
    tifffile.imwrite(folder / "saturated.tif", np.minimum(counts, 12).astype(np.uint16))
    expected["saturated.tif"] = "saturated"
    stored = tifffile.TiffFile(REAL / "originals" / "dendrite_01_Block_1.tif").asarray()   # counts + 32768
    tifffile.imwrite(folder / "offset_left_in.tif", stored)
    expected["offset_left_in.tif"] = "offset"
    return folder, expected


def agrees(verdicts: dict[str, list[str]], expected: dict[str, str]) -> None:
    for name, reason in expected.items():
        got = verdicts[name]
        assert (got == ["ok"]) if reason == "ok" else (reason in got), (name, got)


def test_the_shipped_bundle_carries_training_statistics():
    fit = read_manifest(stedq.DEFAULT_MODEL_DIR).fit
    assert fit["images"] > 500 and fit["peak_low"] < fit["peak_high"]
    assert 0.05 < fit["neighbour_correlation_low"] < 0.5
    # 2.0.0 was trained on 15-35 nm pixels: a 30 nm file fits, 60 nm does not (1.1.0 knew only 20 nm)
    assert fit["pixel_nm_low"] <= 15 and 35 <= fit["pixel_nm_high"] < 60
    from stedq.fit import FitStatistics, check_fit, statistics
    stats = FitStatistics.from_dict(fit)
    image = tifffile.imread(REAL / "degraded" / "axon_actin_1__base.tif").astype(np.float32) / 65535
    assert check_fit(image, stats, pixel_size_nm=30.0) == ["ok"]
    assert check_fit(image, stats, pixel_size_nm=60.0) == ["pixel_size"]
    one_size = statistics([image])
    assert (one_size.pixel_nm_low, one_size.pixel_nm_high) == (15.0, 25.0)   # not recorded: 20 nm nominal
    assert (statistics([image], [15.0, 20.0, 35.0]).pixel_nm_low, statistics([image], [35.0]).pixel_nm_high) == \
        (11.25, 43.75)


def test_stedq_score_and_data_fit_flag_the_right_reasons(server, kinds, tmp_path):
    folder, expected = kinds
    done = subprocess.run([sys.executable, "-m", "stedq", "score", str(folder), "--server", server.address,
                           "--json", str(tmp_path / "s.json")], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "s.json").read_text())["results"]
    scored = {r["file"].rsplit("/", 1)[-1]: r["fit"].split(";") for r in rows}
    agrees(scored, expected)
    offline = subprocess.run([sys.executable, "-m", "stedq", "data", "fit", str(folder), "--json", "-"],
                             capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert offline.returncode == 1   # some are flagged
    verdicts = {r["file"].rsplit("/", 1)[-1]: r["fit"] for r in json.loads(offline.stdout)["results"]}
    assert verdicts == scored
    counted = scrape(server.server.metrics_port)
    reasons = {s[0]["reason"] for s in counted.get("stedq_fit_results_total", [])}
    assert {"ok", "no_structure", "stretched", "saturated", "offset", "normalised"} <= reasons


def test_python_client_kserve_and_node_give_the_same_verdicts(server, kinds):
    folder, expected = kinds
    frames = {p.name: read_frames(p)[0] for p in sorted(folder.iterdir())}
    with QualityClient(server.address) as client:
        results = client.score_images([f.image for f in frames.values()],
                                      intensity=[f.intensity for f in frames.values()])
    python = {name: list(r.fit) for name, r in zip(frames, results, strict=True)}
    agrees(python, expected)

    with grpc.insecure_channel(server.address) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        for name in ("axon_actin_1__shuffle.tif", "stretched_8bit.tif", "axon_actin_1__base.tif"):
            image = frames[name].image
            request = v2.ModelInferRequest(model_name="quality")
            request.inputs.add(name="image", datatype={"uint8": "UINT8", "uint16": "UINT16"}[image.dtype.name],
                               shape=[1, 1, *image.shape])
            request.raw_input_contents.append(image.tobytes())
            response = stub.ModelInfer(request, timeout=30)
            assert [o.name for o in response.outputs] == ["score", "fit"]
            raw = response.raw_output_contents[1]
            assert raw[4:].decode().split(",") == python[name]

    node = node_client()
    done = subprocess.run([node, "score.js", *map(str, sorted(folder.iterdir())), "--server", server.address,
                           "--json"], cwd=NODE_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    agrees({r["file"].rsplit("/", 1)[-1]: r["fit"] for r in json.loads(done.stdout)["results"]}, expected)


def test_neighbour_correlation_is_a_correlation_of_the_rows_it_reads():
    """The statistic reads every 4th row and the row below it, and takes their mean and variance too: a
    sparse image whose read rows hold all the structure stays within [-1, 1] (with the whole image's
    variance it reached 1.08 on a training image); noise stays near 0, a smooth image near 1."""
    from scipy.ndimage import gaussian_filter

    from stedq.fit import ROW_STEP, neighbour_correlation

    rng = np.random.default_rng(0)
    smooth = gaussian_filter(rng.exponential(30.0, (224, 224)), 3.0)
    sparse = np.zeros((224, 224))
    sparse[::ROW_STEP] = smooth[::ROW_STEP]          # structure only on the read rows and their neighbours
    sparse[1::ROW_STEP] = smooth[1::ROW_STEP]
    assert 0.9 < neighbour_correlation(sparse, ROW_STEP) <= 1.0
    assert 0.9 < neighbour_correlation(smooth, ROW_STEP) <= 1.0
    assert abs(neighbour_correlation(rng.poisson(20.0, (224, 224)), ROW_STEP)) < 0.05
    assert neighbour_correlation(np.full((224, 224), 7.0), ROW_STEP) == 0.0
