"""Images from 64×64 up are scored (padded by mirroring to the model input), through `stedq score`, the
Python client and KServe v2 alike; below 64 px the answer names the minimum; file pixel sizes come back."""

import json
import subprocess
import sys

import grpc
import numpy as np
import pytest

from stedq.clients import QualityClient
from stedq.files import read_frames
from stedq.kserve import grpc_service_pb2 as v2
from stedq.kserve import grpc_service_pb2_grpc as v2_grpc
from tests.conftest import REPO_ROOT

CROPS = sorted((REPO_ROOT / "validation" / "real-dev" / "degraded").glob("*__crop*.tif"))


@pytest.fixture(scope="module")
def server(shipped_server):
    return shipped_server


@pytest.fixture(scope="module")
def scored(server, tmp_path_factory):
    out = tmp_path_factory.mktemp("crops") / "scores.json"
    done = subprocess.run([sys.executable, "-m", "stedq", "score", *map(str, CROPS),
                           str(REPO_ROOT / "validation" / "real-dev" / "originals" / "dendrite_01_Block_1.tif"),
                           "--server", server.address, "--json", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    return {row["file"].rsplit("/", 1)[-1]: row for row in json.loads(out.read_text())["results"]}


def test_real_crops_of_64_to_160_px_are_scored_by_stedq_score(scored):
    assert len(CROPS) == 15
    sizes = {(scored[p.name]["height"], scored[p.name]["width"]) for p in CROPS}
    assert sizes == {(64, 64), (100, 100), (160, 160)}
    assert all(0.0 <= scored[p.name]["score"] <= 1.0 and not scored[p.name]["error"] for p in CROPS)
    assert len({round(scored[p.name]["score"], 5) for p in CROPS}) == 15   # real scores, not a constant
    # the ImageJ file states its pixel size (XResolution, micron): reported with its result
    assert scored["dendrite_01_Block_1.tif"]["pixel_size_nm"] == pytest.approx(20.0, abs=1e-3)
    assert scored[CROPS[0].name]["pixel_size_nm"] is None


def test_python_client_and_kserve_give_the_same_crop_scores(server, scored):
    images = [read_frames(p)[0].image for p in CROPS]
    with QualityClient(server.address) as client:
        info = client.model_info()
        python = client.score(images)
    assert info.min_image_size == 64 and info.input_height == 224
    np.testing.assert_allclose(python, [scored[p.name]["score"] for p in CROPS], atol=1e-6)
    with grpc.insecure_channel(server.address) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(v2.ModelMetadataRequest(name="quality"), timeout=30)
        assert list(metadata.inputs[0].shape) == [-1, 1, -1, -1]
        for path, image in zip(CROPS, images, strict=True):
            request = v2.ModelInferRequest(model_name="quality")
            request.inputs.add(name="image", datatype="UINT16", shape=[1, 1, *image.shape])
            request.raw_input_contents.append(image.astype("<u2").tobytes())
            score = np.frombuffer(stub.ModelInfer(request, timeout=30).raw_output_contents[0], "<f4")[0]
            assert abs(score - scored[path.name]["score"]) <= 1e-6, path.name


def test_below_64_px_names_the_minimum(server):
    with QualityClient(server.address) as client:
        with pytest.raises(Exception, match="image is 63x64, smaller than the minimum 64x64"):
            client.score(np.zeros((63, 64), np.uint16))
        assert client.score(np.zeros((64, 64), np.uint16)).shape == (1,)
