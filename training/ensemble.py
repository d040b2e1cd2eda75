"""`stedq ensemble`: runs trained alike (other seeds) combined into one checkpoint whose score is the mean
of theirs. `stedq evaluate` and `stedq export` take its folder as they take a run's.

Only runs that share the data, the split, the normalization and the network's options combine: then the
test split is unseen by every member and one graph in front (transform, normalization) serves them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import stedq
from stedq.training.checkpoint import (
    BEST,
    RULE_FACTORS,
    CheckpointError,
    checkpoint_activation,
    checkpoint_factors,
    checkpoint_transform,
    load_checkpoint,
    save_checkpoint,
)


def _shared(checkpoints: list[dict[str, Any]], what: str, value) -> None:
    """Refuse unless `value(checkpoint)` is the same for every checkpoint; `what` says what differs."""
    first = value(checkpoints[0])
    for checkpoint in checkpoints[1:]:
        if value(checkpoint) != first:
            raise CheckpointError(f"{checkpoint['path']} and {checkpoints[0]['path']}: {what}")


def combine(checkpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """One ensemble checkpoint from two or more run checkpoints (as load_checkpoint returns them)."""
    if len(checkpoints) < 2:
        raise CheckpointError("an ensemble needs two or more runs")
    for checkpoint in checkpoints:
        if "ensemble" in checkpoint or (checkpoint.get("config") or {}).get("placeholder"):
            raise CheckpointError(f"{checkpoint['path']}: already an ensemble or a placeholder; combine the "
                                  f"trained runs themselves")
    paths = [str(Path(c["path"]).resolve()) for c in checkpoints]
    if len(set(paths)) < len(paths):
        raise CheckpointError("the same checkpoint is given twice: the members must be different runs")
    _shared(checkpoints, "trained on different data (the dataset hashes differ)", lambda c: (c.get("data") or {}).get("hash"))
    _shared(checkpoints, "their splits differ: one's test images would be another's training images",
            lambda c: (c.get("data") or {}).get("split"))
    _shared(checkpoints, "their normalizations differ (mean, std or input transform)",
            lambda c: (float(c["normalization"]["mean"]), float(c["normalization"]["std"]), checkpoint_transform(c)))
    _shared(checkpoints, "their activations differ", checkpoint_activation)
    for name, field in RULE_FACTORS.items():
        _shared(checkpoints, f"one has the {name} factor (--{field.replace('_', '-')}), the other not",
                lambda c, name=name: checkpoint_factors(c)[name])

    state = {f"members.{index}.{key}": tensor for index, checkpoint in enumerate(checkpoints)
             for key, tensor in checkpoint["model"].items()}
    return {
        "model": state,
        "normalization": dict(checkpoints[0]["normalization"]),
        "config": _merged_config([c.get("config") or {} for c in checkpoints]),
        "data": checkpoints[0].get("data") or {},
        "metrics": {},
        "epoch": [c["epoch"] for c in checkpoints],
        "ensemble": {"members": len(checkpoints), "runs": [c["path"] for c in checkpoints]},
        "stedq_version": stedq.__version__,
    }


def _merged_config(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """The members' hyperparameters: a value they share as it is, one they differ in (the seed, at least)
    as the list of theirs, so the ensemble's record stays true."""
    keys = dict.fromkeys(key for config in configs for key in config)
    return {key: configs[0].get(key) if all(c.get(key) == configs[0].get(key) for c in configs)
            else [c.get(key) for c in configs] for key in keys}


def write_ensemble(runs: list[str | Path], out: str | Path) -> tuple[Path, dict[str, Any]]:
    """Load the runs' checkpoints (best.pt of a run folder), combine them, write OUT/best.pt."""
    ensemble = combine([load_checkpoint(run) for run in runs])
    path = Path(out) / BEST
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ensemble, path)
    return path, ensemble
