"""`stedq export` end to end on a checkpoint whose scores spread: the bundle, the FP32 graph contract,
parity with PyTorch, metadata round trip, variants behind the accuracy gate, rdf.yaml."""

from __future__ import annotations

import hashlib
from datetime import datetime

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

from stedq.bundle import MANIFEST_METADATA_KEY, manifest_from_metadata, read_manifest
from stedq.cli import main
from stedq.export.gate import accuracy_gate
from stedq.training.model import NormalizedQualityNet, QualityNet
from tests.export_helpers import save, spread_checkpoint, synthetic_images, write_image_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    train, test = synthetic_images(32, seed=1), synthetic_images(40, seed=2)
    checkpoint = spread_checkpoint(train)
    save(checkpoint, root / "best.pt")
    write_image_folder(root / "data" / "train", train)
    write_image_folder(root / "data" / "test", test)
    out = root / "bundle"
    rc = main(["export", str(root / "best.pt"), "--out", str(out), "--data", str(root / "data"),
               "--model-version", "2.1.0", "--variants", "int8,fp16", "--int8-placements", "conv2-6"])
    assert rc == 0
    return {"out": out, "checkpoint": checkpoint, "test": np.round(test * 65535) / 65535, "root": root}


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_manifest_describes_the_checkpoint(exported):
    manifest = read_manifest(exported["out"])
    checkpoint = exported["checkpoint"]
    assert (manifest.name, manifest.version) == ("quality", "2.1.0")
    assert manifest.normalization.mean == pytest.approx([checkpoint["normalization"]["mean"]])
    assert manifest.normalization.std == pytest.approx([checkpoint["normalization"]["std"]])
    assert manifest.training["data"]["hash"] == "test-hash-0123"
    assert manifest.training["data"]["description"] == "synthetic test filaments"
    assert manifest.metrics["test"] == checkpoint["metrics"]["test"]
    # the fit verdict's statistics, from the training images that show structure (all 32 here)
    assert manifest.fit["images"] == 32 and 0 < manifest.fit["peak_low"] <= manifest.fit["peak_high"]
    assert (manifest.fit["pixel_nm_low"], manifest.fit["pixel_nm_high"]) == (15.0, 25.0)   # plain files: 20 nm nominal
    card = (exported["out"] / "README.md").read_text()
    assert "rmse 0.123" in card and "Spearman" in card and "2.1.0" in card
    assert manifest.input.name == "image" and manifest.input.shape == [-1, 1, 224, 224]
    assert manifest.output.name == "score" and manifest.output.shape == [-1, 1]
    assert manifest.stedq_version and datetime.fromisoformat(manifest.created.replace("Z", "+00:00"))
    for variant, filename in manifest.variants.items():
        assert (exported["out"] / filename).is_file(), variant
    assert not list(exported["root"].glob(".bundle.staging-*"))   # nothing left behind


def test_fp32_graph_contract(exported):
    model = onnx.load(exported["out"] / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    assert graph_input.name == "image" and graph_output.name == "score"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 224, 224]
    # ELU runs after max-pooling (exact, 4x fewer ELUs): every MaxPool feeds an Elu, no Elu feeds a MaxPool
    producers = {out: node for node in model.graph.node for out in node.output}
    pools = [node for node in model.graph.node if node.op_type == "MaxPool"]
    assert len(pools) == 6
    assert all(producers[pool.input[0]].op_type == "Conv" for pool in pools)
    assert sum(producers[node.input[0]].op_type == "MaxPool" for node in model.graph.node if node.op_type == "Elu") == 6
    size_mb = (exported["out"] / "model.onnx").stat().st_size / 1e6
    assert 15 < size_mb < 19   # 4.25 M float32 parameters, weights inline


def test_parity_with_pytorch_normalization_inside(exported):
    manifest = read_manifest(exported["out"])
    assert set(manifest.metrics["parity_max_abs_diff"]) == {"1", "7", "32", "64"}
    assert max(manifest.metrics["parity_max_abs_diff"].values()) <= 1e-5
    # Independently of the exporter: PyTorch on images normalized by hand vs the graph on [0, 1] images.
    checkpoint = exported["checkpoint"]
    net = QualityNet()
    net.load_state_dict(checkpoint["model"])
    net.eval()
    images = exported["test"][:7, None].astype(np.float32)
    norm = checkpoint["normalization"]
    with torch.no_grad():
        expected = net((torch.from_numpy(images) - norm["mean"]) / norm["std"]).numpy()
    (got,) = session(exported["out"] / "model.onnx").run(None, {"image": images})
    assert got.shape == (7, 1)
    assert np.abs(got - expected).max() <= 1e-5
    assert np.ptp(got) > 0.1   # the check is not vacuous: scores differ between images
    with torch.no_grad():   # and the normalization really is inside: NormalizedQualityNet agrees
        wrapped = NormalizedQualityNet(net, norm["mean"], norm["std"]).eval()(torch.from_numpy(images)).numpy()
    assert np.abs(got - wrapped).max() <= 1e-5


def test_metadata_round_trip_in_every_variant(exported):
    manifest = read_manifest(exported["out"])
    for variant, filename in manifest.variants.items():
        path = exported["out"] / filename
        from_runtime = session(path).get_modelmeta().custom_metadata_map
        from_onnx = {p.key: p.value for p in onnx.load(path).metadata_props}
        assert from_runtime == from_onnx
        assert manifest_from_metadata(from_runtime, str(path)) == manifest
        assert from_runtime["variant"] == variant
        assert from_runtime["version"] == "2.1.0" and from_runtime["name"] == "quality"
        assert from_runtime["training_data_hash"] == "test-hash-0123"
        assert float(from_runtime["normalization_mean"].strip("[]")) == pytest.approx(manifest.normalization.mean[0])
        assert MANIFEST_METADATA_KEY in from_runtime


def test_variants_are_gated_and_keep_float32_io(exported):
    manifest = read_manifest(exported["out"])
    gates = manifest.metrics["variants"]
    assert set(gates) == {"int8", "fp16"}          # both were built and judged
    for variant, gate in gates.items():
        written = variant in manifest.variants
        assert written == gate["passed"], variant
        assert written == (exported["out"] / f"model.{variant}.onnx").exists()
        if not written:
            assert "accuracy gate" in manifest.metrics["not_written"][variant]
    assert "fp16" in manifest.variants            # float16 inside is far within the gate
    reference = session(exported["out"] / "model.onnx").run(None, {"image": exported["test"][:, None].astype(np.float32)})[0]
    for variant in set(manifest.variants) - {"fp32"}:
        variant_session = session(exported["out"] / manifest.variants[variant])
        (inp,), (out,) = variant_session.get_inputs(), variant_session.get_outputs()
        assert (inp.name, inp.type, out.name, out.type) == ("image", "tensor(float)", "score", "tensor(float)")
        scores = variant_session.run(None, {"image": exported["test"][:, None].astype(np.float32)})[0]
        assert accuracy_gate(variant, reference, scores).passed
    fp16 = onnx.load(exported["out"] / "model.fp16.onnx")
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)


def test_rdf_yaml_is_a_valid_bioimageio_model(exported):
    out = exported["out"]
    rdf = yaml.safe_load((out / "rdf.yaml").read_text())
    assert rdf["weights"]["onnx"]["sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert "1803.10806" in rdf["cite"][0]["url"]
    test_input, test_output = np.load(out / "test_input.npy"), np.load(out / "test_output.npy")
    (scores,) = session(out / "model.onnx").run(None, {"image": test_input})
    np.testing.assert_allclose(scores, test_output, atol=1e-6)
    # the test input is a typical test-split image: the one scored closest to the median
    assert min(np.abs(test_input[0, 0] - image).max() for image in exported["test"]) < 1e-6
    assert 0.2 < float(test_output.ravel()[0]) < 0.8
    spec = pytest.importorskip("bioimageio.spec")
    description = spec.load_description(out / "rdf.yaml", perform_io_checks=True)
    assert description.validation_summary.status in ("valid-format", "passed"), \
        description.validation_summary.format()
