"""`stedq train --saturation-factor`: the score is the network's output times the virtual expert's saturation
factor measured on the image, the label rule's own (training/data/label.py), applied in training, in
evaluation and inside the exported graph."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from stedq.export.onnx_graph import export_onnx
from stedq.training.checkpoint import build_model, build_normalized_model, load_checkpoint
from stedq.training.data.label import SAT_WEIGHT, image_saturation, score_components
from stedq.training.evaluate import Scorer
from stedq.training.model import saturation_factor
from stedq.training.train import train
from tests.test_training_train import config, tiny_dataset

COUNTS = 65535.0


def rule_factor(counts: np.ndarray) -> float:
    q = score_components(60.0, 5.0, 0.0, saturation=image_saturation(counts))["q_saturation"]
    return 1 - SAT_WEIGHT + SAT_WEIGHT * q


def clipped_images(seed: int = 0) -> np.ndarray:
    """Poisson images of blobs, clipped at 5-60 % of their peak (some not at all), as integer counts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:224, :224]
    images = []
    for ceiling in (None, 0.05, 0.1, 0.2, 0.25, 0.3, 0.6, 0.9):
        mean = np.zeros((224, 224))
        for _ in range(12):
            y, x = rng.uniform(20, 204, 2)
            mean += rng.uniform(20, 200) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * rng.uniform(3, 12) ** 2))
        counts = rng.poisson(mean + 1.0)
        if ceiling is not None:
            counts = np.minimum(counts, max(2, int(ceiling * counts.max())))
        images.append(counts)
    return np.stack(images).astype(np.float64)


def test_factor_is_the_label_rules_on_counts_and_on_the_model_scale():
    counts = clipped_images()
    want = np.array([rule_factor(c) for c in counts])
    assert want[0] == 1.0 and want.min() == pytest.approx(1 - SAT_WEIGHT)   # unclipped; fully clipped
    assert ((want > 1 - SAT_WEIGHT) & (want < 1)).any()                    # and some in between
    for scale in (1.0, COUNTS):   # counts as stored, and counts / 65535 as the graph gets them
        got = saturation_factor(torch.from_numpy((counts / scale).astype(np.float32))).squeeze(1).numpy()
        assert got == pytest.approx(want, abs=1e-6)
    # a tie of a few Poisson counts at the peak is not a plateau; an empty image is not clipped
    few = np.zeros((1, 224, 224), np.float32)
    few[0, :2, :5] = 9.0
    assert saturation_factor(torch.from_numpy(few)).item() == 1.0
    assert saturation_factor(torch.zeros(1, 1, 224, 224)).item() == 1.0


@pytest.fixture(scope="module")
def saturation_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("saturation-run")
    train(tiny_dataset(), out, config(epochs=1, saturation_factor=True))
    return out


def test_training_evaluation_and_export_apply_the_factor(saturation_run):
    best = load_checkpoint(saturation_run)
    assert best["config"]["saturation_factor"] is True
    assert build_model(best).saturation
    images = (clipped_images(1) / COUNTS).astype(np.float32)
    factor = np.array([rule_factor(c) for c in clipped_images(1)])
    assert_scores_carry(best, images, factor, ("saturation_factor",))


def assert_scores_carry(best: dict, images: np.ndarray, factor: np.ndarray, flags: tuple[str, ...]) -> None:
    """The run's scores of `images` (N, H, W) in [0, 1] are its network's times `factor`, alike in the
    normalized model, the evaluation's Scorer and the exported ONNX graph (`flags`: the factors' config)."""
    wrapped = build_normalized_model(best)
    plain = build_normalized_model({**best, "config": {**best["config"], **dict.fromkeys(flags, False)}})
    x = torch.from_numpy(images[:, None])
    with torch.no_grad():
        scored, network = wrapped(x).squeeze(1).numpy(), plain(x).squeeze(1).numpy()
    assert scored == pytest.approx(network * factor, abs=1e-6)
    assert Scorer(best, device="cpu", precision="fp32")(images) == pytest.approx(scored, abs=1e-5)
    session = ort.InferenceSession(export_onnx(wrapped).SerializeToString(), providers=["CPUExecutionProvider"])
    onnx_scores = session.run(None, {session.get_inputs()[0].name: images[:, None]})[0].squeeze(1)
    assert onnx_scores == pytest.approx(scored, abs=1e-5)


def test_the_factor_enters_the_training_loss_and_only_where_an_image_is_clipped(tmp_path):
    """The same seed with and without the flag: the same weights on unclipped images (a factor of exactly
    1), other weights once some training images are clipped."""
    def weights(ds, name, flag):
        train(ds, tmp_path / name, config(epochs=1, saturation_factor=flag))
        return load_checkpoint(tmp_path / name)["model"]["head.9.weight"]   # the last Linear

    ds = tiny_dataset()
    assert torch.equal(weights(ds, "plain-off", False), weights(ds, "plain-on", True))
    ds.images[::2] = np.minimum(ds.images[::2], 0.3 * ds.images[::2].max(axis=(1, 2), keepdims=True))
    assert not torch.equal(weights(ds, "clipped-off", False), weights(ds, "clipped-on", True))


@pytest.mark.slow
def test_the_bundle_keeps_the_factor_in_int8_and_leaves_fp16_out(tmp_path):
    """INT8 quantizes convolutions and Gemm only: the factor's comparisons stay float32, exact. FP16 would
    cast the input first and merge counts a few apart at a bright peak into a plateau: not written."""
    from tests.export_helpers import export_with_factor

    counts = clipped_images(2)
    x = (counts / COUNTS).astype(np.float32)[:, None]
    manifest, scores, checkpoint = export_with_factor(tmp_path, "saturation_factor", x)
    assert set(manifest.variants) == {"fp32"}
    assert "float16 cannot resolve" in manifest.metrics["not_written"]["fp16"]
    plain = build_normalized_model({**checkpoint, "config": {**checkpoint["config"], "saturation_factor": False}})
    with torch.no_grad():
        network = plain(torch.from_numpy(x)).squeeze(1).numpy()
    factor = np.array([rule_factor(c) for c in counts])
    assert factor.min() == pytest.approx(1 - SAT_WEIGHT)
    assert scores["fp32"] == pytest.approx(network * factor, abs=1e-5)
    # INT8's error on this untrained network (< 0.1) scaled by the factor: a factor lost would cost a
    # clipped image 0.85 x its score
    assert (np.abs(scores["int8"] - scores["fp32"]) <= 0.1 * factor).all()
