"""`stedq train --structure-factor`: the score is the network's output times a factor of the image's
neighbour correlation, 0 for pixels as unrelated as noise (a shuffled or empty field), 1 for an image that
shows structure; applied in training, in evaluation and inside the exported graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from stedq.fit import neighbour_correlation as fit_neighbour_correlation
from stedq.training.checkpoint import build_model, build_normalized_model, load_checkpoint
from stedq.training.model import (
    STRUCTURE_FULL,
    STRUCTURE_NONE,
    neighbour_correlation,
    saturation_factor,
    structure_factor,
)
from stedq.training.train import train
from tests.test_saturation_factor import COUNTS, assert_scores_carry, clipped_images
from tests.test_training_train import config, tiny_dataset


def field_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Photon counts: (structured blobs, the same shuffled, an empty field of background, blobs drowned
    in a flat floor so bright that the neighbour correlation lands between the thresholds); and the
    factor each should get (None: between 0 and 1)."""
    rng = np.random.default_rng(seed)
    blobs = clipped_images(seed)[0]
    shuffled = rng.permutation(blobs.ravel()).reshape(blobs.shape)
    empty = rng.poisson(1.5, blobs.shape).astype(np.float64)
    faint = rng.poisson(gaussian_filter(blobs, 1.0) * 0.05 + 40.0).astype(np.float64)
    return np.stack([blobs, shuffled, empty, faint]), np.array([1.0, 0.0, 0.0, np.nan])


def test_factor_is_0_without_structure_1_with_it_and_scale_free():
    counts, want = field_images()
    r = neighbour_correlation(torch.from_numpy(counts.astype(np.float32))).squeeze(1).numpy()
    assert r[0] > 0.5 and abs(r[1]) < 0.01 and abs(r[2]) < 0.01
    assert STRUCTURE_NONE < r[3] < STRUCTURE_FULL            # the in-between case is in between
    for scale in (1.0, COUNTS):   # counts as stored, and counts / 65535 as the graph gets them
        got = structure_factor(torch.from_numpy((counts / scale).astype(np.float32)[:, None])).squeeze(1).numpy()
        assert got[:3] == pytest.approx(want[:3], abs=1e-6)
        assert got[3] == pytest.approx((r[3] - STRUCTURE_NONE) / (STRUCTURE_FULL - STRUCTURE_NONE), abs=1e-4)
    # the fit verdict's `no_structure` reads the same statistic (on a subsample of rows)
    assert [fit_neighbour_correlation(c) for c in counts] == pytest.approx(r, abs=0.02)
    assert structure_factor(torch.full((1, 1, 224, 224), 0.3)).item() == 0.0   # flat: nothing to see


def structured(ds):
    """The tiny set's noise smoothed into structure (neighbour correlation ~0.9): factor exactly 1."""
    ds.images = np.stack([gaussian_filter(image, 2.0) for image in ds.images]).astype(np.float32)
    return ds


@pytest.fixture(scope="module")
def structure_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("structure-run")
    train(structured(tiny_dataset()), out, config(epochs=1, structure_factor=True, saturation_factor=True))
    return out


def test_training_evaluation_and_export_apply_both_factors(structure_run):
    best = load_checkpoint(structure_run)
    assert best["config"]["structure_factor"] is True
    model = build_model(best)
    assert model.structure and model.saturation
    counts = np.concatenate([field_images(1)[0], clipped_images(1)])
    images = (counts / COUNTS).astype(np.float32)
    x = torch.from_numpy(images[:, None])
    factor = (structure_factor(x) * saturation_factor(x)).squeeze(1).numpy()
    assert factor[1] == factor[2] == 0.0 and factor[0] == 1.0 and factor.min() < factor.max()
    assert_scores_carry(best, images, factor, ("structure_factor", "saturation_factor"))


def test_the_factor_enters_the_training_loss_only_where_an_image_lacks_structure(tmp_path):
    """The same seed with and without the flag: the same weights when every training image shows
    structure (a factor of exactly 1), other weights on the tiny set's structureless noise."""
    def weights(ds, name, flag):
        train(ds, tmp_path / name, config(epochs=1, structure_factor=flag))
        return load_checkpoint(tmp_path / name)["model"]["head.9.weight"]   # the last Linear

    assert torch.equal(weights(structured(tiny_dataset()), "smooth-off", False),
                       weights(structured(tiny_dataset()), "smooth-on", True))
    assert not torch.equal(weights(tiny_dataset(), "noise-off", False), weights(tiny_dataset(), "noise-on", True))


@pytest.mark.slow
def test_the_bundle_keeps_the_factor_in_int8_and_leaves_fp16_out(tmp_path):
    """INT8 quantizes convolutions and Gemm only: the correlation stays float32. FP16 would underflow the
    squares of centred pixel values: not written."""
    from tests.export_helpers import export_with_factor

    x = (field_images(2)[0] / COUNTS).astype(np.float32)[:, None]
    manifest, scores, checkpoint = export_with_factor(tmp_path, "structure_factor", x)
    assert set(manifest.variants) == {"fp32"}
    assert "underflow float16" in manifest.metrics["not_written"]["fp16"]
    factor = structure_factor(torch.from_numpy(x)).squeeze(1).numpy()
    assert scores["fp32"][1:3].tolist() == scores["int8"][1:3].tolist() == [0.0, 0.0]   # shuffled, empty
    assert scores["fp32"][0] > 0 and np.abs(scores["int8"] - scores["fp32"]).max() <= 0.1
    plain = build_normalized_model({**checkpoint, "config": {**checkpoint["config"], "structure_factor": False}})
    with torch.no_grad():
        assert scores["fp32"] == pytest.approx(plain(torch.from_numpy(x)).squeeze(1).numpy() * factor, abs=1e-5)
