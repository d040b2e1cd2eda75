"""`stedq data` (registered from stedq.training.data.cli), `stedq train`, `stedq evaluate`.

Heavy imports (torch, scipy, matplotlib) happen inside the handlers so `stedq --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from stedq.training.data import cli as data_cli

# Flag help for TrainConfig fields (train.py holds the defaults; this holds the words).
TRAIN_HELP = {
    "seed": "seed of the weights, epoch order, augmentation and dropout",
    "split_seed": "seed of the 80/10/10 train/validation/test split",
    "val_fraction": "share of images held out for validation (early stopping)",
    "test_fraction": "share of images held out for testing",
    "epochs": "most epochs (early stopping usually stops first)",
    "patience": "stop after this many epochs without a better validation loss",
    "batch_size": "images per SGD step",
    "lr": "SGD learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "SGD weight decay (L2)",
    "augment": "add a flipped/rotated copy of every training image each epoch (doubles the set)",
    "balanced": "sample training images evenly over the five target bins (the data is unbalanced)",
    "device": "auto = CUDA when available, else CPU",
    "precision": "auto = bfloat16 autocast where the hardware has it natively, else fp32",
    "channels_last": "channels-last memory layout (faster convolutions on CPU)",
    "threads": "torch intra-op threads (0 = torch's default)",
    "max_minutes": "stop before an epoch that would end past this many minutes (0 = no limit)",
}
CHOICES = {"device": ["auto", "cpu", "cuda"], "precision": ["auto", "bf16", "fp32"]}

TRAIN_EPILOG = """\
writes OUT/best.pt (best validation weights, written when training ends), OUT/last.pt (every epoch),
OUT/log.csv, OUT/log.json, OUT/curves.png and OUT/split.json.

the default model:
  stedq train data/synth/actin --out runs/default --seed 0
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    data_cli.register(subparsers)
    from stedq.training.config import TrainConfig  # torch-free

    train = subparsers.add_parser(
        "train", help="train QualityNet as in the paper",
        description="Train QualityNet with the paper's protocol (defaults): 80/10/10 split, flips and "
                    "rotations, SGD momentum 0.9, lr 0.01, batch 100, MSE, early stopping (patience 10).",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("data", type=Path, help="labelled dataset folder (images named <name>-<score>.tiff)")
    train.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<data folder>-seed<seed>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    for field in fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not MISSING else None
        help_text = f"{TRAIN_HELP[field.name]} (default: {default})"
        if field.type in ("bool", bool):
            train.add_argument(flag, dest=field.name, default=default, action=argparse.BooleanOptionalAction,
                               help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(field.type), str)
            train.add_argument(flag, dest=field.name, type=kind, default=default,
                               choices=CHOICES.get(field.name), help=help_text)
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser("evaluate", help="paper metrics on the test split and user-study records")
    evaluate.add_argument("run", help="training run folder or checkpoint")
    evaluate.set_defaults(func=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    raise SystemExit(f"stedq {args.command}: not implemented yet")


def load_dataset(path: Path):
    """Our Dataset from a labelled folder, or SystemExit with the loader's message (it names the file)."""
    from stedq.training.data import DatasetError, load_labelled_folder
    from stedq.training.train import Dataset

    try:
        ds = load_labelled_folder(path)
    except DatasetError as exc:
        raise SystemExit(f"stedq: {exc}") from None
    structures = sorted(set(getattr(ds, "structures", []) or []))
    description = getattr(ds, "description", "") or (
        f"{len(ds.labels)} labelled images from {path}" + (f" ({', '.join(structures)})" if structures else ""))
    return Dataset(images=ds.images, labels=ds.labels, names=list(ds.names), path=str(path),
                   hash=str(ds.content_hash), description=description)


def _train(args: argparse.Namespace) -> int:
    from stedq.training.config import TrainConfig
    from stedq.training.train import TrainingError, train

    config = TrainConfig.from_dict(vars(args))
    out = args.out or Path("runs") / f"{args.data.name}-seed{config.seed}"
    ds = load_dataset(args.data)
    try:
        summary = train(ds, out, config, resume=args.resume)
    except TrainingError as exc:
        raise SystemExit(f"stedq train: {exc}") from None
    test = summary["metrics"].get("test", {})
    print(json.dumps({"run": str(out), "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
                      "stopped": summary["stopped"], "best_val_rmse": round(summary["best_val_rmse"], 4),
                      "mean_epoch_seconds": round(summary["mean_epoch_seconds"], 1),
                      "test": test}, indent=2), file=sys.stdout)
    return 0
