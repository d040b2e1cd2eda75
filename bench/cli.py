"""`stedq bench`: in-process onnxruntime (the limit) vs stedq over gRPC vs peers, side by side; JSON + PNG."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from stedq.settings import add_settings_arguments, settings_from_args

BENCH_SETTINGS = ["model", "variant", "device", "intra_op_threads", "inter_op_threads", "max_batch_size",
                  "max_queue_delay_ms", "log_level"]
PEERS = ("kserve", "mlserver", "paper")

DESCRIPTION = """\
Measure, in one run and under the same load: in-process onnxruntime (FP32, and INT8 when it can be had)
at batch 1..64 (the limit); stedq over gRPC with the server in its own process and the load generator in
another (unary batches, ScoreStream, a sweep of concurrent single-image clients with dynamic batching on
and off); stedq's KServe v2 path through tritonclient; MLServer serving the same ONNX file; and the paper
code's design (one image per HTTP request, pixels as JSON). Every round runs every point once; the
results are medians over rounds with min..max, and ratios to the limit are paired by round.

Writes OUT/bench.json (every figure and the environment), OUT/summary.md, three PNG plots and the
servers' logs in OUT/logs/. The full run (126 points) takes 5-10 minutes; --quick (under a minute) only proves
the harness works."""

EPILOG = """\
examples:
  stedq bench                                  full run with the bundled model, results in out/bench/
  stedq bench --quick --out /tmp/b             harness check
  stedq bench --model models/q1 --rounds 5     a trained bundle, more repetitions
  stedq bench --peers kserve paper             without MLServer
  stedq bench --profile                        also profile the server under 32 clients with py-spy

MLServer runs from its own virtualenv (--mlserver-env, default .venv-mlserver):
  python3 -m venv .venv-mlserver && .venv-mlserver/bin/pip install mlserver==1.7.1 onnxruntime
"""


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmark in-process vs gRPC vs peers; JSON + PNG",
                                  description=DESCRIPTION, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--out", type=Path, default=Path("out/bench"), help="output folder (default: out/bench)")
    bench.add_argument("--quick", action="store_true",
                       help="every kind of point once, briefly (under a minute), with batches and clients of "
                            "at most 4 (and --max-batch-size 4 unless given): checks the harness, not speed")
    bench.add_argument("--rounds", type=int, help="repetitions of every point (default 3; --quick 1)")
    bench.add_argument("--duration", type=float, dest="duration_s",
                       help="measured seconds per point and round (default 1.5; --quick 0.2)")
    bench.add_argument("--warmup", type=float, dest="warmup_s",
                       help="unrecorded seconds before each point (default 0.3; --quick 0.05)")
    bench.add_argument("--batches", type=_ints, dest="limit_batches",
                       help="in-process batch sizes (default 1,2,4,8,16,32,64)")
    bench.add_argument("--unary-batches", type=_ints, help="gRPC unary batch sizes (default 1,8,32,64)")
    bench.add_argument("--concurrency", type=_ints, help="concurrent single-image clients (default 1,2,4,...,64)")
    bench.add_argument("--peer-concurrency", type=int, help="callers for the peer comparison (default 32)")
    bench.add_argument("--peers", nargs="*", choices=PEERS, default=None,
                       help=f"which peers to measure (default: all of {', '.join(PEERS)})")
    bench.add_argument("--no-int8", dest="int8", action="store_false", default=None,
                       help="skip the INT8 in-process limit")
    bench.add_argument("--mlserver-env", type=Path, help="virtualenv with mlserver (default .venv-mlserver)")
    bench.add_argument("--profile", action="store_true",
                       help="after the rounds, profile the stedq server under 32 clients with py-spy")
    add_settings_arguments(bench, BENCH_SETTINGS)
    bench.set_defaults(func=_bench)


def _options(args: argparse.Namespace):
    from stedq.bench.plan import BenchOptions, quick_options

    given = {name: getattr(args, name) for name in (
        "rounds", "duration_s", "warmup_s", "limit_batches", "unary_batches", "concurrency", "peer_concurrency",
        "int8", "mlserver_env") if getattr(args, name) is not None}
    if args.peers is not None:
        given["peers"] = tuple(args.peers)
    given["profile"] = args.profile
    options = quick_options(args.out, **given) if args.quick else BenchOptions(out=args.out, **given)
    if options.rounds < 1 or options.duration_s <= 0 or options.warmup_s < 0:
        raise SystemExit("stedq bench: --rounds must be >= 1, --duration > 0 and --warmup >= 0")
    return options


def _bench(args: argparse.Namespace) -> int:
    import json

    from stedq.bench import plots, report
    from stedq.bench.run import Bench
    from stedq.bench.servers import mlserver_version

    if args.quick and args.max_batch_size is None:
        args.max_batch_size = 4   # so that --quick's small points still exercise every comparison
    settings = settings_from_args(args)
    if settings.variant == "auto":   # what the servers will serve, so that their limit is the same variant
        from stedq.engine import Engine

        served = Engine(settings.model, device=settings.device, variant="auto").info.variant
        settings = settings.model_copy(update={"variant": served})
        print(f"stedq bench: --variant auto serves {served} with this bundle on this device", file=sys.stderr)
    options = _options(args)
    options.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["stedq", "bench", *(shlex.quote(a) for a in sys.argv[2:])]) \
        if sys.argv[1:2] == ["bench"] else "stedq bench"
    env = report.environment(settings, mlserver_version(options.mlserver_env) if "mlserver" in options.peers
                             else None)
    results = Bench(options, settings).run()
    results["environment"] = env
    results["command"] = command
    results["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()}
    results["ratios"] = report.ratios(results, settings.max_batch_size, options.peer_concurrency)
    results["targets"] = report.targets(results, settings.max_batch_size, options.peer_concurrency)
    json_path = options.out / "bench.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    summary = report.markdown(results, command)
    (options.out / "summary.md").write_text(summary)
    pngs = plots.write_all(results, options.out)
    for t in results["targets"]:
        v = t["value"]
        print(f"{t['target']}: {'not measured' if v is None else format(v['median'], '.2f')} "
              f"(goal {t['goal']}){'' if t['met'] is None else (' met' if t['met'] else ' NOT met')}")
    print(f"results: {json_path}, {options.out / 'summary.md'}, " + ", ".join(str(p) for p in pngs))
    failed = [e["id"] for e in results["scenarios"] if e.get("errors")]
    if failed:
        print(f"stedq bench: {len(failed)} point(s) failed in some round: {', '.join(failed)} "
              f"(see bench.json and {options.out / 'logs'})", file=sys.stderr)
        return 1
    return 0
