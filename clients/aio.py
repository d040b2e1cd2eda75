"""`AsyncQualityClient`: the asyncio twin of `QualityClient` (grpc.aio), same arguments and results.

    async with AsyncQualityClient("localhost:50051") as client:
        scores = await client.score(images)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stedq.clients.channel import RETRYABLE, SERVICE, ChannelConfig, backoff_delays, client_arguments
from stedq.clients.client import single_tile_map, stream_request, stream_result
from stedq.clients.errors import QualityError
from stedq.clients.images import (
    DEFAULT_MAX_MESSAGE_BYTES,
    split_by_size,
    to_messages,
)
from stedq.clients.results import ImageResult, QualityMap, StreamResult
from stedq.timing import timing_from
from stedq.v1 import quality_pb2 as pb
from stedq.v1 import quality_pb2_grpc as pb_grpc


class AsyncQualityClient:
    """See `QualityClient`: deadlines on every call, retries on UNAVAILABLE (and a stopping server's
    CANCELLED), `QualityError` on failure.
    Create it inside a running event loop (grpc.aio channels belong to the loop that made them)."""

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
        self.model_version = ""
        self.last_timing: dict[str, float] | None = None   # of the last Score answer (stedq/timing.py)
        self._channel = self.config.open(grpc.aio)
        self._stub = pb_grpc.QualityServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = self.config.metadata()
        self._rng = random.Random()

    @classmethod
    def from_settings(cls, settings, **kwargs) -> AsyncQualityClient:
        return cls(**client_arguments(settings), **kwargs)

    @property
    def target(self) -> str:
        return self.config.target

    async def _call(self, method, request, timeout: float | None = None, with_trailer: bool = False):
        """The answer (and with `with_trailer`, (answer, trailing metadata)), retried while RETRYABLE."""
        deadline = time.monotonic() + (timeout or self.timeout)
        delays = backoff_delays(self.retries, self.backoff_s, self.max_backoff_s, self._rng)
        while True:
            remaining = deadline - time.monotonic()
            try:
                call = method(request, timeout=max(remaining, 0.001), metadata=self._metadata)
                response = await call
                return (response, await call.trailing_metadata()) if with_trailer else response
            except grpc.RpcError as exc:
                error = QualityError.from_rpc_error(exc, self.target)
            delay = next(delays, None) if error.code in RETRYABLE else None
            if delay is None or time.monotonic() + delay >= deadline:
                raise error
            await asyncio.sleep(delay)

    async def score_images(self, images, *, timeout: float | None = None,
                     intensity=None, pixel_size_nm=None) -> list[ImageResult]:
        messages = to_messages(images, intensity, pixel_size_nm)
        results: list[ImageResult] = []
        for _, chunk in split_by_size(messages, self.config.max_message_bytes):
            response, trailer = await self._call(self._stub.Score, pb.ScoreRequest(
                images=chunk, client_id=self.client_id), timeout, with_trailer=True)
            if len(response.results) != len(chunk):
                raise QualityError(grpc.StatusCode.INTERNAL, f"server answered {len(response.results)} "
                                   f"results for {len(chunk)} images", target=self.target)
            self.last_timing = timing_from(trailer)
            results.extend(ImageResult.from_message(r, self.last_timing) for r in response.results)
            self.model_version = response.model_version
        return results

    async def score(self, images, *, timeout: float | None = None, intensity: str | None = None) -> np.ndarray:
        results = await self.score_images(images, timeout=timeout, intensity=intensity)
        return np.array([r.score for r in results], dtype=np.float32)

    async def score_map(self, image, *, timeout: float | None = None, intensity: str | None = None) -> QualityMap:
        [result] = await self.score_images([np.asarray(image)], timeout=timeout, intensity=intensity)
        return single_tile_map(result, image)

    async def stream(self, batches: Iterable | AsyncIterable, *, timeout: float | None = None,
                     raise_on_error: bool = True) -> AsyncIterator[StreamResult]:
        """Like `QualityClient.stream`; `batches` may be a plain or an async iterable."""
        failure: list[BaseException] = []

        async def requests():
            try:
                if isinstance(batches, AsyncIterable):
                    index = 0
                    async for batch in batches:
                        yield stream_request(index, batch, self.config.max_message_bytes)
                        index += 1
                else:
                    for index, batch in enumerate(batches):
                        yield stream_request(index, batch, self.config.max_message_bytes)
            except Exception as exc:  # end the stream cleanly, raise it after the answers
                failure.append(exc)

        call = self._stub.ScoreStream(requests(), timeout=timeout or self.stream_timeout,
                                      metadata=self._metadata)
        try:
            async for response in call:
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
            call.cancel()
        if failure:
            raise failure[0]

    async def model_info(self, *, timeout: float | None = None) -> pb.ModelInfo:
        return await self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last, pause = "no answer", 0.05
        while True:
            try:
                response = await self._health.Check(
                    health_pb2.HealthCheckRequest(service=SERVICE),
                    timeout=max(min(deadline - time.monotonic(), 2.0), 0.001), metadata=self._metadata)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = "health status " + health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.RpcError as exc:
                error = QualityError.from_rpc_error(exc, self.target)
                if error.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.UNIMPLEMENTED):
                    raise error from None
                last = str(error)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QualityError(grpc.StatusCode.UNAVAILABLE,
                                   f"server not ready after {timeout:g} s (last: {last})", target=self.target)
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 1.0)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncQualityClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
