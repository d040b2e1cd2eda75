"""What the synthetic labels allow a model that sees only the image to reach.

The virtual expert rates resolution in nanometres, but an image shows it in pixels: where a dataset's
pixel size varies (data 2.0: 15-35 nm), two images whose PSFs are equally many pixels wide can carry labels
far apart, and nothing in the 224x224 counts states which pixel size they were taken at (at most the
structure's physical scale hints at it). The *pixel-size-blind oracle* knows every other input of the
label exactly (the measured SNR, the structure similarity, bleaching, saturation and the resolution in
pixels) and predicts the expected label over the dataset's pixel sizes: the least-squares prediction
without the pixel size. Its Spearman and RMSE against the labels bound what an image-only model can be
expected to reach on that data; the labeller's own noise (label_clean vs label) bounds it further.

The *image-only oracle* is blind to the fading too. The label's bleaching term is the share of the sample's
fluorophores gone before the image is taken, and a uniformly faded field looks like a more dimly labelled
one: the photon scale the generator draws (0.4-2.5x) hides it, and what fading does show (fewer photons)
is already in the SNR term. This oracle puts the set's mean fading factor in place of each image's (the
least-squares answer when fading is independent of what the image shows; correlations a model might use,
e.g. more fading under harsher settings, are ignored, so a model may exceed it slightly).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stedq.training.data.label import expert_quality, fading_factor
from stedq.training.data.loader import label_columns, label_names
from stedq.training.metrics import regression_metrics

COLUMNS = ("resolution_nm", "snr", "structure_loss", "structure_similarity", "saturation", "pixel_nm",
           "label_clean", "label")


def pixel_blind_quality(row: np.ndarray, pixel_sizes: np.ndarray, shares: np.ndarray) -> float:
    """Expected virtual-expert quality of one image (a COLUMNS row) over `pixel_sizes` drawn with
    `shares`, its resolution held fixed in pixels."""
    resolution_nm, snr, loss, similarity, saturation, pixel_nm = row[:6]
    resolution_px = resolution_nm / pixel_nm
    return float(sum(share * expert_quality(resolution_px * size, snr, loss, similarity, saturation)
                     for size, share in zip(pixel_sizes, shares, strict=True)))


def image_only_quality(row: np.ndarray, pixel_sizes: np.ndarray, shares: np.ndarray, mean_fading: float) -> float:
    """`pixel_blind_quality` with the image's own fading replaced by the set's mean fading factor."""
    unfaded = np.array(row, dtype=np.float64)
    unfaded[2] = 0.0
    return pixel_blind_quality(unfaded, pixel_sizes, shares) * mean_fading


def label_ceiling(folder: Path | str | None, names: list[str] | None = None, prior_folder: Path | None = None) -> dict | None:
    """The oracles' figures on `names` of `folder` (all of its images when None), the pixel sizes' shares
    taken from all of `prior_folder` (default: `folder`, i.e. the dataset a model was trained on).
    None when labels.csv does not record the label's inputs (real or older data)."""
    if not folder:
        return None
    folder = Path(folder)
    if names is None:
        names = label_names(folder)
    prior = Path(prior_folder or folder)
    prior_names = label_names(prior)
    rows = label_columns(folder, names, COLUMNS) if names else None
    prior_rows = label_columns(prior, prior_names, ("pixel_nm", "structure_loss")) if prior_names else None
    if rows is None or prior_rows is None:
        return None
    pixel_sizes, counts = np.unique(prior_rows[:, 0], return_counts=True)
    shares = counts / counts.sum()
    mean_fading = float(fading_factor(prior_rows[:, 1]).mean())
    blind = np.array([pixel_blind_quality(row, pixel_sizes, shares) for row in rows])
    image_only = np.array([image_only_quality(row, pixel_sizes, shares, mean_fading) for row in rows])
    labels, clean = rows[:, 7], rows[:, 6]
    return {"n": len(rows),
            "pixel_sizes_nm": {f"{size:g}": round(float(share), 3) for size, share in zip(pixel_sizes, shares, strict=True)},
            "mean_fading_factor": round(mean_fading, 4),
            "label_noise": _brief(regression_metrics(clean, labels)),
            "pixel_blind": _brief(regression_metrics(blind, labels)),
            "image_only": _brief(regression_metrics(image_only, labels))}


def _brief(metrics: dict) -> dict:
    return {"spearman": metrics["spearman"], "rmse": metrics["rmse"]}


def ceiling_markdown(ceiling: dict | None, model_spearman: float | None = None) -> str:
    """Two lines for a report: the oracles' Spearman and RMSE (and what share of the way the model went)."""
    if ceiling is None:
        return ""
    sizes = ", ".join(f"{size} nm {share:.0%}" for size, share in ceiling["pixel_sizes_nm"].items())
    blind, noise = ceiling["pixel_blind"], ceiling["label_noise"]
    image_only = ceiling.get("image_only")   # absent from reports written before it existed
    lines = [f"What the labels allow (n = {ceiling['n']}; pixel sizes {sizes}): the pixel-size-blind "
             f"oracle reaches Spearman **{_fmt(blind['spearman'])}** (RMSE {blind['rmse']:.3f})"
             + (f", the image-only oracle (blind to the fading too) **{_fmt(image_only['spearman'])}** "
                f"(RMSE {image_only['rmse']:.3f})" if image_only else "")
             + f"; the labeller's noise alone caps any model at {_fmt(noise['spearman'])} (RMSE {noise['rmse']:.3f})."]
    if model_spearman is not None and blind["spearman"] is not None:
        lines.append(f"The model's {model_spearman:.3f} is {model_spearman - blind['spearman']:+.3f} from the "
                     f"pixel-size-blind oracle"
                     + (f", {model_spearman - image_only['spearman']:+.3f} from the image-only one."
                        if image_only and image_only["spearman"] is not None else "."))
    return " ".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
