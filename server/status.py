"""Scorer/batcher errors -> gRPC status codes, shared by the stedq.v1 and KServe v2 servicers."""

from __future__ import annotations

import time

import grpc
import numpy as np

from stedq.pixels import InvalidInput
from stedq.server.batching import (
    BatcherClosed,
    BatcherRestarted,
    DeadlineExceeded,
    InferenceFailed,
    QueueFull,
)
from stedq.server.scoring import ImageScore, Scorer

_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
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


async def score_or_abort(scorer: Scorer, images: list[np.ndarray],
                         context: grpc.aio.ServicerContext) -> list[ImageScore]:
    """Score `images` with the RPC's deadline; a scoring error aborts the RPC with its status."""
    try:
        return await scorer.score(images, deadline=deadline_of(context))
    except SCORING_ERRORS as exc:
        await context.abort(status_for(exc), str(exc))
        raise  # unreachable: abort raises
