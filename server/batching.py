"""Dynamic batching of numpy arrays for any `infer(batch) -> results` callable (it knows no ONNX).

Requests queue their rows; one collector task takes rows from the front of the queue until it has
`max_batch_size` of them or `max_queue_delay_s` has passed since the first, runs `infer` in a worker
thread (so the event loop keeps serving), and hands each request its slice of the results. A request
that finds the collector idle (nothing queued, nothing computing) runs at once: with no other request in
sight, waiting for the batch to fill would only add the delay to its latency (an acquisition loop sends
one image at a time). Under load the queue is never empty when an inference ends, and batches linger
for `max_queue_delay_s` as usual. A large request is simply split across batches; a batch can hold the
tail of one request and the head of the next. Rows of a request whose deadline has passed are dropped
before compute (DeadlineExceeded); a full queue refuses new requests (QueueFull) instead of growing
without limit.

One inference runs at a time: on a CPU a single run already uses all intra-op threads, and while it
runs the next batch fills up, which is what makes batches form under load.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class BatcherError(Exception):
    """Base of the batcher's typed errors (the servicer maps each to a gRPC status)."""


class QueueFull(BatcherError):
    """The queue holds max_queue_size rows already (RESOURCE_EXHAUSTED)."""


class DeadlineExceeded(BatcherError):
    """The request's deadline passed before its rows were computed (DEADLINE_EXCEEDED)."""


class BatcherClosed(BatcherError):
    """The server is shutting down and accepts no new work (UNAVAILABLE)."""


class BatcherRestarted(BatcherError):
    """The collect loop died with this request queued; it was restarted, the request can be sent again."""


class InferenceFailed(BatcherError):
    """`infer` raised; every request in that batch gets this (INTERNAL)."""


class _Request:
    __slots__ = ("rows", "results", "next_row", "done_rows", "deadline", "enqueued", "future", "taken", "infer_s")

    def __init__(self, rows: np.ndarray, deadline: float | None, future: asyncio.Future):
        self.rows = rows
        self.results: np.ndarray | None = None
        self.next_row = 0          # first row not yet taken into a batch
        self.done_rows = 0
        self.deadline = deadline   # time.monotonic() seconds, or None
        self.enqueued = time.monotonic()
        self.future = future
        self.taken: float | None = None   # when its first rows went into a batch
        self.infer_s = 0.0                # inference time of the batches its rows were in

    @property
    def remaining(self) -> int:
        return len(self.rows) - self.next_row


class DynamicBatcher:
    def __init__(self, infer: Callable[[np.ndarray], np.ndarray], *, max_batch_size: int = 32,
                 max_queue_delay_s: float = 0.002, max_queue_size: int = 1024, merge: bool = True,
                 metrics: Any | None = None):
        """`infer` maps (N, ...) rows to (N, ...) results; `merge=False` runs each request on its own
        (still split at max_batch_size). `metrics` is a stedq.server.metrics.Metrics or None."""
        if max_batch_size < 1 or max_queue_size < 1:
            raise ValueError("max_batch_size and max_queue_size must be at least 1")
        self.infer = infer
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.merge = merge
        self.metrics = metrics
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stedq-infer")
        self._closing = False
        self.restarts = 0
        # Told False when the collect loop dies and True once a new one runs (the app's health follows).
        self.on_alive: Callable[[bool], Any] | None = None

    @property
    def queue_depth(self) -> int:
        return self._queued_rows

    async def start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._spawn()

    def _spawn(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="stedq-batcher")
        self._task.add_done_callback(self._supervise)

    def _supervise(self, task: asyncio.Task) -> None:
        """A collect loop that ended by itself is a bug: fail what waits on it at once (UNAVAILABLE,
        not a deadline later), say so, and start a new loop."""
        if task.cancelled() or self._closing or task is not self._task:
            return
        error = task.exception()
        log.error("the batcher's collect loop died (%s: %s); failing %d queued request(s) and restarting it",
                  type(error).__name__, error, len(self._queue))
        if self.on_alive is not None:
            self.on_alive(False)
        for request in [*self._running, *self._queue]:
            self._fail(request, BatcherRestarted("the server's batcher failed and was restarted; send the "
                                                 "request again"))
        self._busy = False
        self.restarts += 1
        self._spawn()
        if self.on_alive is not None:
            self.on_alive(True)

    async def submit(self, rows: np.ndarray, *, deadline: float | None = None,
                     timing: dict | None = None) -> np.ndarray:
        """Queue `rows` (N, ...) and wait for their (N,) results, in order. `timing`, if given, gets
        "queue" (enqueued to first rows batched) and "inference" (the runs its rows were in), in seconds."""
        if self._task is None:
            await self.start()
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        n = len(rows)
        if n == 0:
            return np.zeros((0,), np.float32)
        if self._queued_rows + n > self.max_queue_size:
            raise QueueFull(f"the queue is full ({self._queued_rows} images waiting, {n} more requested, "
                            f"limit {self.max_queue_size}); retry later")
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceeded("the deadline passed before the request was queued")
        request = _Request(rows, deadline, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        self._set_depth(self._queued_rows + n)
        self._wakeup.set()
        try:
            return await request.future
        except asyncio.CancelledError:  # the client went away: its rows not yet batched are skipped
            self._drop(request)
            raise
        finally:
            if timing is not None:
                timing["queue"] = (request.taken or time.monotonic()) - request.enqueued
                timing["inference"] = request.infer_s

    async def close(self) -> None:
        """Refuse new work, finish everything queued, then stop the collector."""
        self._closing = True
        while self._task is not None and (self._queue or self._busy):
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=True)

    # --- internals
    _busy = False
    _running: list = []   # requests of the batch being formed or run (failed too if the loop dies)

    def _set_depth(self, rows: int) -> None:
        self._queued_rows = rows
        if self.metrics is not None:
            self.metrics.queue_depth.set(rows)

    def _drop(self, request: _Request) -> None:
        if request.remaining and request in self._queue:
            self._queue.remove(request)
            self._set_depth(self._queued_rows - request.remaining)
            request.next_row = len(request.rows)

    def _fail(self, request: _Request, error: BaseException) -> None:
        self._drop(request)
        if not request.future.done():
            request.future.set_exception(error)

    async def _collect(self) -> None:
        idle = True   # nothing computing yet
        while True:
            if not self._queue:
                idle = True
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            self._busy = True  # from taking rows until their results are out (close() waits on it)
            try:
                parts = await self._form_batch(linger=not idle)
                self._running = [request for request, _, _ in parts]
                if parts:
                    await self._run(parts)
            finally:
                self._busy = False
            self._running = []
            idle = False  # work queued while this batch ran means load: the next batch lingers

    async def _form_batch(self, linger: bool = True) -> list[tuple[_Request, int, int]]:
        """Take up to max_batch_size rows from the queue front: [(request, start, stop), ...]; wait up to
        max_queue_delay_s for more only if `linger` (work was already queued: the server is loaded)."""
        parts: list[tuple[_Request, int, int]] = []
        size = 0
        started = time.monotonic()
        while size < self.max_batch_size:
            if not self._queue:
                wait = self.max_queue_delay_s - (time.monotonic() - started)
                if not self.merge or not linger or wait <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                except asyncio.TimeoutError:
                    break
                continue
            request = self._queue[0]
            now = time.monotonic()
            if request.future.done():  # cancelled meanwhile
                self._drop(request)
                continue
            if request.deadline is not None and request.deadline <= now:
                self._fail(request, DeadlineExceeded(
                    f"the deadline passed after {now - request.enqueued:.3f} s in the queue, before compute"))
                continue
            if not self.merge and parts and parts[-1][0] is not request:
                break
            take = min(request.remaining, self.max_batch_size - size)
            if request.taken is None:
                request.taken = now
            parts.append((request, request.next_row, request.next_row + take))
            request.next_row += take
            size += take
            self._set_depth(self._queued_rows - take)
            if self.metrics is not None:
                self.metrics.queue_wait.observe(now - request.enqueued)
            if request.remaining == 0:
                self._queue.popleft()
            if not self.merge and request.remaining == 0:
                break
        return parts

    async def _run(self, parts: list[tuple[_Request, int, int]]) -> None:
        if len(parts) == 1:  # one request's rows (the usual case when idle): a view, no copy
            request, start, stop = parts[0]
            batch = request.rows[start:stop]
        else:
            batch = np.concatenate([request.rows[start:stop] for request, start, stop in parts])
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.infer, batch)
        except Exception as exc:
            log.exception("inference failed on a batch of %d", len(batch))
            for request, _, _ in parts:
                self._fail(request, InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}"))
            return
        took = time.perf_counter() - began
        if self.metrics is not None:
            self.metrics.inference_duration.observe(took)
            self.metrics.batch_size.observe(len(batch))
        offset = 0
        for request, start, stop in parts:
            request.infer_s += took
            chunk = results[offset:offset + stop - start]
            offset += stop - start
            if request.future.done():
                continue
            if request.results is None:
                request.results = np.empty((len(request.rows),) + chunk.shape[1:], chunk.dtype)
            request.results[start:stop] = chunk
            request.done_rows += stop - start
            if request.done_rows == len(request.rows):
                request.future.set_result(request.results)
