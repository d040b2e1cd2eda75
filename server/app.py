"""Assembly and lifecycle of the gRPC server: `stedq serve` runs `serve(settings)`.

Start-up: load the model (off the event loop), open the gRPC port with health NOT_SERVING, warm up,
self-test, then health SERVING and one log line that says where and what is served.
SIGTERM / SIGINT: health NOT_SERVING, new RPCs refused, in-flight ones get `grace_period_s` to
finish, queued work is completed, exit 0. SIGHUP or a change of the model files: reload the bundle
and swap it in atomically (a failed reload keeps the current model).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from stedq.engine import Engine, EngineError, resolve_model_path, watched_files
from stedq.pixels import demo_image
from stedq.server.interceptors import (
    DrainGate,
    ErrorBoundaryInterceptor,
    MetricsInterceptor,
    TokenAuthInterceptor,
)
from stedq.server.metrics import Metrics
from stedq.server.scoring import Scorer
from stedq.server.servicer import SERVICE_NAME, QualityServicer
from stedq.settings import Settings, describe, unknown_variables
from stedq.v1 import quality_pb2_grpc

log = logging.getLogger("stedq.server")

KSERVE_SERVICE_NAME = "inference.GRPCInferenceService"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class StartupError(RuntimeError):
    """The server cannot start as configured (bad model, port in use, unreadable certificate...)."""


def _read_pem(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StartupError(f"--{what} {path}: cannot read it: {exc.strerror or exc}") from None


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise StartupError("--tls-client-ca needs --tls-cert and --tls-key (mTLS runs over TLS)")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise StartupError("TLS needs both --tls-cert and --tls-key")
    cert, key = _read_pem(settings.tls_cert, "tls-cert"), _read_pem(settings.tls_key, "tls-key")
    client_ca = _read_pem(settings.tls_client_ca, "tls-client-ca")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _try_it_hint(host: str, port: int) -> str:
    """How to score something against this server, as the person who started it would type it."""
    # A checkout made by ./scripts/serve has .venv/bin/stedq; an installed package or a container has stedq.
    command = ".venv/bin/stedq" if Path(".venv/bin/stedq").exists() else "stedq"
    files = "samples/" if Path("samples").is_dir() else "IMAGE.tiff"
    local = host in ("127.0.0.1", "localhost", "::1")
    server = "" if local and port == 50051 else f" --server {'localhost' if local else 'HOST'}:{port}"
    where = ("in another terminal (listening on this machine only: use --host 0.0.0.0 for the lab network)"
             if local else "from any machine that reaches this one")
    return f"Try it: `{command} score {files}{server}` {where}"


def _fingerprint(files: list[Path]) -> tuple:
    stats = []
    for path in files:
        with contextlib.suppress(OSError):
            stat = path.stat()
            stats.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stats)


class StedqServer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.health = health.aio.HealthServicer()
        self.scorer: Scorer | None = None
        self.grpc_server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.services: list[str] = []            # every service, as reflection lists them
        self.scoring_services: list[str] = []    # the ones whose health follows the model
        self.self_test_score: float | None = None
        self._model_path: Path | None = None
        self._http = None
        self.serving = False   # what GET /healthz on the metrics port says: the gRPC health of "" as a bool
        self._watcher: asyncio.Task | None = None
        self._stopping: asyncio.Task | None = None
        self._closed = asyncio.Event()
        self.drain_gate = DrainGate()

    # --- start-up
    async def start(self) -> None:
        await self.open()
        await self.warm_up()

    def _batcher_alive(self, alive: bool) -> None:
        """Health follows the batcher: NOT_SERVING from the moment its loop dies until the new one runs."""
        if self._stopping:
            return
        self.serving = alive
        for name in ("", *self.scoring_services):
            asyncio.ensure_future(self.health.set(name, SERVING if alive else NOT_SERVING))

    async def open(self) -> None:
        """Load the model and open the ports; health stays NOT_SERVING until warm_up()."""
        for warning in unknown_variables():
            log.warning("%s", warning)
        settings = self.settings
        try:
            self._model_path = resolve_model_path(settings.model)
            engine = await asyncio.get_running_loop().run_in_executor(None, Engine.from_settings, settings)
        except EngineError as exc:
            raise StartupError(str(exc)) from None
        self.scorer = Scorer(engine, settings, self.metrics)
        self.scorer.batcher.on_alive = self._batcher_alive
        credentials = _server_credentials(settings)

        interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(self.metrics), self.drain_gate]
        if settings.token is not None and settings.token.get_secret_value():
            interceptors.append(TokenAuthInterceptor(settings.token.get_secret_value()))
        self.error_boundary = ErrorBoundaryInterceptor()
        interceptors.append(self.error_boundary)   # innermost: its answers are metered and authorized
        limit = settings.max_message_mb * 1024 * 1024
        server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
            # gRPC's default SO_REUSEPORT lets a second server silently share the port: refuse instead
            ("grpc.so_reuseport", 0)])
        quality_pb2_grpc.add_QualityServiceServicer_to_server(QualityServicer(self.scorer), server)
        self.services = [SERVICE_NAME]
        try:
            from stedq.server.kserve import add_kserve_servicer
        except ImportError as exc:  # the KServe v2 servicer is optional until it lands
            log.warning("KServe v2 protocol not served: %s", exc)
        else:
            add_kserve_servicer(server, self.scorer, settings)
            self.services.append(KSERVE_SERVICE_NAME)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self.scoring_services = list(self.services)
        for name in ("", *self.scoring_services):
            await self.health.set(name, NOT_SERVING)
        self.services += [health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(self.services, server)

        address = _address(settings.host, settings.port)
        try:
            port = (server.add_secure_port(address, credentials) if credentials is not None
                    else server.add_insecure_port(address))
        except RuntimeError as exc:
            port = 0
            log.debug("bind failed: %s", exc)
        if not port:
            raise StartupError(f"cannot listen on {address} (port in use, or not an address of this host?)")
        try:
            self._http, self.metrics_port = self.metrics.serve_http(settings.bind_metrics_host, settings.metrics_port,
                                                                    healthy=lambda: self.serving)
        except OSError as exc:
            await server.stop(None)
            raise StartupError(f"cannot serve metrics on {_address(settings.bind_metrics_host, settings.metrics_port)}: "
                               f"{exc.strerror or exc} (choose another --metrics-port)") from None
        self.grpc_server, self.port = server, port
        await server.start()

    async def warm_up(self) -> None:
        """Warm the session up, score the built-in image, then report SERVING and say so."""
        scorer, settings = self.scorer, self.settings
        loop = asyncio.get_running_loop()
        seconds = await loop.run_in_executor(None, scorer.engine.warm_up, (1, settings.max_batch_size))
        await scorer.start()
        (result,) = await scorer.score([demo_image(scorer.model_info.input_height)])
        self.self_test_score = result.score
        scorer.statistics.clear()  # they count clients' requests; Triton's leave warm-up out too
        if not 0.0 <= result.score <= 1.0:  # NaN fails this too
            raise StartupError(f"self-test: {scorer.engine.info.path} scored the built-in image {result.score}, "
                               f"which is not a quality score in [0, 1]; is it a stedq QualityNet model?")
        for name in ("", *self.scoring_services):
            await self.health.set(name, SERVING)
        self.serving = True
        if settings.watch_model:
            self._watcher = asyncio.ensure_future(self._watch())
        info = scorer.model_info
        scheme = "grpcs" if settings.tls_cert else "grpc"
        log.info("stedq serving model %s %s (%s, %s) on %s://%s, metrics on http://%s/metrics; warm-up %.2f s, "
                 "self-test score of the built-in image %.4f. %s Settings: %s", info.name, info.version,
                 info.variant, info.providers[0], scheme, _address(settings.host, self.port),
                 _address(settings.bind_metrics_host, self.metrics_port), seconds, result.score,
                 _try_it_hint(settings.host, self.port), describe(settings))

    # --- model reload
    async def reload(self) -> bool:
        """Reload the configured model; True if the new one is in service."""
        try:
            info = await self.scorer.reload()
        except EngineError as exc:
            log.error("model reload failed, still serving %s %s: %s", self.scorer.model_info.name,
                      self.scorer.model_info.version, exc)
            return False
        log.info("model reloaded: now serving %s %s (%s, %s)", info.name, info.version, info.variant,
                 info.providers[0])
        return True

    async def _watch(self) -> None:
        interval = self.settings.watch_interval_s
        files = lambda: watched_files(self._model_path)  # noqa: E731  (re-listed: variants may appear)
        seen = _fingerprint(files())
        while True:
            await asyncio.sleep(interval)
            now = _fingerprint(files())
            if now == seen:
                continue
            await asyncio.sleep(interval)  # let a writer finish: reload once the files stop changing
            settled = _fingerprint(files())
            if settled != now:
                continue
            seen = settled
            log.info("model files changed in %s; reloading", self._model_path)
            await self.reload()

    # --- shutdown
    def stop(self, grace: float | None = None) -> asyncio.Task:
        """Begin draining (idempotent); await the returned task or wait_closed()."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._drain(self.settings.grace_period_s if grace is None else grace))
        return self._stopping

    async def _drain(self, grace: float) -> None:
        log.info("draining: health NOT_SERVING, refusing new requests, %.1f s for in-flight ones", grace)
        deadline = time.monotonic() + grace
        self.drain_gate.begin()   # new scoring RPCs: UNAVAILABLE from here on, while the port stays open
        self.serving = False
        await self.health.enter_graceful_shutdown()
        if self._watcher is not None:
            self._watcher.cancel()
        await self.drain_gate.wait_idle(deadline - time.monotonic())
        if self.grpc_server is not None:
            await self.grpc_server.stop(max(deadline - time.monotonic(), 0.0))
        if self.scorer is not None:
            await self.scorer.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        log.info("stopped")
        self._closed.set()

    @property
    def stopping(self) -> bool:
        return self._stopping is not None

    async def wait_closed(self) -> None:
        await self._closed.wait()


async def _serve(settings: Settings) -> int:
    server = StedqServer(settings)
    try:
        await server.start()
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        await server.stop(0)
        return 2
    loop = asyncio.get_running_loop()

    def on_stop_signal() -> None:
        if server.stopping and server.grpc_server is not None:  # asked twice: do not wait for the grace
            log.warning("second stop signal: cancelling in-flight requests now")
            loop.create_task(server.grpc_server.stop(0))
        server.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop_signal)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(server.reload()))
    await server.wait_closed()
    return 0


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT; the exit status (0 after a clean drain, 2 if it cannot start)."""
    return asyncio.run(_serve(settings))
