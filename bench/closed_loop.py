"""Closed-loop load: `concurrency` callers each send a request, wait for its answer, send the next.

A run warms up for `warmup_s` (not recorded), then measures for `duration_s`; callers stop starting
new calls after that, but at least `min_calls` calls are measured (a batch of 64 on a CPU takes about
half a second). Throughput counts the images of the calls that finished after the warm-up, over the
time from the end of the warm-up to the last of them; latency is each measured call's own duration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from stedq.bench.stats import latency_stats, throughput


class Recorder:
    def __init__(self, warmup_s: float, duration_s: float, min_calls: int):
        now = time.perf_counter()
        self.measure_from = now + warmup_s
        self.measure_until = self.measure_from + duration_s
        self.min_calls = min_calls
        self.latencies: list[float] = []
        self.images = 0
        self.last_done = self.measure_from
        self.cpu_start: float | None = None

    def more(self) -> bool:
        now = time.perf_counter()
        if self.cpu_start is None and now >= self.measure_from:
            self.cpu_start = time.process_time()
        return now < self.measure_until or len(self.latencies) < self.min_calls

    def record(self, started: float, finished: float, images: int) -> None:
        if finished <= self.measure_from:
            return
        if started >= self.measure_from:
            self.latencies.append(finished - started)
        self.images += images
        self.last_done = max(self.last_done, finished)

    def result(self) -> dict:
        seconds = self.last_done - self.measure_from
        cpu = time.process_time() - (self.cpu_start if self.cpu_start is not None else time.process_time())
        return {"images_per_s": throughput(self.images, seconds), "images": self.images, "seconds": seconds,
                "calls": len(self.latencies), **latency_stats(self.latencies),
                "client_cpu_cores": cpu / seconds if seconds > 0 else float("nan")}


def run_sync(call: Callable[[], object], images_per_call: int, *, duration_s: float, warmup_s: float,
             min_calls: int = 5) -> dict:
    """One caller in this thread (the in-process limit)."""
    recorder = Recorder(warmup_s, duration_s, min_calls)
    while recorder.more():
        started = time.perf_counter()
        call()
        recorder.record(started, time.perf_counter(), images_per_call)
    return recorder.result()


async def run_async(call: Callable[[], Awaitable[object]], images_per_call: int, *, concurrency: int,
                    duration_s: float, warmup_s: float, min_calls: int = 5) -> dict:
    """`concurrency` callers on this event loop."""
    recorder = Recorder(warmup_s, duration_s, min_calls)

    async def caller() -> None:
        while recorder.more():
            started = time.perf_counter()
            await call()
            recorder.record(started, time.perf_counter(), images_per_call)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return {**recorder.result(), "concurrency": concurrency}
