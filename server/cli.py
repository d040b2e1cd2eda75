"""`stedq serve`."""

from __future__ import annotations

import argparse

from stedq.settings import add_settings_arguments

SERVE_SETTINGS = [
    "model", "model_name", "variant", "device", "host", "port", "metrics_host", "metrics_port",
    "intra_op_threads", "inter_op_threads", "batching", "max_batch_size", "max_queue_delay_ms",
    "max_queue_size", "max_message_mb", "grace_period_s", "tile_stride", "watch_model",
    "watch_interval_s", "tls_cert", "tls_key", "tls_client_ca", "token", "log_level",
]


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="run the gRPC scoring server",
        description="Serve a model bundle over gRPC (stedq.v1.QualityService and KServe v2), "
                    "with health, reflection and Prometheus metrics.")
    add_settings_arguments(serve, SERVE_SETTINGS)
    serve.set_defaults(func=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    raise SystemExit(f"stedq {args.command}: not implemented yet")
