"""Checkpoints in, a NormalizedQualityNet out, with errors that say which file and what is wrong.

Reading is done by `stedq.training.checkpoint` (the training area owns the format); here we add the
architecture check with a readable diff, and the random-weights placeholder used before a trained
model exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import stedq
from stedq.export.errors import ExportError
from stedq.training.checkpoint import CheckpointError, checkpoint_transform, load_checkpoint, new_model
from stedq.training.model import NormalizedQualityNet, QualityNet

PLACEHOLDER_MEAN = 0.1
PLACEHOLDER_STD = 0.1


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None


def untrained_checkpoint(seed: int = 0) -> dict[str, Any]:
    """A checkpoint-shaped dict with random weights: a placeholder bundle to build servers against."""
    torch.manual_seed(seed)
    return {
        "model": QualityNet().state_dict(),
        "normalization": {"mean": PLACEHOLDER_MEAN, "std": PLACEHOLDER_STD},
        "config": {"placeholder": True, "seed": seed},
        "data": {"description": "none: random weights, not trained", "hash": "", "path": "",
                 "n_train": 0, "n_val": 0, "n_test": 0},
        "metrics": {},
        "epoch": 0,
        "stedq_version": stedq.__version__,
        "path": f"<untrained, seed {seed}>",
        "placeholder": (f"random weights (seed {seed}), not trained: its scores mean nothing; "
                        f"normalization mean {PLACEHOLDER_MEAN} / std {PLACEHOLDER_STD} is a placeholder, "
                        f"not measured on data"),
    }


def _architecture_problems(state_dict: Any, expected: dict[str, torch.Tensor], name: str) -> list[str]:
    if not isinstance(state_dict, dict):
        return [f"'model' is a {type(state_dict).__name__}, expected a state_dict"]
    problems = []
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing:
        problems.append(f"missing {len(missing)} tensor(s) ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
    if unexpected:
        hint = f" (saved from a wrapped model? expected a bare {name} state_dict)" \
            if any(k.startswith(("net.", "module.", "_orig_mod.")) for k in unexpected) else ""
        problems.append(f"unexpected {len(unexpected)} tensor(s) ({', '.join(unexpected[:4])}"
                        f"{', ...' if len(unexpected) > 4 else ''}){hint}")
    for key, ref in expected.items():
        value = state_dict.get(key)
        if isinstance(value, torch.Tensor) and value.shape != ref.shape:
            problems.append(f"{key} has shape {tuple(value.shape)}, {name} needs {tuple(ref.shape)}")
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            problems.append(f"{key} contains NaN or infinite values")
    return problems


def build_export_model(checkpoint: dict[str, Any]) -> NormalizedQualityNet:
    """The checkpoint's QualityNet (or ensemble of them) with its weights, input transform and
    normalization in front, in eval mode."""
    where = checkpoint.get("path", "checkpoint")
    try:
        net = new_model(checkpoint)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    name = type(net).__name__
    problems = _architecture_problems(checkpoint.get("model"), net.state_dict(), name)
    if problems:
        raise ExportError(f"{where}: the weights do not fit {name}: " + "; ".join(problems))
    norm = checkpoint["normalization"]
    mean, std = float(norm["mean"]), float(norm["std"])
    if not (torch.isfinite(torch.tensor([mean, std])).all() and std > 0):
        raise ExportError(f"{where}: normalization must be finite with std > 0, got mean={mean}, std={std}")
    net.load_state_dict(checkpoint["model"])
    return NormalizedQualityNet(net, mean, std, checkpoint_transform(checkpoint)).eval()
