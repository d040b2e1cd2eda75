"""`QualityClient`: score numpy images against a stedq server (synchronous; see aio.py for asyncio).

    from stedq.clients import QualityClient
    with QualityClient("localhost:50051") as client:
        scores = client.score(images)      # one H×W array, an N×H×W stack or a list -> float32 (N,)
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stedq.clients.channel import RETRYABLE, SERVICE, ChannelConfig, backoff_delays, client_arguments
from stedq.clients.errors import QualityError
from stedq.clients.images import (
    DEFAULT_MAX_MESSAGE_BYTES,
    split_by_size,
    to_messages,
)
from stedq.clients.results import ImageResult, QualityMap, StreamResult
from stedq.timing import parse_timing, timing_from
from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc


def stream_request(index: int, batch, max_message_bytes: int) -> pb.ScoreStreamRequest:
    """One stream message: its request_id is the batch's position in the stream."""
    try:
        messages = to_messages(batch)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"stream request {index}: {exc}") from None
    chunks = list(split_by_size(messages, max_message_bytes))
    if len(chunks) > 1:
        raise ValueError(f"stream request {index}: {len(messages)} images exceed the "
                         f"{max_message_bytes / 2**20:.0f} MiB message limit; send fewer per request")
    return pb.ScoreStreamRequest(request_id=str(index), images=messages)


def stream_result(response: pb.ScoreStreamResponse, target: str) -> StreamResult:
    error = None
    if response.HasField("error") and response.error.code != 0:
        error = QualityError.from_status(response.error.code, response.error.message, target)
    timing = parse_timing(response.timing_ms) if response.timing_ms else None
    return StreamResult(request_id=response.request_id,
                        results=[ImageResult.from_message(r, timing) for r in response.results],
                        error=error, model_version=response.model_version, timing=timing)


def single_tile_map(result: ImageResult, image) -> QualityMap:
    """The map of an image of exactly the model's input size: one tile, its score."""
    if result.map is not None:
        return result.map
    height = np.asarray(image).shape[0]
    return QualityMap(scores=np.array([[result.score]], dtype=np.float32), tile_size=height, stride=height)


class QualityClient:
    """A connection to one stedq server. Every call has a deadline (`timeout` seconds, retries
    included); calls that could not reach the server (UNAVAILABLE), or that a stopping server cancelled
    (CANCELLED), are retried with backoff; every failure is raised as `QualityError` carrying the gRPC code and the server's message."""

    def __init__(self, target: str = "localhost:50051", *, tls: bool | str | Path | bytes = False,
                 token: str | None = None, timeout: float = 30.0, retries: int = 5,
                 backoff_s: float = 0.2, max_backoff_s: float = 5.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, client_id: str = "",
                 client_cert: str | Path | bytes | None = None, client_key: str | Path | bytes | None = None,
                 tls_server_name: str | None = None, stream_timeout: float = 3600.0):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.config = ChannelConfig(target=target, tls=tls, token=token, client_cert=client_cert,
                                    client_key=client_key, tls_server_name=tls_server_name,
                                    max_message_bytes=max_message_bytes)
        self.timeout, self.retries, self.client_id = timeout, retries, client_id
        self.backoff_s, self.max_backoff_s, self.stream_timeout = backoff_s, max_backoff_s, stream_timeout
        self.model_version = ""   # of the last answer
        self.last_timing: dict[str, float] | None = None   # of the last Score answer (stedq/timing.py)
        self._channel = self.config.open(grpc)
        self._stub = pb_grpc.QualityServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = self.config.metadata()
        self._rng = random.Random()

    @classmethod
    def from_settings(cls, settings, **kwargs) -> QualityClient:
        """From `stedq.settings.Settings` (server, tls_cert, token, timeout_s)."""
        return cls(**client_arguments(settings), **kwargs)

    @property
    def target(self) -> str:
        return self.config.target

    # --- calls

    def _call(self, method, request, timeout: float | None = None):
        """One unary call under one deadline, retried while RETRYABLE (UNAVAILABLE, a stopping server's CANCELLED)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        delays = backoff_delays(self.retries, self.backoff_s, self.max_backoff_s, self._rng)
        while True:
            remaining = deadline - time.monotonic()
            try:
                return method(request, timeout=max(remaining, 0.001), metadata=self._metadata)
            except grpc.RpcError as exc:
                error = QualityError.from_rpc_error(exc, self.target)
            delay = next(delays, None) if error.code in RETRYABLE else None
            if delay is None or time.monotonic() + delay >= deadline:
                raise error
            time.sleep(delay)

    def score_images(self, images, *, timeout: float | None = None,
                     intensity=None, pixel_size_nm=None) -> list[ImageResult]:
        """Scores and (for images larger than the model input) quality maps, in input order."""
        messages = to_messages(images, intensity, pixel_size_nm)
        results: list[ImageResult] = []
        for _, chunk in split_by_size(messages, self.config.max_message_bytes):
            response, call = self._call(self._stub.Score.with_call,
                                        pb.ScoreRequest(images=chunk, client_id=self.client_id), timeout)
            if len(response.results) != len(chunk):
                raise QualityError(grpc.StatusCode.INTERNAL, f"server answered {len(response.results)} "
                                   f"results for {len(chunk)} images", target=self.target)
            self.last_timing = timing_from(call.trailing_metadata())
            results.extend(ImageResult.from_message(r, self.last_timing) for r in response.results)
            self.model_version = response.model_version
        return results

    def score(self, images, *, timeout: float | None = None, intensity: str | None = None) -> np.ndarray:
        """One H×W array, an N×H×W stack or a list of H×W arrays -> float32 array of N scores in [0, 1],
        in order. Integer pixels are photon counts (uint8 … uint32, int16; wider ints narrowed); float
        pixels are on the model's scale (counts / 65535) unless `intensity="counts"`. Batches over the
        message limit are split."""
        return np.array([r.score for r in self.score_images(images, timeout=timeout, intensity=intensity)], dtype=np.float32)

    def score_map(self, image, *, timeout: float | None = None, intensity: str | None = None) -> QualityMap:
        """The per-tile quality map of one image (one tile for an image of the model's input size)."""
        [result] = self.score_images([np.asarray(image)], timeout=timeout, intensity=intensity)
        return single_tile_map(result, image)

    def stream(self, batches: Iterable, *, timeout: float | None = None,
               raise_on_error: bool = True) -> Iterator[StreamResult]:
        """Score batches as they come (e.g. from an acquisition loop) over one ScoreStream call.

        Each item of `batches` (an image, a stack or a list) becomes one request whose request_id is
        its position ("0", "1", ...); results are yielded as the server answers them. A request the
        server rejects raises QualityError, or with raise_on_error=False is yielded with `.error`
        set, and the stream goes on. The whole stream has one deadline (default `stream_timeout`)."""
        failure: list[BaseException] = []
        done = threading.Event()

        def requests():
            try:
                for index, batch in enumerate(batches):
                    if done.is_set():
                        return
                    yield stream_request(index, batch, self.config.max_message_bytes)
            except Exception as exc:  # e.g. a bad image: end the stream cleanly, raise it after the answers
                failure.append(exc)

        call = self._stub.ScoreStream(requests(), timeout=timeout or self.stream_timeout,
                                      metadata=self._metadata)
        try:
            for response in call:
                result = stream_result(response, self.target)
                if result.error is not None and raise_on_error:
                    raise result.error
                self.model_version = result.model_version or self.model_version
                yield result
        except grpc.RpcError as exc:
            if failure:
                raise failure[0] from None
            raise QualityError.from_rpc_error(exc, self.target) from None
        finally:
            done.set()
            call.cancel()
        if failure:
            raise failure[0]

    def model_info(self, *, timeout: float | None = None) -> pb.ModelInfo:
        """The served model: name, version, input size, normalization, providers, limits, metadata."""
        return self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server's health check says SERVING; QualityError (UNAVAILABLE) after timeout."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        for service in _poll(deadline):
            try:
                response = self._health.Check(health_pb2.HealthCheckRequest(service=service),
                                              timeout=max(min(deadline - time.monotonic(), 2.0), 0.001),
                                              metadata=self._metadata)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = "health status " + health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.RpcError as exc:
                error = QualityError.from_rpc_error(exc, self.target)
                if error.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.UNIMPLEMENTED):
                    raise error from None
                last = str(error)
        raise QualityError(grpc.StatusCode.UNAVAILABLE,
                           f"server not ready after {timeout:g} s (last: {last})", target=self.target)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> QualityClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _poll(deadline: float):
    """Health-check rounds until the deadline: the QualityService's own status, with short pauses."""
    pause = 0.05
    while True:
        yield SERVICE
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 1.0)
