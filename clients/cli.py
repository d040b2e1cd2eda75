"""`stedq score`."""

from __future__ import annotations

import argparse

from stedq.settings import add_settings_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    score = subparsers.add_parser("score", help="score image files against a running server")
    score.add_argument("paths", nargs="+", help="TIFF/PNG/NPY files, folders or globs")
    add_settings_arguments(score, ["server", "timeout_s", "token", "tls_cert"])
    score.set_defaults(func=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    raise SystemExit(f"stedq {args.command}: not implemented yet")
