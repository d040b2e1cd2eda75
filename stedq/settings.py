"""The one settings object: defaults < environment variables (STEDQ_*) < command-line flags.

`Settings` holds everything a deployment configures (server, batching, security, client target).
Subcommands expose the fields they use as flags with `add_settings_arguments(parser, [...])`, and
build the object with `settings_from_args(args)`, so every flag has a matching STEDQ_* variable.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "STEDQ_"
# STEDQ_* variables that are not settings but belong to other parts (study app, bench, compose ports, proto).
OTHER_VARIABLES = ("STEDQ_STUDY_", "STEDQ_BENCH_", "STEDQ_PROTO_DIR", "STEDQ_GRPC_PUBLISH", "STEDQ_METRICS_PUBLISH")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="log level")

    # --- model
    model: Path | None = Field(
        None, description="model bundle directory or .onnx file (default: the bundled model)")
    model_name: str = Field("quality", description="name the model is served under (KServe v2)")
    variant: Literal["auto", "fp32", "int8", "fp16"] = Field(
        "auto", description="bundle variant: auto = fp16 on CUDA; on the CPU int8 where the bundle's "
        "export measured it >= 1.5x fp32, else fp32")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto uses CUDA when onnxruntime has it, else CPU")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0 = all cores)")
    inter_op_threads: int = Field(0, ge=0, description="onnxruntime inter-op threads (0 = default)")

    # --- gRPC server
    host: str = Field("127.0.0.1", description="gRPC bind address (0.0.0.0 or :: for the lab network)")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 = pick a free one)")
    metrics_host: str | None = Field(None, description="metrics bind address (default: same as --host)")
    metrics_port: int = Field(8000, ge=0, le=65535,
                              description="Prometheus /metrics port (0 = pick a free one)")
    max_message_mb: int = Field(64, ge=1, description="largest gRPC message accepted or sent, in MiB")
    grace_period_s: float = Field(10.0, ge=0, description="on SIGTERM, time in-flight requests get to finish")
    tile_stride: int = Field(112, ge=1, description="step between tiles of a quality map, in pixels")
    watch_model: bool = Field(True, description="reload the model when its files change (also on SIGHUP)")
    watch_interval_s: float = Field(2.0, gt=0, description="how often the model files are checked")

    # --- dynamic batching
    batching: bool = Field(True, description="merge concurrent requests into batches")
    max_batch_size: int = Field(32, ge=1, description="most images per inference call")
    max_queue_delay_ms: float = Field(2.0, ge=0,
                                      description="under load, longest a request waits for a batch to fill "
                                                  "(a request reaching an idle server runs at once)")
    max_queue_size: int = Field(1024, ge=1,
                                description="images waiting at most; more get RESOURCE_EXHAUSTED")
    max_inflight_mb: int = Field(512, ge=1,
                                 description="memory bound on all requests in flight (their pixels, decoded "
                                             "images and model inputs), in MiB; more get RESOURCE_EXHAUSTED")

    # --- security
    tls_cert: Path | None = Field(None, description="server certificate (PEM) to enable TLS")
    tls_key: Path | None = Field(None, description="server private key (PEM)")
    tls_client_ca: Path | None = Field(None, description="CA (PEM) that client certificates must chain to (mTLS)")
    token: SecretStr | None = Field(None, description="bearer token clients must send (authorization header)")

    # --- client side
    server: str = Field("localhost:50051", description="HOST:PORT of the stedq server")
    timeout_s: float = Field(30.0, gt=0, description="deadline of each client call, in seconds")

    @field_validator("model", "tls_cert", "tls_key", "tls_client_ca", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def bind_metrics_host(self) -> str:
        return self.metrics_host or self.host


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings_arguments(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """Add one flag per settings field; the help shows the default and the environment variable."""
    for name in names:
        field = Settings.model_fields[name]
        default = field.default
        shown = default.get_secret_value() if isinstance(default, SecretStr) else default
        help_text = f"{field.description} [env {ENV_PREFIX}{name.upper()}; default: {shown}]"
        annotation = field.annotation
        if annotation is bool:
            parser.add_argument(_flag(name), dest=name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        choices = getattr(annotation, "__args__", None)
        if getattr(annotation, "__origin__", None) is Literal and choices:
            kwargs["choices"] = list(choices)
        elif annotation is int:
            kwargs["type"] = int
        elif annotation is float:
            kwargs["type"] = float
        parser.add_argument(_flag(name), **kwargs)


class SettingsError(ValueError):
    """Invalid setting values; one line per value, naming the flag, its variable and the problem."""


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings with the flags the user actually gave taking precedence over env and defaults."""
    given = {name: value for name, value in vars(args).items()
             if name in Settings.model_fields and value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            lines.append(f"--{name.replace('_', '-')} / {ENV_PREFIX}{name.upper()} = "
                         f"{error.get('input')!r}: {error['msg']}")
        raise SettingsError("\n".join(lines)) from None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per STEDQ_* variable that no setting reads (a typo is otherwise silently ignored),
    naming the closest setting's variable."""
    environ = os.environ if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    warnings = []
    for key in sorted(environ):
        if not key.upper().startswith(ENV_PREFIX) or key.upper() in known or key.upper().startswith(OTHER_VARIABLES):
            continue
        # Compare without underscores too, so STEDQ_MAX_BATCHSIZE finds STEDQ_MAX_BATCH_SIZE.
        squashed = {k.replace("_", ""): k for k in known}
        close = difflib.get_close_matches(key.upper().replace("_", ""), list(squashed), n=1, cutoff=0.75)
        hint = f"; did you mean {squashed[close[0]]}?" if close else ""
        warnings.append(f"environment variable {key} is not a stedq setting and is ignored{hint}")
    return warnings


def describe(settings: Settings) -> str:
    """The effective settings as `name=value` pairs (secrets shown as ***), for the start-up log line."""
    parts = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = "***" if value.get_secret_value() else ""
        parts.append(f"{name}={value}")
    return " ".join(parts)
