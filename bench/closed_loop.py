"""Closed-loop load: `concurrency` callers each send a request, wait for its answer, send the next.

A run warms up for `warmup_s` (not recorded), then measures for `duration_s`; callers stop starting
new calls after that, but at least `min_calls` calls are measured (a batch of 64 on a CPU takes about
half a second). Throughput counts the images of the calls that finished after the warm-up, over the
time from the end of the warm-up to the last of them; latency is each measured call's own duration.
"""

from __future__ import annotations

import asyncio
import statistics
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
        self.server: list[tuple[float, dict[str, float]]] = []   # (client latency s, server stages ms)

    def more(self) -> bool:
        now = time.perf_counter()
        if self.cpu_start is None and now >= self.measure_from:
            self.cpu_start = time.process_time()
        return now < self.measure_until or len(self.latencies) < self.min_calls

    def record(self, started: float, finished: float, images: int, server: dict[str, float] | None = None) -> None:
        """One call; `server`: the stages the server reported for it (stedq/timing.py), where it did."""
        if finished <= self.measure_from:
            return
        if started >= self.measure_from:
            self.latencies.append(finished - started)
            if server and "total" in server:
                self.server.append((finished - started, server))
        self.images += images
        self.last_done = max(self.last_done, finished)

    def result(self) -> dict:
        seconds = self.last_done - self.measure_from
        cpu = time.process_time() - (self.cpu_start if self.cpu_start is not None else time.process_time())
        return {"images_per_s": throughput(self.images, seconds), "images": self.images, "seconds": seconds,
                "calls": len(self.latencies), **latency_stats(self.latencies),
                "client_cpu_cores": cpu / seconds if seconds > 0 else float("nan"), **self.server_stages()}

    def server_stages(self) -> dict[str, float]:
        """Medians over the calls of each server stage, of the server's time outside inference, and of the
        time outside the server (client round trip minus the server's total: gRPC, HTTP/2, the client)."""
        if not self.server:
            return {}
        per_call = {f"server_{stage}_ms": [t.get(stage, 0.0) for _, t in self.server]
                    for stage in ("decode", "queue", "inference", "total")}
        per_call["server_outside_inference_ms"] = [t["total"] - t.get("inference", 0.0) for _, t in self.server]
        per_call["transport_ms"] = [1000 * latency - t["total"] for latency, t in self.server]
        return {name: statistics.median(values) for name, values in per_call.items()}


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
    """`concurrency` callers on this event loop; a call may return the server's timing of its answer."""
    recorder = Recorder(warmup_s, duration_s, min_calls)

    async def caller() -> None:
        while recorder.more():
            started = time.perf_counter()
            server = await call()
            recorder.record(started, time.perf_counter(), images_per_call,
                            server if isinstance(server, dict) else None)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return {**recorder.result(), "concurrency": concurrency}
