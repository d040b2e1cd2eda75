"""`stedq study create|add-tester|serve|status|export|report`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stedq.settings import add_settings_arguments

DEFAULT_PORT = 8080

DESCRIPTION = """\
The paper's expert user study: a tester sees a STED image with two scores, A and B - the expert's
label and a system's prediction (the network's, or a random one drawn from training labels), in random
order - and picks the better one, marks them equivalent, or discards the image.

  stedq study create studies/s1 --images samples/ --predictions preds.csv --testers alice,bob
  stedq study serve studies/s1           prints each tester's link; answers go to studies/s1/study.sqlite
  stedq study status studies/s1          links and progress
  stedq study export studies/s1          tester records CSV (what `stedq evaluate` reads)
  stedq study report studies/s1          Tables 1-2 (confusion, domination per bin) and T/P/E charts

Without people: add --simulated-testers 5 to create to run create -> answer -> export -> report.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    study = subparsers.add_parser("study", help="run an expert user study (target vs prediction) as a web app",
                                  description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = study.add_subparsers(dest="study_command", metavar="ACTION", required=True)

    create = sub.add_parser("create", help="create a study from labelled images and predictions",
                            description="Create a study folder: render the images, draw each tester's "
                                        "random trial order, store everything in study.sqlite.")
    create.add_argument("study", type=Path, help="new study folder")
    create.add_argument("--images", type=Path, required=True,
                        help="folder of labelled images (<name>-<score>.tiff, or images + labels.csv)")
    create.add_argument("--predictions", required=True, metavar="CSV|server",
                        help="the network's predictions: a CSV (image name/file/path, prediction/score "
                             "columns), or 'server' to score the images on a running stedq server (--server)")
    add_settings_arguments(create, ["server", "timeout_s", "token", "tls_cert"])
    create.add_argument("--testers", default="",
                        help="comma-separated tester names, or a number N for tester1..testerN (default: none; "
                             "add them later with add-tester)")
    create.add_argument("--systems", default="network,random",
                        help="systems compared with the expert label (default: network,random)")
    create.add_argument("--baseline-labels", type=Path, default=None,
                        help="training labels the random baseline draws from: a labelled folder or a CSV "
                             "with a label column (default: the study images' own labels)")
    create.add_argument("--seed", type=int, default=0, help="seed of the trial orders (default: 0)")
    create.add_argument("--cmap", default="gray", help="colour map of the rendered images (default: gray)")
    create.add_argument("--stretch", default="0.5,99.5", metavar="LOW,HIGH",
                        help="contrast stretch: percentiles shown as black and white (default: 0.5,99.5)")
    create.add_argument("--simulated-testers", type=int, default=0, metavar="N",
                        help="also let N simulated testers answer every trial, then export and report")
    create.set_defaults(func=_create)

    add = sub.add_parser("add-tester", help="add testers (each gets a link with a secret token)")
    add.add_argument("study", type=Path, help="study folder")
    add.add_argument("names", nargs="+", help="tester names")
    add.add_argument("--base-url", default=None, help="URL the testers reach the app at, for the printed links")
    add.set_defaults(func=_add_tester)

    serve = sub.add_parser("serve", help="serve the judging web app",
                           description="Serve the study. Binds to 127.0.0.1 unless --host says otherwise "
                                       "(0.0.0.0 for testers on the lab network).")
    serve.add_argument("study", type=Path, help="study folder")
    serve.add_argument("--host", default=os.environ.get("STEDQ_STUDY_HOST", "127.0.0.1"),
                       help="bind address [env STEDQ_STUDY_HOST; default: 127.0.0.1]")
    serve.add_argument("--port", type=int, default=int(os.environ.get("STEDQ_STUDY_PORT", DEFAULT_PORT)),
                       help=f"port [env STEDQ_STUDY_PORT; default: {DEFAULT_PORT}]")
    serve.add_argument("--base-url", default=None,
                       help="URL testers reach the app at, for the printed links (default: from host and port)")
    serve.set_defaults(func=_serve)

    status = sub.add_parser("status", help="tester links and progress")
    status.add_argument("study", type=Path, help="study folder")
    status.add_argument("--base-url", default=None, help="URL the testers reach the app at")
    status.set_defaults(func=_status)

    export = sub.add_parser("export", help="write the tester records CSV (read by stedq evaluate)")
    export.add_argument("study", type=Path, help="study folder")
    export.add_argument("--out", type=Path, default=None, help="CSV path (default: <study>/records.csv)")
    export.add_argument("--no-simulated", action="store_true", help="leave simulated testers out")
    export.add_argument("--log", type=Path, default=None, metavar="CSV",
                        help="also write every answer ever given (undone and superseded ones too, with times)")
    export.set_defaults(func=_export)

    report = sub.add_parser("report", help="paper Tables 1-2 and T/P/E charts (markdown, JSON, PNG)")
    report.add_argument("study", type=Path, help="study folder, or a tester records CSV")
    report.add_argument("--out", type=Path, default=None, help="output folder (default: <study>/report)")
    report.add_argument("--no-simulated", action="store_true", help="leave simulated testers out")
    report.set_defaults(func=_report)


def _fail(args: argparse.Namespace, exc: Exception) -> int:
    print(f"stedq study {args.study_command}: {exc}", file=sys.stderr)
    return 2


def _print_links(study: Path, base_url: str | None) -> None:
    from stedq.study.app import default_base_url, tester_links

    links = tester_links(study, base_url or default_base_url("127.0.0.1", DEFAULT_PORT))
    if not links:
        print("no testers yet: add some with `stedq study add-tester`")
    for name, link, done in links:
        print(f"  {name:<16} {done:>9}  {link}")


def _tester_names(text: str) -> list[str]:
    text = text.strip()
    if text.isdigit():
        return [f"tester{i + 1}" for i in range(int(text))]
    return [name.strip() for name in text.split(",") if name.strip()]


def _create(args: argparse.Namespace) -> int:
    from stedq.settings import settings_from_args
    from stedq.study.create import create_study
    from stedq.study.store import StudyError

    try:
        low, high = (float(v) for v in args.stretch.split(","))
    except ValueError:
        return _fail(args, ValueError(f"--stretch must be two numbers LOW,HIGH, got {args.stretch!r}"))
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    try:
        create_study(args.study, args.images, args.predictions, settings=settings_from_args(args),
                     systems=systems, testers=_tester_names(args.testers), baseline_labels=args.baseline_labels,
                     seed=args.seed, cmap=args.cmap, stretch=(low, high))
        print(f"created study {args.study}")
        _print_links(args.study, None)
        if args.simulated_testers:
            return _simulate(args)
    except (StudyError, ValueError) as exc:
        return _fail(args, exc)
    print(f"next: stedq study serve {args.study}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from stedq.study.report import export_records, write_report
    from stedq.study.simulate import run_simulated_testers

    names = run_simulated_testers(args.study, args.simulated_testers, seed=args.seed)
    path, count = export_records(args.study)
    report = write_report(args.study, args.study / "report")
    print(f"{len(names)} simulated testers answered; {count} records in {path}")
    print(report.read_text())
    print(f"report: {report} (chart: {report.parent / 'tpe.png'})")
    return 0


def _add_tester(args: argparse.Namespace) -> int:
    from stedq.study.create import add_testers
    from stedq.study.store import StudyError

    try:
        add_testers(args.study, args.names)
    except StudyError as exc:
        return _fail(args, exc)
    _print_links(args.study, args.base_url)
    return 0


def _serve(args: argparse.Namespace) -> int:
    # A missing web stack (the `study` extra) is reported by stedq.cli's missing-extra handler.
    from stedq.study.app import serve
    from stedq.study.store import StudyError

    try:
        serve(args.study, host=args.host, port=args.port, base_url=args.base_url)
    except StudyError as exc:
        return _fail(args, exc)
    return 0


def _status(args: argparse.Namespace) -> int:
    from stedq.study.store import StudyError

    try:
        _print_links(args.study, args.base_url)
    except StudyError as exc:
        return _fail(args, exc)
    return 0


def _export(args: argparse.Namespace) -> int:
    from stedq.study.report import export_log, export_records
    from stedq.study.store import StudyError

    try:
        path, count = export_records(args.study, args.out, include_simulated=not args.no_simulated)
        print(f"{count} tester records written to {path}")
        if args.log:
            path, count = export_log(args.study, args.log)
            print(f"{count} answers (the full log) written to {path}")
    except StudyError as exc:
        return _fail(args, exc)
    return 0


def _report(args: argparse.Namespace) -> int:
    from stedq.study.report import write_report
    from stedq.study.store import StudyError
    from stedq.training.userstudy import RecordsError

    out = args.out or (args.study if args.study.is_dir() else args.study.parent) / "report"
    try:
        path = write_report(args.study, out, include_simulated=not args.no_simulated)
    except (StudyError, RecordsError) as exc:
        return _fail(args, exc)
    print(path.read_text())
    print(f"report: {path} (chart: {path.parent / 'tpe.png'})")
    return 0
