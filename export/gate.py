"""Accuracy gate: a reduced-precision variant must score the test split like FP32 does."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import spearmanr

MAX_MEAN_ABS_DIFF = 0.01
MIN_SPEARMAN = 0.99


@dataclass
class GateResult:
    variant: str
    n_images: int
    mean_abs_diff: float
    max_abs_diff: float
    spearman: float
    passed: bool
    reason: str          # why it failed ("" when it passed)
    placement: str = ""  # INT8: which layers were quantized (stedq.export.variants.INT8_PLACEMENTS)

    def as_dict(self) -> dict:
        return asdict(self)


def accuracy_gate(variant: str, reference: np.ndarray, scores: np.ndarray,
                  max_mean_abs_diff: float = MAX_MEAN_ABS_DIFF, min_spearman: float = MIN_SPEARMAN,
                  placement: str = "") -> GateResult:
    """Compare a variant's scores with FP32's on the same images (mean |Δ| and Spearman's rank correlation)."""
    reference = np.asarray(reference, np.float64).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if reference.shape != scores.shape or len(reference) < 3:
        return GateResult(variant, len(scores), float("nan"), float("nan"), float("nan"), False,
                          f"needs the same >= 3 test images scored by both models "
                          f"(got {len(reference)} and {len(scores)})", placement)
    diff = np.abs(scores - reference)
    mean_abs, max_abs = float(diff.mean()), float(diff.max())
    if np.ptp(reference) == 0 or np.ptp(scores) == 0:
        rho = float("nan")   # constant scores have no ranking to compare
    else:
        rho = float(spearmanr(reference, scores).statistic)
    reasons = []
    if not mean_abs <= max_mean_abs_diff:
        reasons.append(f"mean |Δscore| {mean_abs:.4f} > {max_mean_abs_diff:g}")
    if not rho >= min_spearman:
        reasons.append(f"Spearman {rho:.4f} < {min_spearman:g}" if rho == rho else
                       "Spearman undefined (FP32 or variant scores are constant on the test images)")
    return GateResult(variant, len(scores), mean_abs, max_abs, rho, not reasons, "; ".join(reasons), placement)
