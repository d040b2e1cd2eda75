"""The `stedq` command. Each area registers its own subcommands; heavy imports happen only when a
subcommand runs, so `stedq serve` never imports torch and `--help` is instant."""

from __future__ import annotations

import argparse
import logging
import sys

from stedq import __version__
from stedq.settings import SettingsError

DESCRIPTION = """\
stedq scores STED super-resolution images for quality, the way an expert would
(QualityNet, Robitaille et al., IAAI 2018), and serves the scores over gRPC.

typical workflow:
  stedq data synth --out data/synth      simulate a labelled STED dataset (pysted)
  stedq train data/synth --out runs/q1   train QualityNet as in the paper
  stedq evaluate runs/q1                 paper metrics (RMSE, Spearman, confusion, domination)
  stedq export runs/q1 --out models/q1   ONNX bundle (FP32, INT8, FP16) for the server
  stedq serve                            gRPC server with the bundled default model
  stedq score samples/                   score files against a running server
  stedq loop                             tune a simulated microscope with the score (example)
  stedq bench --quick                    latency/throughput: in-process vs gRPC vs peers
  stedq study create|serve|report        the paper's expert user study as a web app
"""


def build_parser() -> argparse.ArgumentParser:
    # Imported here so that each area's CLI module stays the single place its flags are defined.
    from stedq.bench import cli as bench_cli
    from stedq.clients import cli as clients_cli
    from stedq.export import cli as export_cli
    from stedq.server import cli as server_cli
    from stedq.study import cli as study_cli
    from stedq.training import cli as training_cli

    parser = argparse.ArgumentParser(
        prog="stedq", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"stedq {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    training_cli.register(subparsers)   # data, train, evaluate, ensemble
    export_cli.register(subparsers)     # export
    server_cli.register(subparsers)     # serve
    clients_cli.register(subparsers)    # score, loop
    bench_cli.register(subparsers)      # bench
    study_cli.register(subparsers)      # study
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", None) or "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = args.func(args)
    except SettingsError as exc:  # one clear line per bad value, no traceback
        for line in str(exc).splitlines():
            print(f"stedq {args.command}: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # an extra that is not installed
        hint = {"torch": "train", "onnx": "train", "pysted": "train", "onnxruntime": "serve",
                "prometheus_client": "serve", "grpc_reflection": "serve", "matplotlib": "client",
                "tritonclient": "bench", "psutil": "bench", "starlette": "study", "uvicorn": "study",
                "jinja2": "study", "multipart": "study", "python_multipart": "study"}.get((exc.name or "").split(".")[0])
        if hint is None:
            raise
        print(f"stedq {args.command}: missing package '{exc.name}'. "
              f"Install the extra: pip install 'stedq[{hint}]'", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
