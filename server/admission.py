"""Admission by memory: requests hold an estimate of their bytes from arrival to answer, and one that
would take the server past `--max-inflight-mb` is refused at once (RESOURCE_EXHAUSTED) instead of being
decoded. Knows nothing about gRPC: servicers say what a request carries, the scorer owns the bound.

A request's estimate: its pixel payload as received, its decoded float32 pixels, and the float32 model
inputs it becomes (one per image from 64 to 224 px, a tile per `stride` step for larger ones). Image
dimensions only count where the payload can hold them (a request claiming more pixels than it sends is
refused by the decoder, not here).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from stedq.tiling import tile_origins

MIB = 1 << 20


class MemoryBoundExceeded(Exception):
    """Admitting the request would pass the in-flight memory bound (RESOURCE_EXHAUSTED)."""


def model_inputs(height: int, width: int, tile: int, stride: int) -> int:
    """How many tile x tile model inputs an image of this size becomes (stedq.tiling)."""
    rows = len(tile_origins(height, tile, stride)) if height > tile else 1
    cols = len(tile_origins(width, tile, stride)) if width > tile else 1
    return rows * cols


def request_cost(payload_bytes: int, shapes: Iterable[tuple[int, int]], *, tile: int, stride: int) -> int:
    """Estimated bytes a request holds while it is decoded, tiled and scored."""
    cost = payload_bytes
    for height, width in shapes:
        if height <= 0 or width <= 0 or height * width > payload_bytes:
            continue   # not a real image: the decoder refuses it
        cost += 4 * height * width + 4 * tile * tile * model_inputs(height, width, tile, stride)
    return cost


class InFlightBytes:
    """The bound on bytes held by admitted requests (used from the event loop only: no lock)."""

    def __init__(self, limit_bytes: int, gauge=None):
        self.limit = int(limit_bytes)
        self.used = 0
        self.gauge = gauge   # a prometheus Gauge, or None

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        if nbytes > self.limit:
            raise MemoryBoundExceeded(
                f"the request needs about {nbytes / MIB:.0f} MiB in memory, more than the server's bound of "
                f"{self.limit / MIB:.0f} MiB for all requests in flight (--max-inflight-mb): send it in parts")
        if self.used + nbytes > self.limit:
            raise MemoryBoundExceeded(
                f"the server holds {self.used / MIB:.0f} MiB of requests in flight; this one needs about "
                f"{nbytes / MIB:.0f} MiB more than its bound of {self.limit / MIB:.0f} MiB allows "
                f"(--max-inflight-mb): retry shortly")
        self._add(nbytes)
        try:
            yield
        finally:
            self._add(-nbytes)

    def _add(self, nbytes: int) -> None:
        self.used += nbytes
        if self.gauge is not None:
            self.gauge.set(self.used)
