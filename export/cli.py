"""`stedq export`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="export a checkpoint to an ONNX model bundle")
    export.add_argument("checkpoint", help="training run folder or checkpoint file")
    export.add_argument("--out", required=True, help="bundle folder to write")
    export.set_defaults(func=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    raise SystemExit(f"stedq {args.command}: not implemented yet")
