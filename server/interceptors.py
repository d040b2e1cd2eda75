"""Server interceptors: request metrics for the scoring services, refusing them once draining begins,
bearer-token auth, and request bytes that do not parse answered INVALID_ARGUMENT (never UNKNOWN with a
traceback)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import inspect
import logging
import time
import uuid

import grpc

from stedq.server.metrics import Metrics

log = logging.getLogger(__name__)

# RPCs of these services are metered; health checks and reflection are not (a Watch stream lives for
# the whole connection and would sit in the in-flight gauge forever).
METERED_SERVICES = frozenset({"stedq.v1.QualityService", "inference.GRPCInferenceService"})
# Probes (kubelet, the container HEALTHCHECK) cannot send a token, so health needs none.
UNAUTHENTICATED_SERVICES = frozenset({"grpc.health.v1.Health"})

# What a servicer may raise on purpose: an abort (the status is already set) or a cancellation.
EXPECTED = (grpc.aio.AbortError, asyncio.CancelledError)
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


def _kind(handler: grpc.RpcMethodHandler) -> str:
    return f"{'stream' if handler.request_streaming else 'unary'}_{'stream' if handler.response_streaming else 'unary'}"


def _code_name(context: grpc.aio.ServicerContext, default: str) -> str:
    code = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code.name
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), default)


def _around(handler: grpc.RpcMethodHandler, scope) -> grpc.RpcMethodHandler:
    """`handler` with each call run inside `scope(context)`, an async context manager (unary or streamed
    responses alike): where an interceptor counts, times or refuses a call."""
    kind = _kind(handler)
    behavior = getattr(handler, kind)
    if handler.response_streaming:
        async def wrapped(request, context):
            async with scope(context):
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async for response in result:
                        yield response
                else:
                    await result
    else:
        async def wrapped(request, context):
            async with scope(context):
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
    return handler._replace(**{kind: wrapped})


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """stedq_requests_total{method, code}, stedq_request_duration_seconds{method} and the in-flight gauge."""

    def __init__(self, metrics: Metrics, services: frozenset[str] = METERED_SERVICES):
        self.metrics = metrics
        self.services = services

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        service, method = _split(handler_call_details.method)
        if handler is None or service not in self.services:
            return handler
        metrics = self.metrics

        @contextlib.asynccontextmanager
        async def metered(context):
            started, code = time.perf_counter(), None
            metrics.in_flight.inc()
            try:
                yield
                code = _code_name(context, "OK")
            except grpc.aio.AbortError:
                code = _code_name(context, "UNKNOWN")
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            finally:
                metrics.in_flight.dec()
                metrics.observe_request(method, code or "UNKNOWN", time.perf_counter() - started)

        return _around(handler, metered)


class DrainGate(grpc.aio.ServerInterceptor):
    """Once draining begins, scoring RPCs are refused UNAVAILABLE here, and the drain waits for the ones
    already admitted. Left to grpc's own stop(), a request arriving as the shutdown starts can be
    cancelled half-accepted (CANCELLED, which clients do not retry) instead of refused."""

    MESSAGE = "the server is shutting down; send the request to another replica or retry"

    def __init__(self, services: frozenset[str] = METERED_SERVICES):
        self.services = services
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """True once no admitted scoring RPC is left, False if `timeout` seconds pass first."""
        if self._idle.is_set():
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), max(timeout, 0.0))
            return True
        except TimeoutError:
            return False

    @contextlib.asynccontextmanager
    async def _admitted(self, context):
        if self.draining:   # checked when the call runs: every admitted call is counted, none slips by
            await context.abort(grpc.StatusCode.UNAVAILABLE, self.MESSAGE)
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        service, _ = _split(handler_call_details.method)
        if handler is None or service not in self.services:
            return handler
        return _around(handler, self._admitted)


class Undecodable:
    """What a guarded deserializer returns for bytes that are not a valid request message."""

    def __init__(self, type_name: str, error: Exception):
        self.message = f"the request is not a valid {type_name} message ({type(error).__name__}: {error})"


def _guarded(deserializer):
    """`deserializer` that returns Undecodable instead of raising (grpc.aio would answer UNKNOWN and log
    a traceback per request: a log flood any client can cause)."""
    owner = getattr(deserializer, "__self__", None)
    type_name = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "request")

    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError and whatever a custom deserializer raises
            return Undecodable(type_name, exc)
    return parse


class RateLimitedLog:
    """At most `burst` lines per `every_s` seconds; what is held back is counted (and, for failures, its
    latest 20 request ids listed) in the next line, so a hostile client cannot flood the log."""

    def __init__(self, what: str, every_s: float, burst: int, level: int):
        self.what, self.every_s, self.burst, self.level = what, every_s, burst, level
        self._window_start, self._lines, self._held = -float("inf"), 0, 0
        self._held_ids: collections.deque[str] = collections.deque(maxlen=20)

    def note(self, detail: str, request_id: str | None = None) -> bool:
        """Log `detail` unless this window's burst is spent; True when it was logged."""
        now = time.monotonic()
        if now - self._window_start >= self.every_s:
            self._window_start, self._lines = now, 0
        if self._lines >= self.burst:
            self._held += 1
            if request_id:
                self._held_ids.append(request_id)
            return False
        self._lines += 1
        more = ""
        if self._held:
            ids = f": request ids {', '.join(self._held_ids)}" if self._held_ids else ""
            more = f" ({self._held} more held back since the last line{ids})"
        log.log(self.level, "%s: %s%s", self.what, detail, more)
        self._held = 0
        self._held_ids.clear()
        return True


class ErrorBoundaryInterceptor(grpc.aio.ServerInterceptor):
    """The one place where what escapes a servicer becomes a status: every service's request bytes are
    parsed by a guarded deserializer (a request that does not parse gets INVALID_ARGUMENT naming its
    message type), and an unexpected exception becomes INTERNAL with a request id that also appears in
    one log line. Both are logged rate-limited (RateLimitedLog). UNKNOWN never leaves the server."""

    def __init__(self, log_every_s: float = 10.0, burst: int = 5):
        self.refusals = RateLimitedLog("refused a request that does not parse", log_every_s, burst, logging.WARNING)
        self.failures = RateLimitedLog("a request failed unexpectedly", log_every_s, burst, logging.ERROR)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        kind = _kind(handler)
        behavior = getattr(handler, kind)
        refusals, failures = self.refusals, self.failures
        method = handler_call_details.method

        async def refuse(context, request: Undecodable):
            refusals.note(f"{method}: {request.message}")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)

        async def internal(context, error: Exception):
            request_id = uuid.uuid4().hex[:12]
            failures.note(f"request {request_id} to {method}: {type(error).__name__}: {error}", request_id)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id}); the "
                                                          f"server log has the details")

        async def checked_stream(requests, context):
            async for request in requests:
                if isinstance(request, Undecodable):
                    await refuse(context, request)
                yield request

        async def checked(request, context):
            """The request as the servicer should see it: a checked stream, or refused if it did not parse."""
            if handler.request_streaming:
                return checked_stream(request, context)
            if isinstance(request, Undecodable):
                await refuse(context, request)
            return request

        if handler.response_streaming:
            async def guarded(request, context):
                try:
                    result = behavior(await checked(request, context), context)
                    if inspect.isasyncgen(result):
                        async for response in result:
                            yield response
                    else:
                        await result
                except EXPECTED:
                    raise
                except Exception as exc:  # noqa: BLE001 - the boundary: anything else is INTERNAL
                    await internal(context, exc)
        else:
            async def guarded(request, context):
                try:
                    result = behavior(await checked(request, context), context)
                    return await result if inspect.isawaitable(result) else result
                except EXPECTED:
                    raise
                except Exception as exc:  # noqa: BLE001 - the boundary: anything else is INTERNAL
                    await internal(context, exc)

        return handler._replace(request_deserializer=_guarded(handler.request_deserializer), **{kind: guarded})


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuse RPCs without `authorization: Bearer <token>` (UNAUTHENTICATED); health is exempt."""

    def __init__(self, token: str, exempt: frozenset[str] = UNAUTHENTICATED_SERVICES):
        if not token:
            raise ValueError("the token must not be empty")
        self._expected = f"Bearer {token}".encode()
        self.exempt = exempt

    async def intercept_service(self, continuation, handler_call_details):
        service, _ = _split(handler_call_details.method)
        if service in self.exempt:
            return await continuation(handler_call_details)
        sent = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                sent = value if isinstance(value, str) else value.decode(errors="replace")
        if hmac.compare_digest(sent.encode(), self._expected):
            return await continuation(handler_call_details)
        message = ("missing 'authorization' metadata: send 'authorization: Bearer <token>'" if not sent
                   else "invalid bearer token")
        handler = await continuation(handler_call_details)
        if handler is None:
            return None

        if handler.response_streaming:
            async def deny(request, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
                yield  # pragma: no cover  (makes this an async generator like the handler it replaces)
        else:
            async def deny(request, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        return handler._replace(**{_kind(handler): deny})
