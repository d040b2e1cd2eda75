"""`stedq study`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    study = subparsers.add_parser("study", help="run an expert user study (target vs prediction)")
    study_sub = study.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    for name, text in [("create", "create a study from labelled images and predictions"),
                       ("serve", "serve the judging web app"),
                       ("export", "write tester records CSV"),
                       ("report", "paper Tables 1-2 and T/P/E charts")]:
        sub = study_sub.add_parser(name, help=text)
        sub.add_argument("study", help="study folder")
        sub.set_defaults(func=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    raise SystemExit(f"stedq {args.command}: not implemented yet")
