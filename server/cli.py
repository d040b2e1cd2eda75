"""`stedq serve`."""

from __future__ import annotations

import argparse

from stedq.settings import add_settings_arguments, settings_from_args

SERVE_SETTINGS = [
    "model", "model_name", "variant", "device", "host", "port", "metrics_host", "metrics_port",
    "intra_op_threads", "inter_op_threads", "batching", "max_batch_size", "max_queue_delay_ms",
    "max_queue_size", "max_inflight_mb", "max_message_mb", "grace_period_s", "tile_stride", "watch_model",
    "watch_interval_s", "tls_cert", "tls_key", "tls_client_ca", "token", "log_level",
]


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="run the gRPC scoring server",
        description="Serve a model bundle over gRPC (stedq.v1.QualityService and KServe v2), "
                    "with health, reflection and Prometheus metrics. Without --model it serves the "
                    "bundled default model. It listens on 127.0.0.1 by default: use --host 0.0.0.0 to "
                    "serve the lab network. SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the model.",
        epilog="example: stedq serve --model models/q1 --host 0.0.0.0 --port 50051 --metrics-port 8000")
    add_settings_arguments(serve, SERVE_SETTINGS)
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)  # invalid values: SettingsError, reported by stedq.cli

    from stedq.server.app import serve  # heavy imports (onnxruntime, grpc) only when serving

    return serve(settings)
