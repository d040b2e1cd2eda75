"""Regression metrics of predicted vs target quality, overall and per target bin."""

from __future__ import annotations

import numpy as np

from stedq.training.userstudy import BINS, bin_index


def _correlations(pred: np.ndarray, target: np.ndarray) -> tuple[float | None, float | None]:
    from scipy import stats

    if pred.size < 3 or np.ptp(pred) == 0 or np.ptp(target) == 0:
        return None, None  # undefined for constant inputs
    return float(stats.pearsonr(pred, target)[0]), float(stats.spearmanr(pred, target)[0])


def regression_metrics(pred, target) -> dict:
    pred, target = np.asarray(pred, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"{pred.size} predictions for {target.size} targets")
    if pred.size == 0:
        return {"n": 0, "rmse": None, "mae": None, "pearson": None, "spearman": None}
    error = pred - target
    pearson, spearman = _correlations(pred, target)
    return {"n": int(pred.size), "rmse": float(np.sqrt(np.mean(error ** 2))),
            "mae": float(np.mean(np.abs(error))), "pearson": pearson, "spearman": spearman,
            "bias": float(np.mean(error))}


def per_bin_metrics(pred, target) -> list[dict]:
    """One row per bin of target quality (the paper's bins): n, RMSE, MAE, mean target and prediction."""
    pred, target = np.asarray(pred, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    which = np.array([bin_index(t) for t in target], dtype=int)
    rows = []
    for index, (low, high) in enumerate(BINS):
        mask = which == index
        p, t = pred[mask], target[mask]
        rows.append({"bin": f"{low:.1f}-{high:.1f}", "n": int(mask.sum()),
                     "rmse": float(np.sqrt(np.mean((p - t) ** 2))) if mask.any() else None,
                     "mae": float(np.mean(np.abs(p - t))) if mask.any() else None,
                     "mean_target": float(t.mean()) if mask.any() else None,
                     "mean_prediction": float(p.mean()) if mask.any() else None})
    return rows


def per_group_metrics(pred, target, groups) -> list[dict]:
    """One row per group (e.g. the generator's acquisition classes), largest first: n, mean target, bias
    (mean prediction - target), MAE and Spearman within the group."""
    pred, target = np.asarray(pred, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    groups = np.asarray(groups, dtype=object)
    rows = []
    for name in sorted(set(groups), key=lambda g: (-int((groups == g).sum()), str(g))):
        mask = groups == name
        m = regression_metrics(pred[mask], target[mask])
        rows.append({"group": str(name), "n": m["n"], "mean_target": float(target[mask].mean()),
                     "bias": m["bias"], "mae": m["mae"], "spearman": m["spearman"]})
    return rows


def groups_markdown(tables: dict[str, list[dict]]) -> str:
    """Per-group rows of several splits side by side: a bias on the training split too is underfitting."""
    names = list(dict.fromkeys(row["group"] for rows in tables.values() for row in rows))
    lookup = {split: {row["group"]: row for row in rows} for split, rows in tables.items()}
    head = " | ".join(f"{split}: n | mean target | bias | MAE" for split in tables)
    lines = [f"| class | {head} |", "|---|" + "---|---|---|---|" * len(tables)]
    for name in names:
        cells = []
        for split in tables:
            row = lookup[split].get(name)
            cells.append("– | – | – | –" if row is None else
                         f"{row['n']} | {row['mean_target']:.3f} | {row['bias']:+.3f} | {row['mae']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def metrics_markdown(metrics: dict, bins: list[dict]) -> str:
    lines = ["| n | RMSE | MAE | Pearson | Spearman |", "|---|---|---|---|---|",
             f"| {metrics['n']} | {_fmt(metrics['rmse'])} | {_fmt(metrics['mae'])} | "
             f"{_fmt(metrics['pearson'])} | {_fmt(metrics['spearman'])} |", "",
             "| target bin | n | RMSE | MAE | mean target | mean prediction |", "|---|---|---|---|---|---|"]
    for row in bins:
        lines.append(f"| {row['bin']} | {row['n']} | {_fmt(row['rmse'])} | {_fmt(row['mae'])} | "
                     f"{_fmt(row['mean_target'])} | {_fmt(row['mean_prediction'])} |")
    return "\n".join(lines) + "\n"
