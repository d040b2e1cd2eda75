#!/usr/bin/env python3
"""How much would telling the network the pixel size buy? A probe on a trained run's own features.

    python scripts/pixel_size_probe.py RUN [--out FILE.json]      # e.g. runs/v30 (model 2.0.0), ~1 min

The run's network scores an image as sigmoid(w . h + b) x its rule factors, h the 256 features of its
last hidden layer. With the network frozen, the last layer is refitted on the run's training split
(weighted least squares on the score, L2 penalty chosen on the validation split) twice:

- without the pixel size: one (w, b), the network's own head refitted (a check: it lands near the run);
- with it: a (w + dw_k, b + db_k) per pixel size k (labels.csv's pixel_nm), the dw_k penalized towards the
  shared w, i.e. a head that is told the pixel size and may read the same features differently at each.

The test split's Spearman of both against the labels says how much of what the labels allow with the pixel
size known (stedq data ceiling) a pixel-aware head reaches on these features: a floor for a network
trained end to end with the pixel size as an input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from stedq.training.checkpoint import build_model, load_checkpoint
from stedq.training.data import load_labelled_folder
from stedq.training.data.loader import label_columns
from stedq.training.metrics import regression_metrics
from stedq.training.model import rule_factor, transform_input

PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def features(checkpoint: dict, images: np.ndarray, batch: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(N, 256) last-hidden-layer features and (N,) rule factors of images on the model scale."""
    net = build_model(checkpoint)
    norm = checkpoint["normalization"]
    mean, std, transform = float(norm["mean"]), float(norm["std"]), str(norm.get("transform", "linear"))
    hidden, factors = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch], np.float32))[:, None]
            h = net.head[:-2](net.features((transform_input(x, transform) - mean) / std))
            factor = rule_factor(net, x)
            hidden.append(h.numpy())
            factors.append(np.ones(len(x)) if factor is None else factor.numpy().ravel())
    return np.concatenate(hidden), np.concatenate(factors)


def fit_head(h, factor, groups, labels, n_groups: int, penalty: float, shared: bool):
    """The refitted last layer, as a function (features, groups) -> scores before the rule factors:
    (w, b) shared, plus (dw_k, db_k) per group unless `shared`."""
    dim = h.shape[1]
    w = torch.zeros(dim, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    dw = torch.zeros(n_groups, dim, requires_grad=not shared)
    db = torch.zeros(n_groups, requires_grad=not shared)
    params = [w, b] + ([] if shared else [dw, db])
    h, factor, labels = (torch.as_tensor(a, dtype=torch.float32) for a in (h, factor, labels))
    groups = torch.as_tensor(groups, dtype=torch.long)
    optimizer = torch.optim.LBFGS(params, max_iter=500, line_search_fn="strong_wolfe")

    def predict(hh, gg):
        return torch.sigmoid((hh * (w + dw[gg])).sum(1) + b + db[gg])

    def closure():
        optimizer.zero_grad()
        loss = ((predict(h, groups) * factor - labels) ** 2).mean() + penalty * (w.square().sum() / dim) \
            + (0 if shared else 10 * penalty * dw.square().sum() / dim)
        loss.backward()
        return loss
    optimizer.step(closure)
    return lambda hh, gg: predict(torch.as_tensor(hh, dtype=torch.float32),
                                  torch.as_tensor(gg, dtype=torch.long)).detach().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.run)
    split = json.loads((args.run / "split.json").read_text())
    data = load_labelled_folder(split["data_path"])
    index = {name: i for i, name in enumerate(data.names)}
    pixel = label_columns(Path(split["data_path"]), list(data.names), ("pixel_nm",))[:, 0]
    sizes = np.unique(pixel)
    groups = np.searchsorted(sizes, pixel)
    h, factor = features(checkpoint, np.asarray(data.images))
    labels = np.asarray(data.labels, np.float64)
    part = {name: np.array([index[n] for n in split[name]]) for name in ("train", "val", "test")}
    result = {"run": str(args.run), "pixel_sizes_nm": sizes.tolist(), "features": int(h.shape[1])}
    for shared in (True, False):
        best = None
        for penalty in PENALTIES:
            head = fit_head(h[part["train"]], factor[part["train"]], groups[part["train"]], labels[part["train"]],
                            len(sizes), penalty, shared)
            val = regression_metrics(head(h[part["val"]], groups[part["val"]]) * factor[part["val"]],
                                     labels[part["val"]])["rmse"]
            if best is None or val < best[0]:
                best = (val, penalty, head)
        _, penalty, head = best
        test = regression_metrics(head(h[part["test"]], groups[part["test"]]) * factor[part["test"]],
                                  labels[part["test"]])
        key = "without_pixel_size" if shared else "with_pixel_size"
        result[key] = {"penalty": penalty, "val_rmse": round(best[0], 4), "test_spearman": round(test["spearman"], 4),
                       "test_rmse": round(test["rmse"], 4)}
        print(key, result[key], flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
