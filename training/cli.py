"""`stedq data` (registered from stedq.training.data.cli), `stedq train`, `stedq evaluate`."""

from __future__ import annotations

import argparse

from stedq.training.data import cli as data_cli


def register(subparsers: argparse._SubParsersAction) -> None:
    data_cli.register(subparsers)

    train = subparsers.add_parser("train", help="train QualityNet as in the paper")
    train.add_argument("data", help="dataset folder")
    train.set_defaults(func=_not_yet)

    evaluate = subparsers.add_parser("evaluate", help="paper metrics on the test split and user-study records")
    evaluate.add_argument("run", help="training run folder or checkpoint")
    evaluate.set_defaults(func=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    raise SystemExit(f"stedq {args.command}: not implemented yet")
