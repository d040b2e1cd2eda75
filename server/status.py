"""Scorer/batcher/admission errors -> gRPC status codes, shared by the stedq.v1 and KServe v2 servicers."""

from __future__ import annotations

import time

import grpc

from stedq.pixels import InvalidInput
from stedq.server.admission import MemoryBoundExceeded
from stedq.server.batching import (
    BatcherClosed,
    BatcherRestarted,
    DeadlineExceeded,
    InferenceFailed,
    QueueFull,
)
from stedq.timing import TIMING_KEY, format_timing

_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (MemoryBoundExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (BatcherClosed, grpc.StatusCode.UNAVAILABLE),
    (BatcherRestarted, grpc.StatusCode.UNAVAILABLE),
    (InferenceFailed, grpc.StatusCode.INTERNAL),
]
SCORING_ERRORS = tuple(error for error, _ in _CODES)


def status_for(error: Exception) -> grpc.StatusCode:
    """The gRPC status of a scoring error (INTERNAL for anything unexpected)."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The RPC's deadline on the time.monotonic() clock (what Scorer.score takes), or None."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def send_timing(context: grpc.aio.ServicerContext, timing: dict[str, float], arrived: float) -> None:
    """Put the request's timing (stedq/timing.py) in the answer's trailing metadata; `timing` holds the
    seconds of decode, queue and inference; `arrived` is a time.perf_counter() value."""
    stages = {**timing, "total": time.perf_counter() - arrived}
    context.set_trailing_metadata(((TIMING_KEY, format_timing(stages)),))
