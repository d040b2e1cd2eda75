"""stedq train: the paper protocol on tiny real runs (a few images, 1-2 epochs), the checkpoint contract,
resume/determinism, the run folder, and clear errors for bad data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from stedq.training.augment import dihedral
from stedq.training.checkpoint import (
    REQUIRED_KEYS,
    CheckpointError,
    build_model,
    build_normalized_model,
    load_checkpoint,
)
from stedq.training.config import TrainConfig
from stedq.training.train import Dataset, TrainingError, epoch_plan, split_indices, train

PNG = b"\x89PNG\r\n\x1a\n"


def tiny_dataset(n: int = 12, seed: int = 0, hash_: str = "tiny") -> Dataset:
    """Brighter, less noisy images get higher labels (something learnable)."""
    rng = np.random.default_rng(seed)
    labels = rng.uniform(0, 1, n).astype(np.float32)
    images = (0.2 + 0.6 * labels[:, None, None]) * rng.random((n, 224, 224)) ** (2 - labels[:, None, None])
    return Dataset(images=images.astype(np.float32), labels=labels, names=[f"img{i:03d}" for i in range(n)],
                   path="memory", hash=hash_, description="tiny test set")


def config(**changes) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 8, "patience": 5, "precision": "fp32", **changes})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(tiny_dataset(), out, config())
    return out


def test_run_folder_and_checkpoint_contract(run_dir):
    for name in ("best.pt", "last.pt", "log.csv", "log.json", "curves.png", "split.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "curves.png").read_bytes()[:8] == PNG
    rows = list(csv.DictReader((run_dir / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(float(r["val_rmse"]) ** 2 == pytest.approx(float(r["val_loss"])) for r in rows)
    summary = json.loads((run_dir / "log.json").read_text())
    assert summary["stopped"] == "max epochs" and summary["epochs_run"] == 2

    best = load_checkpoint(run_dir)        # a run folder means its best.pt
    assert set(REQUIRED_KEYS) <= set(best)
    assert best["epoch"] == summary["best_epoch"]
    assert best["config"]["lr"] == 0.01 and best["config"]["momentum"] == 0.9
    data = best["data"]
    assert (data["n_train"], data["n_val"], data["n_test"]) == (10, 1, 1)
    assert data["hash"] == "tiny" and data["description"] == "tiny test set"
    split = json.loads((run_dir / "split.json").read_text())
    assert len(set(split["train"]) | set(split["val"]) | set(split["test"])) == 12
    # normalization: the training split's mean/std, images in [0, 1]
    ds = tiny_dataset()
    train_idx = [ds.names.index(n) for n in split["train"]]
    assert best["normalization"]["mean"] == pytest.approx(float(ds.images[train_idx].mean()), rel=1e-5)
    assert best["normalization"]["std"] == pytest.approx(float(ds.images[train_idx].std()), rel=1e-5)
    assert best["metrics"]["test"]["n"] == 1
    # the normalized model takes [0, 1] images and gives scores in [0, 1]
    model = build_normalized_model(best)
    with torch.no_grad():
        scores = model(torch.from_numpy(ds.images[:4]).unsqueeze(1))
    assert scores.shape == (4, 1) and bool(((scores >= 0) & (scores <= 1)).all())
    last = load_checkpoint(run_dir / "last.pt")
    assert {"optimizer", "rng", "history", "early_stopping"} <= set(last)


def test_resume_repeats_the_uninterrupted_run(run_dir, tmp_path):
    ds = tiny_dataset()
    train(ds, tmp_path, config(epochs=1))
    with pytest.raises(TrainingError, match="--resume"):
        train(ds, tmp_path, config(epochs=2))
    train(ds, tmp_path, config(epochs=2), resume=True)
    a, b = load_checkpoint(run_dir / "last.pt"), load_checkpoint(tmp_path / "last.pt")
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    with pytest.raises(TrainingError, match="other data"):
        train(tiny_dataset(hash_="changed"), tmp_path, config(epochs=3), resume=True)


def test_early_stopping_and_time_limit(tmp_path):
    summary = train(tiny_dataset(), tmp_path / "es", config(epochs=3, patience=1, lr=0.5))
    if summary["stopped"] == "early stopping":
        assert summary["epochs_run"] == summary["best_epoch"] + 1
    else:  # every epoch improved: then all three ran
        assert summary["epochs_run"] == 3 and summary["best_epoch"] == 3
    assert load_checkpoint(tmp_path / "es")["epoch"] == summary["best_epoch"]
    limited = train(tiny_dataset(), tmp_path / "tl", config(epochs=50, max_minutes=0.001))
    assert limited["stopped"].startswith("time limit") and limited["epochs_run"] == 1


def test_bad_data_gets_clear_errors(tmp_path):
    ds = tiny_dataset()
    ds.labels[3] = 1.5
    with pytest.raises(TrainingError, match=r"img003: label 1.5 outside \[0, 1\]"):
        train(ds, tmp_path, config())
    small = tiny_dataset()
    small.images = small.images[:, :100, :100]
    with pytest.raises(TrainingError, match=r"\(100, 100\); QualityNet takes 224x224"):
        train(small, tmp_path, config())
    with pytest.raises(TrainingError, match="no images"):
        train(Dataset(np.zeros((0, 224, 224), np.float32), np.zeros(0, np.float32), [], path="empty"),
              tmp_path, config())
    few = tiny_dataset(n=5)
    with pytest.raises(TrainingError, match="too few"):
        train(few, tmp_path, config())


def test_split_and_epoch_plan():
    split = split_indices(100, 0.1, 0.1, seed=3)
    assert [len(split[k]) for k in ("train", "val", "test")] == [80, 10, 10]
    assert split_indices(100, 0.1, 0.1, seed=3)["test"].tolist() == split["test"].tolist()
    labels = np.array([0.1] * 90 + [0.9] * 10, dtype=np.float32)
    items, transforms = epoch_plan(labels, TrainConfig(seed=1), epoch=1)
    assert len(items) == 200                                    # augmentation doubles the set
    assert sorted(items[transforms == 0].tolist()) == list(range(100))
    assert set(transforms[transforms > 0].tolist()) <= set(range(1, 8)) and (transforms > 0).sum() == 100
    balanced, _ = epoch_plan(labels, TrainConfig(seed=1, balanced=True, augment=False), epoch=1)
    assert 0.3 < np.mean(balanced >= 90) < 0.7                  # the rare bin is drawn about as often
    assert not np.array_equal(epoch_plan(labels, TrainConfig(seed=1), 2)[0], items)


def test_dihedral_gives_the_eight_flips_and_rotations():
    x = torch.arange(9.0).reshape(1, 1, 3, 3).repeat(8, 1, 1, 1)
    out = dihedral(x, np.arange(8))
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], torch.rot90(x[1], 1, dims=(-2, -1)))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="no best.pt"):
        load_checkpoint(tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing key.*normalization"):
        load_checkpoint(tmp_path / "partial.pt")


def test_cosine_schedule_lowers_the_rate_each_epoch_and_resumes_alike(tmp_path):
    ds = tiny_dataset()
    cosine = config(epochs=3, lr_schedule="cosine", lr=0.02)
    train(ds, tmp_path / "full", cosine)
    rates = [float(r["lr"]) for r in csv.DictReader((tmp_path / "full" / "log.csv").open())]
    assert rates[0] == pytest.approx(0.02) and rates[0] > rates[1] > rates[2] > 0
    assert rates[2] == pytest.approx(0.02 * 0.25)  # half cosine at 2/3 of the way
    train(ds, tmp_path / "resumed", config(epochs=1, lr_schedule="cosine", lr=0.02))
    train(ds, tmp_path / "resumed", cosine, resume=True)
    a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in ("full", "resumed"))
    assert [h["lr"] for h in a["history"]] == [h["lr"] for h in b["history"]]
    with pytest.raises(TrainingError, match="--lr-schedule"):
        train(ds, tmp_path / "bad", config(lr_schedule="step"))


def test_photon_variants_are_labelled_by_the_rule(tmp_path):
    """--thin-share / --floor-share: thinned items carry fewer photons, floored ones more, and each the
    label the simulator (which knows the ideal image) gives those counts; saturated items and the rest
    are untouched; a dataset without the label inputs is refused."""
    from stedq.pixels import MODEL_COUNTS_PER_UNIT
    from stedq.training.augment import BLUR_SIGMA_PX, photon_variants
    from stedq.training.data.label import LABEL_INPUTS, blurred_resolution_nm
    from stedq.training.data.microscope import SimulatedMicroscope

    scopes, images, infos = [], [], []
    for seed in range(4):
        scope = SimulatedMicroscope("actin", seed=seed)
        image, info = scope.acquire(dwell_time_us=40.0, p_ex_uw=15.0, p_sted_mw=60.0)
        scopes.append(scope), images.append(image / MODEL_COUNTS_PER_UNIT), infos.append(info)
    images = np.array(images, np.float32)
    clean = np.array([info["label_clean"] for info in infos])
    labels = np.clip(clean + 0.02, 0, 1).astype(np.float32)       # a labeller's offset, kept
    components = np.array([[info[c] for c in LABEL_INPUTS] for info in infos])
    components[3, 3] = 0.4                                          # as if saturated: left alone
    thinned, targets = photon_variants(images, labels, clean, components, 1.0, 0.0, np.random.default_rng(0))
    for i in range(3):
        assert thinned[i].sum() < 0.8 * images[i].sum() and targets[i] < labels[i]
        counts = np.rint(thinned[i] * MODEL_COUNTS_PER_UNIT).astype(np.int64)
        truth = scopes[i].label(counts, infos[i])["label_clean"]
        assert targets[i] == pytest.approx(truth + 0.02, abs=0.02)
    assert np.array_equal(thinned[3], images[3]) and targets[3] == labels[3]
    floored, targets = photon_variants(images, labels, clean, components, 0.0, 1.0, np.random.default_rng(1))
    for i in range(3):   # a floor adds photons and costs only the SNR it takes
        assert floored[i].sum() > images[i].sum() and targets[i] <= labels[i] + 1e-6
        counts = np.rint(floored[i] * MODEL_COUNTS_PER_UNIT).astype(np.int64)
        assert targets[i] == pytest.approx(scopes[i].label(counts, infos[i])["label_clean"] + 0.02, abs=0.02)
    both, targets = photon_variants(images, labels, clean, components, 1.0, 1.0, np.random.default_rng(2))
    for i in range(3):
        counts = np.rint(both[i] * MODEL_COUNTS_PER_UNIT).astype(np.int64)
        assert targets[i] == pytest.approx(scopes[i].label(counts, infos[i])["label_clean"] + 0.02, abs=0.02)
    assert np.array_equal(floored[3], images[3]) and np.array_equal(both[3], images[3])
    untouched, same = photon_variants(images, labels, clean, components, 0.0, 0.0, np.random.default_rng(0))
    assert untouched is images and same is labels
    pixel_nm = np.full(len(images), 20.0)
    blurred, targets = photon_variants(images, labels, clean, components, 0.0, 0.0, np.random.default_rng(3),
                                       blur_share=1.0, pixel_nm=pixel_nm)
    for i in range(3):   # the same photons, smoother, and a worse image by the rule's widened resolution
        counts = np.rint(blurred[i] * MODEL_COUNTS_PER_UNIT).astype(np.int64)
        assert abs(counts.sum() - images[i].sum() * MODEL_COUNTS_PER_UNIT) < 5 * np.sqrt(counts.sum())
        assert targets[i] < labels[i] - 0.05
        # the simulator's label of these counts, at the narrowest and widest blur the copy may have had
        bounds = [scopes[i].label(counts, {**infos[i], "resolution_nm": blurred_resolution_nm(
            infos[i]["resolution_nm"], sigma_px, 20.0)})["label_clean"] + 0.02 for sigma_px in BLUR_SIGMA_PX]
        assert bounds[1] - 0.02 <= targets[i] <= bounds[0] + 0.02, (bounds, targets[i])
    assert np.array_equal(blurred[3], images[3])
    with pytest.raises(ValueError, match="pixel size"):
        photon_variants(images, labels, clean, components, 0.0, 0.0, np.random.default_rng(3), blur_share=1.0)

    ds = tiny_dataset()
    with pytest.raises(TrainingError, match="--thin-share, --floor-share, --blur-share, --defocus-share, --clip-share and --pair-share need"):
        train(ds, tmp_path / "refused", config(thin_share=0.5))
    counts = np.rint(ds.images * 1000)                               # photon counts, on the model's scale
    ds.images = (counts / MODEL_COUNTS_PER_UNIT).astype(np.float32)
    ds.labels_clean = ds.labels.astype(np.float64)
    ds.label_components = np.tile([60.0, 0.0, 0.9, 0.0], (len(ds.labels), 1))
    with pytest.raises(TrainingError, match="pixel_nm"):   # blur needs each image's pixel size
        train(ds, tmp_path / "no-pixel-size", config(blur_share=0.5))
    ds.pixel_nm = np.full(len(ds.labels), 20.0)
    summary = train(ds, tmp_path / "thinned", config(epochs=1, thin_share=0.5, blur_share=0.5, pair_share=0.5,
                                                           pair_loss="hinge", defocus_share=0.2, clip_share=0.2))
    saved = load_checkpoint(tmp_path / "thinned")["config"]
    assert summary["epochs_run"] == 1 and saved["thin_share"] == 0.5 and saved["pair_share"] == 0.5
    assert saved["pair_loss"] == "hinge" and saved["defocus_share"] == 0.2 and saved["clip_share"] == 0.2
    with pytest.raises(TrainingError, match="pair-loss"):   # refused before any work
        train(ds, tmp_path / "bad-pair-loss", config(pair_share=0.5, pair_loss="huber"))
    assert not (tmp_path / "bad-pair-loss").exists()


def test_defocus_and_clip_copies_are_labelled_by_the_rule(tmp_path):
    """--defocus-share / --clip-share: an out-of-focus copy keeps its photons, is blurred to 370-940 nm and
    scores at most the confocal floor; a clipped copy has flat tops at 10-30 % of its peak; each gets the
    label the simulator (which knows the ideal image) gives those counts, within the approximation of the
    structure shown; with both shares 0 the draws are the ones before the two existed."""
    from stedq.pixels import MODEL_COUNTS_PER_UNIT
    from stedq.training.augment import DEFOCUS_FWHM_NM, photon_variants
    from stedq.training.data.label import LABEL_INPUTS, RES_FLOOR, image_saturation
    from stedq.training.data.microscope import SimulatedMicroscope

    scopes, images, infos = [], [], []
    for seed in range(3):
        scope = SimulatedMicroscope("actin", seed=seed)
        image, info = scope.acquire(dwell_time_us=20.0 + 20 * seed, p_ex_uw=15.0, p_sted_mw=60.0)
        scopes.append(scope), images.append(image / MODEL_COUNTS_PER_UNIT), infos.append(info)
    images = np.array(images, np.float32)
    clean = np.array([info["label_clean"] for info in infos])
    labels = np.clip(clean + 0.02, 0, 1).astype(np.float32)
    components = np.array([[info[c] for c in LABEL_INPUTS] for info in infos])
    pixel_nm = np.full(len(images), 20.0)

    defocused, targets = photon_variants(images, labels, clean, components, 0.0, 0.0, np.random.default_rng(4),
                                         pixel_nm=pixel_nm, defocus_share=1.0)
    for i in range(3):
        counts = np.rint(defocused[i] * MODEL_COUNTS_PER_UNIT).astype(np.int64)
        assert abs(counts.sum() - images[i].sum() * MODEL_COUNTS_PER_UNIT) < 5 * np.sqrt(counts.sum())
        assert counts.max() < 0.5 * images[i].max() * MODEL_COUNTS_PER_UNIT    # far smoother
        assert targets[i] <= RES_FLOOR + 0.02 + 1e-6 < labels[i]
        bounds = [scopes[i].label(counts, {**infos[i], "resolution_nm": fwhm})["label_clean"] + 0.02
                  for fwhm in DEFOCUS_FWHM_NM]   # the resolution it may have been given: the label is flat there
        assert min(bounds) - 0.02 <= targets[i] <= max(bounds) + 0.02, (bounds, targets[i])

    clipped, targets = photon_variants(images, labels, clean, components, 0.0, 0.0, np.random.default_rng(5),
                                       clip_share=1.0)
    for i in range(3):
        counts = np.rint(clipped[i] * MODEL_COUNTS_PER_UNIT).astype(np.int64)
        peak = images[i].max() * MODEL_COUNTS_PER_UNIT
        assert 0.1 * peak - 1 <= counts.max() <= 0.3 * peak and image_saturation(counts) > 0.1
        truth = scopes[i].label(counts, infos[i])["label_clean"]
        assert targets[i] == pytest.approx(truth + 0.02, abs=0.02) and targets[i] < labels[i] - 0.3

    # the two new draws come after the old ones and only when asked for: old runs repeat exactly
    old = photon_variants(images, labels, clean, components, 0.5, 0.5, np.random.default_rng(6), 0.5, pixel_nm)
    new = photon_variants(images, labels, clean, components, 0.5, 0.5, np.random.default_rng(6), 0.5, pixel_nm,
                          defocus_share=0.0, clip_share=0.0)
    assert np.array_equal(old[0], new[0]) and np.array_equal(old[1], new[1])
    with pytest.raises(ValueError, match="pixel size"):
        photon_variants(images, labels, clean, components, 0.0, 0.0, np.random.default_rng(3), defocus_share=1.0)


def test_pair_loss_is_the_error_of_score_differences():
    """--pair-share: the batch ends with k originals then their k changed copies; the pair loss compares
    each pair's score difference with its label difference, and ignores the rest of the batch."""
    from stedq.training.augment import pair_loss

    targets = torch.tensor([0.9, 0.1, 0.8, 0.6, 0.7, 0.3])        # 2 plain items, then 2 pairs
    exact = torch.tensor([0.0, 0.5, 0.5, 0.6, 0.4, 0.3])          # differences 0.1 and 0.3: as the labels
    assert pair_loss(exact, targets, 2).item() == pytest.approx(0.0, abs=1e-7)
    flat = torch.tensor([0.9, 0.1, 0.5, 0.5, 0.5, 0.5])           # the copies score as their originals
    assert pair_loss(flat, targets, 2).item() == pytest.approx((0.1 ** 2 + 0.3 ** 2) / 2)


def test_hinge_pair_loss_penalizes_only_a_drop_short_of_the_labels():
    """--pair-loss hinge: each pair costs max(0, label drop - score drop); a copy that loses more than the
    rule says costs nothing, one that gains costs its gain plus the label's drop."""
    from stedq.training.augment import pair_loss

    targets = torch.tensor([0.9, 0.8, 0.6, 0.7, 0.3])             # 1 plain item, then pairs: drops 0.1, 0.3
    deeper = torch.tensor([0.0, 0.8, 0.9, 0.5, 0.1])              # score drops 0.3 and 0.8: both deep enough
    assert pair_loss(deeper, targets, 2, "hinge").item() == pytest.approx(0.0, abs=1e-7)
    rising = torch.tensor([0.0, 0.5, 0.5, 0.55, 0.4])             # first copy gains 0.05, second drops 0.1
    assert pair_loss(rising, targets, 2, "hinge").item() == pytest.approx(((0.1 + 0.05) + (0.3 - 0.1)) / 2)
    both = pair_loss(rising, targets, 2, "mse+hinge").item()
    assert both == pytest.approx(pair_loss(rising, targets, 2, "mse").item() + ((0.1 + 0.05) + (0.3 - 0.1)) / 2)
    with pytest.raises(ValueError, match="hinge"):
        pair_loss(rising, targets, 2, "huber")


def test_precise_batch_norm_averages_the_given_batches(tmp_path):
    """--precise-bn: each batch-norm layer's running mean becomes the mean of its inputs over the batches
    (the running average of the last batches is gone), its momentum is kept, dropout stays out of it."""
    from torch import nn

    from stedq.training.model import QualityNet
    from stedq.training.train import precise_batch_norm

    torch.manual_seed(0)
    model = QualityNet().eval()
    norm = model.features[1][1]                         # the second block's BatchNorm2d
    seen = []
    hook = norm.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    batches = [torch.randn(3, 1, 224, 224) * scale for scale in (1.0, 2.0)]
    norm.running_mean.fill_(5.0)
    precise_batch_norm(model, batches, torch.device("cpu"), "fp32")
    hook.remove()
    per_batch = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen])
    assert torch.allclose(norm.running_mean, per_batch.mean(dim=0), atol=1e-5)
    assert norm.momentum == 0.1 and model.training
    assert all(m.training for m in model.modules() if isinstance(m, nn.Dropout))

    summary = train(tiny_dataset(), tmp_path / "precise", config(epochs=1, precise_bn=8))
    assert np.isfinite(summary["best_val_rmse"])
    assert load_checkpoint(tmp_path / "precise")["config"]["precise_bn"] == 8


def test_relu_run_is_rebuilt_with_relu(tmp_path):
    train(tiny_dataset(), tmp_path / "relu", config(epochs=1, activation="relu"))
    model = build_model(load_checkpoint(tmp_path / "relu"))
    activations = {type(m).__name__ for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ELU))}
    assert activations == {"ReLU"}
    checkpoint = load_checkpoint(tmp_path / "relu")
    checkpoint["config"]["activation"] = "gelu"
    with pytest.raises(CheckpointError, match="unknown activation 'gelu'"):
        build_model(checkpoint)
