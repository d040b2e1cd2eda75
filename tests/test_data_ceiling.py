"""What the labels allow: the labeller's-noise, pixel-size-blind and image-only oracles (stedq data ceiling, and the
lines stedq evaluate adds beside the model's figures)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from stedq.cli import main
from stedq.training.data.ceiling import (
    COLUMNS,
    image_only_quality,
    label_ceiling,
    pixel_blind_quality,
)
from stedq.training.data.label import expert_quality, fading_factor


def write_labels(folder: Path, names: list[str], pixel_sizes: list[float], seed: int = 0,
                 classes: list[str] | None = None) -> np.ndarray:
    """A labels.csv as `stedq data synth` writes it (the label's inputs per image, and with `classes` each
    image's acquisition class drawn from them); returns its rows (without the class)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for _ in names:
        resolution, snr = rng.uniform(50, 160), rng.uniform(2, 15)
        loss, similarity = rng.uniform(0, 0.3), rng.uniform(0.2, 0.9)
        clean = expert_quality(resolution, snr, loss, similarity, 0.0)
        label = float(np.clip(clean + rng.normal(0, 0.03), 0, 1))
        rows.append([resolution, snr, loss, similarity, 0.0, float(rng.choice(pixel_sizes)), clean, label])
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "name", *COLUMNS, *(["class"] if classes else [])])
        for i, (name, row) in enumerate(zip(names, rows, strict=True)):
            writer.writerow([f"{name}-{row[-1]:.4f}.tiff", name, *row, *([classes[i % len(classes)]] if classes else [])])
    return np.array(rows)


def test_with_one_pixel_size_the_blind_oracle_is_the_noise_free_label(tmp_path):
    names = [f"img{i:03d}" for i in range(40)]
    write_labels(tmp_path, names, [20.0])
    ceiling = label_ceiling(tmp_path)
    assert ceiling["n"] == 40 and ceiling["pixel_sizes_nm"] == {"20": 1.0}
    assert ceiling["pixel_blind"]["spearman"] == pytest.approx(ceiling["label_noise"]["spearman"], abs=1e-9)
    assert ceiling["pixel_blind"]["rmse"] == pytest.approx(ceiling["label_noise"]["rmse"], abs=1e-9)
    assert 0.9 < ceiling["label_noise"]["spearman"] < 1.0   # the labeller's noise (sd 0.03) costs a little


def test_hidden_fading_caps_it_further(tmp_path):
    """One pixel size: the pixel-size-blind oracle is the noise-free label, but the fading (structure_loss
    0-0.3 here) is invisible to an image-only model, which gets the set's mean fading factor instead."""
    names = [f"img{i:03d}" for i in range(60)]
    rows = write_labels(tmp_path, names, [20.0], seed=2)
    ceiling = label_ceiling(tmp_path)
    mean_fading = float(fading_factor(rows[:, 2]).mean())
    assert ceiling["mean_fading_factor"] == pytest.approx(mean_fading, abs=1e-4) and 0.85 < mean_fading < 1.0
    assert ceiling["image_only"]["spearman"] < ceiling["pixel_blind"]["spearman"] - 0.005
    resolution, snr, loss, similarity, saturation = rows[0][:5]
    assert image_only_quality(rows[0], np.array([20.0]), np.array([1.0]), mean_fading) == pytest.approx(
        expert_quality(resolution, snr, 0.0, similarity, saturation) * mean_fading)
    assert fading_factor(np.array([0.0, 0.6, 0.9])) == pytest.approx([1.0, 0.7, 0.7])


def test_varied_pixel_sizes_cap_what_an_image_only_model_can_reach(tmp_path):
    names = [f"img{i:03d}" for i in range(60)]
    rows = write_labels(tmp_path, names, [15.0, 35.0], seed=1)
    ceiling = label_ceiling(tmp_path)
    assert set(ceiling["pixel_sizes_nm"]) == {"15", "35"}
    assert ceiling["pixel_blind"]["spearman"] < ceiling["label_noise"]["spearman"] - 0.02
    assert ceiling["pixel_blind"]["rmse"] > 2 * ceiling["label_noise"]["rmse"]
    # one row by hand: the expected label over the two sizes, the resolution held in pixels
    resolution, snr, loss, similarity, saturation, pixel = rows[0][:6]
    by_hand = 0.5 * sum(expert_quality(resolution / pixel * size, snr, loss, similarity, saturation)
                        for size in (15.0, 35.0))
    assert pixel_blind_quality(rows[0], np.array([15.0, 35.0]), np.array([0.5, 0.5])) == pytest.approx(by_hand)
    # a subset, with the pixel sizes' shares taken from another folder
    other = tmp_path / "train"
    write_labels(other, [f"t{i}" for i in range(10)], [20.0])
    subset = label_ceiling(tmp_path, names[:10], prior_folder=other)
    assert subset["n"] == 10 and subset["pixel_sizes_nm"] == {"20": 1.0}
    (tmp_path / "real").mkdir()   # a training set without the label's inputs: nothing to say, no error
    assert label_ceiling(tmp_path, names[:10], prior_folder=tmp_path / "real") is None


def test_data_ceiling_cli(tmp_path, capsys):
    write_labels(tmp_path / "synth", [f"img{i}" for i in range(20)], [15.0, 25.0])
    assert main(["data", "ceiling", str(tmp_path / "synth")]) == 0
    out = capsys.readouterr().out
    assert "pixel-size-blind oracle reaches Spearman" in out and "labeller's noise alone" in out
    assert "the image-only oracle (blind to the fading too)" in out
    (tmp_path / "real").mkdir()
    assert main(["data", "ceiling", str(tmp_path / "real")]) == 1
    assert "no labels.csv with the label's inputs" in capsys.readouterr().err
