"""`stedq data synth|preview|check`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data", help="generate, preview and check STED datasets",
        description="Synthetic STED data (pysted physics) with expert-like labels, and checks of real data.")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    synth = data_sub.add_parser("synth", help="simulate a labelled STED dataset")
    synth.add_argument("--out", required=True, help="output folder")
    synth.set_defaults(func=_not_yet)
    preview = data_sub.add_parser("preview", help="contact sheet and label histogram PNGs")
    preview.add_argument("folder", help="dataset folder")
    preview.set_defaults(func=_not_yet)
    check = data_sub.add_parser("check", help="check a folder of labelled images and report all problems")
    check.add_argument("folder", help="dataset folder")
    check.set_defaults(func=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    raise SystemExit(f"stedq {args.command}: not implemented yet")
