"""`stedq train --input-transform log`: log(1 + counts) before the mean/std, the same in training, in the
checkpoint, in evaluation and inside the exported graph; unknown transforms are clear errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from stedq.bundle import read_manifest
from stedq.cli import main
from stedq.engine import Engine
from stedq.training.checkpoint import CheckpointError, build_normalized_model, load_checkpoint
from stedq.training.evaluate import Scorer
from stedq.training.model import NormalizedQualityNet, QualityNet, transform_input
from stedq.training.train import TrainingError, train
from tests.export_helpers import save, spread_checkpoint
from tests.test_training_train import config, tiny_dataset

COUNTS = 65535.0


def test_log_transform_keeps_the_lowest_counts_apart_and_narrows_the_range():
    counts = torch.tensor([0.0, 1.0, 2.0, 3.0, 8000.0])
    got = transform_input(counts / COUNTS, "log")
    assert torch.allclose(got, torch.log(counts + 1.0), atol=1e-5)
    # an image peaking at 3 counts and one at 8000: 2667x apart linearly, 6.5x after the transform
    assert float(got[-1] / got[3]) == pytest.approx(6.48, abs=0.01)
    assert float(transform_input(torch.tensor([-0.1]), "log")) == 0.0   # negative inputs read as 0 counts
    same = torch.rand(3)
    assert transform_input(same, "linear") is same
    with pytest.raises(ValueError, match="unknown input transform 'sqrt'"):
        transform_input(same, "sqrt")
    with pytest.raises(ValueError, match="linear, log"):
        NormalizedQualityNet(QualityNet(), 0.0, 1.0, "sqrt")


@pytest.fixture(scope="module")
def log_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("log-run")
    train(tiny_dataset(), out, config(epochs=1, input_transform="log"))
    return out


def test_training_normalizes_what_the_network_sees_and_records_it(log_run):
    best = load_checkpoint(log_run)
    assert best["normalization"]["transform"] == "log"
    assert best["config"]["input_transform"] == "log"
    ds = tiny_dataset()
    split = json.loads((log_run / "split.json").read_text())
    seen = np.log1p(ds.images[[ds.names.index(n) for n in split["train"]]].astype(np.float64) * COUNTS)
    assert best["normalization"]["mean"] == pytest.approx(float(seen.mean()), rel=1e-4)
    assert best["normalization"]["std"] == pytest.approx(float(seen.std()), rel=1e-4)
    # the wrapped model and evaluation's scorer both apply the transform
    images = ds.images[:4]
    net = QualityNet()
    net.load_state_dict(best["model"])
    net.eval()
    norm = best["normalization"]
    with torch.no_grad():
        by_hand = net((torch.log1p(torch.from_numpy(images[:, None]) * COUNTS) - norm["mean"]) / norm["std"])
        wrapped = build_normalized_model(best)(torch.from_numpy(images[:, None]))
        linear = net((torch.from_numpy(images[:, None]) - norm["mean"]) / norm["std"])
    assert torch.allclose(wrapped, by_hand, atol=1e-6)
    assert float((wrapped - linear).abs().max()) > 1e-3   # the transform is really applied
    scored = Scorer(best, device="cpu", precision="fp32")(images)
    assert np.abs(scored - by_hand.squeeze(1).numpy()).max() <= 1e-5


def test_unknown_transforms_are_refused_in_training_and_checkpoints(tmp_path, log_run):
    with pytest.raises(TrainingError, match="--input-transform 'sqrt'"):
        train(tiny_dataset(), tmp_path / "run", config(epochs=1, input_transform="sqrt"))
    checkpoint = load_checkpoint(log_run)
    checkpoint["normalization"]["transform"] = "sqrt"
    path = save(checkpoint, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="unknown input transform 'sqrt'"):
        load_checkpoint(path)


@pytest.mark.slow
def test_exported_graph_takes_the_log_inside(tmp_path):
    from tests.export_helpers import synthetic_images

    images = synthetic_images(8, seed=3)
    checkpoint = spread_checkpoint(images)
    logged = np.log1p(images.astype(np.float64) * COUNTS)
    checkpoint["normalization"] = {"mean": float(logged.mean()), "std": float(logged.std()), "transform": "log"}
    out = tmp_path / "bundle"
    assert main(["export", str(save(checkpoint, tmp_path / "best.pt")), "--out", str(out),
                 "--variants", "none", "--model-version", "2.0.0"]) == 0
    manifest = read_manifest(out)
    assert manifest.normalization.transform == "log"
    assert "log(1 + counts)" in (out / "README.md").read_text()
    model = onnx.load(out / "model.onnx")
    assert "Log" in {node.op_type for node in model.graph.node}
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": images[:, None]})
    with torch.no_grad():
        expected = build_normalized_model(load_checkpoint(out.parent / "best.pt"))(torch.from_numpy(images[:, None]))
    assert np.abs(got - expected.numpy()).max() <= 1e-5
    # The served model says so: GetModelInfo's input_transform comes from here, and so does a bare
    # .onnx file's own metadata (its mean/std are of log counts, not of counts / 65535).
    assert session.get_modelmeta().custom_metadata_map["input_transform"] == "log"
    assert Engine(out, device="cpu").info.transform == "log"
