"""One pixel contract for every client: the shared table of files (tests/pixel_table.py) scored through
`stedq score`, the sync Python client, KServe v2 and the Node client against one real server; identical
counts give identical scores (≤ 1e-6), and the ImageJ-calibrated / int16 originals score as their plain
counts."""

import json
import subprocess
import sys

import grpc
import numpy as np
import pytest

from stedq.clients import QualityClient
from stedq.kserve import grpc_service_pb2 as v2
from stedq.kserve import grpc_service_pb2_grpc as v2_grpc
from tests.conftest import REPO_ROOT
from tests.pixel_table import table_counts, write_table
from tests.test_clients_cli import NODE_DIR, node_client

SAME = 1e-6


@pytest.fixture(scope="module")
def server(shipped_server):
    return shipped_server


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pixel-table")
    return folder, write_table(folder)


@pytest.fixture(scope="module")
def scored(server, table, tmp_path_factory):
    """{file name: score} from `stedq score --json` on the table."""
    folder, _ = table
    out = tmp_path_factory.mktemp("scored") / "scores.json"
    done = subprocess.run([sys.executable, "-m", "stedq", "score", str(folder), "--server", server.address,
                           "--json", str(out)], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["results"]
    return {row["file"].rsplit("/", 1)[-1]: row["score"] for row in rows}


def test_stedq_score_gives_identical_counts_identical_scores(table, scored):
    _, groups = table
    assert len(scored) == sum(len(files) for files in groups.values())
    for group, files in groups.items():
        scores = [scored[name] for name in files]
        assert max(scores) - min(scores) <= SAME, (group, dict(zip(files, scores, strict=True)))
    # the groups really differ: a reader that lost the pixels would pass the line above
    assert len({round(scored[files[0]], 4) for files in groups.values()}) == len(groups)


def test_python_client_takes_every_dtype_as_counts(server, scored):
    counts = table_counts()
    arrays = [counts.astype(dtype) for dtype in ("uint8", "uint16", "int16", "uint32", "int64")]
    with QualityClient(server.address) as client:
        scores = list(client.score(arrays))
        scores.append(client.score(counts.astype(np.float32), intensity="counts")[0])
        on_model_scale = client.score((counts / 65535.0).astype(np.float32))[0]
    assert np.ptp([*scores, on_model_scale, scored["counts_uint16.tif"]]) <= SAME


def test_kserve_v2_takes_every_dtype_as_counts(server, scored):
    counts = table_counts()
    cases = [("UINT8", "uint8", None), ("UINT16", "<u2", None), ("INT16", "<i2", None), ("UINT32", "<u4", None),
             ("FP32", "<f4", "counts")]
    with grpc.insecure_channel(server.address) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        request = v2.ModelInferRequest(model_name="quality")
        for datatype, dtype, intensity in cases:
            tensor = request.inputs.add(name="image", datatype=datatype, shape=[1, 1, 224, 224])
            if intensity:
                tensor.parameters["intensity"].string_param = intensity
            request.raw_input_contents.append(counts.astype(dtype).tobytes())
            score = np.frombuffer(stub.ModelInfer(request, timeout=30).raw_output_contents[0], "<f4")[0]
            assert abs(score - scored["counts_uint16.tif"]) <= SAME, datatype
            del request.inputs[:]
            del request.raw_input_contents[:]
        typed = request.inputs.add(name="image", datatype="INT16", shape=[1, 1, 224, 224])
        typed.contents.int_contents.extend(counts.ravel().tolist())
        score = stub.ModelInfer(request, timeout=30).outputs[0].contents.fp32_contents[0]
        assert abs(score - scored["counts_uint16.tif"]) <= SAME
        typed.parameters["intensity"].string_param = "model_scale"
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "int16 pixels are photon counts" in error.value.details()


def test_node_client_reads_the_table_as_stedq_score_does(server, table, scored):
    node = node_client()
    folder, groups = table
    files = sorted(folder.iterdir())
    done = subprocess.run([node, "score.js", *map(str, files), "--server", server.address, "--json"],
                          cwd=NODE_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["results"]
    assert len(rows) == len(files)
    for row in rows:
        name = row["file"].rsplit("/", 1)[-1]
        assert abs(row["score"] - scored[name]) <= SAME, name
