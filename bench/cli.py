"""`stedq bench`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmark in-process vs gRPC vs peers; JSON + PNG")
    bench.add_argument("--out", default="out/bench", help="output folder")
    bench.add_argument("--quick", action="store_true", help="a run of under a minute")
    bench.set_defaults(func=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    raise SystemExit(f"stedq {args.command}: not implemented yet")
