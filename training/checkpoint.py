"""Training checkpoints: what `stedq train` writes and what evaluation and export read.

A checkpoint is a `torch.save`d dict:
    model          QualityNet state_dict
    normalization  {"mean": float, "std": float} of the training split, images rescaled to [0, 1]
    config         every training hyperparameter (TrainConfig as a dict)
    data           {"path", "hash", "description", "n_train", "n_val", "n_test", "split": {...names}}
    metrics        test metrics once evaluated ({} before)
    epoch          the epoch these weights are from (1-based; an ensemble: a list, one per member)
    ensemble       only in an ensemble's checkpoint (`stedq ensemble`): {"members": n, "runs": [paths]};
                   its model is a QualityNetEnsemble state_dict, config values the members differ in
                   (the seed) are lists
    stedq_version
  last.pt adds: optimizer, scheduler, rng, history, early_stopping (to resume).
A run folder holds best.pt (best validation loss) and last.pt.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from stedq.bundle import write_atomic
from stedq.training.config import INPUT_TRANSFORMS
from stedq.training.model import NormalizedQualityNet, QualityNet, QualityNetEnsemble

BEST = "best.pt"
LAST = "last.pt"
REQUIRED_KEYS = ("model", "normalization", "config", "data", "metrics", "epoch", "stedq_version")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def resolve_checkpoint_path(path_or_run_dir: str | Path) -> Path:
    path = Path(path_or_run_dir)
    if path.is_dir():
        candidate = path / BEST
        if not candidate.exists():
            raise CheckpointError(f"{path}: no {BEST} in this folder (is it a run folder of `stedq train`?)")
        return candidate
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    return path


def load_checkpoint(path_or_run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load best.pt of a run folder, or the given .pt file, and check that it is a stedq checkpoint."""
    path = resolve_checkpoint_path(path_or_run_dir)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(checkpoint).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: not a stedq checkpoint, missing key(s): {', '.join(missing)}")
    norm = checkpoint["normalization"]
    if not (isinstance(norm, dict) and {"mean", "std"} <= set(norm) and float(norm["std"]) > 0):
        raise CheckpointError(f"{path}: 'normalization' must be {{'mean': float, 'std': float > 0}}, got {norm!r}")
    if norm.get("transform", "linear") not in INPUT_TRANSFORMS:
        raise CheckpointError(f"{path}: unknown input transform {norm['transform']!r} (this version knows "
                              f"{', '.join(INPUT_TRANSFORMS)})")
    checkpoint["path"] = str(path)
    return checkpoint


def checkpoint_activation(checkpoint: dict[str, Any]) -> str:
    """The activation the checkpoint was trained with (checkpoints before --activation: the paper's ELU)."""
    config = checkpoint.get("config")
    return str(config.get("activation", "elu")) if isinstance(config, dict) else "elu"


# The rule factors a run's scores may carry: QualityNet's keyword -> the TrainConfig field (stedq train flag).
RULE_FACTORS = {"saturation": "saturation_factor", "structure": "structure_factor"}


def checkpoint_factors(checkpoint: dict[str, Any]) -> dict[str, bool]:
    """Which rule factors the checkpoint's scores carry (--saturation-factor, --structure-factor), by
    QualityNet's keywords; older checkpoints carry none."""
    config = checkpoint.get("config")
    config = config if isinstance(config, dict) else {}
    return {name: bool(config.get(field, False)) for name, field in RULE_FACTORS.items()}


def checkpoint_members(checkpoint: dict[str, Any]) -> int:
    """How many QualityNets the checkpoint's weights hold: 1, or an ensemble's members (`stedq ensemble`)."""
    ensemble = checkpoint.get("ensemble")
    if ensemble is None:
        return 1
    members = ensemble.get("members") if isinstance(ensemble, dict) else None
    if not isinstance(members, int) or members < 2:
        raise CheckpointError(f"{checkpoint.get('path', 'checkpoint')}: 'ensemble' must say how many members "
                              f"(2 or more) it holds, got {ensemble!r}")
    return members


def new_model(checkpoint: dict[str, Any]) -> QualityNet | QualityNetEnsemble:
    """An untrained network of the checkpoint's shape: a QualityNet, or an ensemble of them."""
    members = checkpoint_members(checkpoint)
    try:
        nets = [QualityNet(activation=checkpoint_activation(checkpoint), **checkpoint_factors(checkpoint))
                for _ in range(members)]
    except ValueError as exc:   # an activation this version does not know
        raise CheckpointError(f"{checkpoint.get('path', 'checkpoint')}: {exc}") from None
    return nets[0] if members == 1 else QualityNetEnsemble(nets)


def build_model(checkpoint: dict[str, Any]) -> QualityNet | QualityNetEnsemble:
    """The checkpoint's network with its weights, in eval mode."""
    model = new_model(checkpoint)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint.get('path', 'checkpoint')}: weights do not fit "
                              f"{type(model).__name__}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def checkpoint_transform(checkpoint: dict[str, Any]) -> str:
    """The input transform the checkpoint was trained with (checkpoints before --input-transform: linear)."""
    return str(checkpoint["normalization"].get("transform", "linear"))


def build_normalized_model(checkpoint: dict[str, Any]) -> NormalizedQualityNet:
    """The network with its input transform and normalization inside: takes images rescaled to [0, 1]
    (what export needs)."""
    norm = checkpoint["normalization"]
    return NormalizedQualityNet(build_model(checkpoint), float(norm["mean"]), float(norm["std"]),
                                checkpoint_transform(checkpoint)).eval()


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write atomically (temporary file, then rename) so an interrupt never leaves a half-written file."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_atomic(path, buffer.getvalue())
    return path
