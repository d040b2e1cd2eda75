"""Per-model-version inference statistics, as Triton reports them (KServe v2 `ModelStatistics`).

Transport-free: the scorer records every scoring request (success or failure, with its queue,
inference and total time) and every model execution (batch size and compute time); the KServe
servicer converts a snapshot to the protocol's message. Counts cover both APIs, since stedq.v1 and
KServe v2 requests share one batcher and one model. Durations are cumulative nanoseconds, as in
Triton, so a client computes means from two snapshots.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += max(0, round(seconds * 1e9))


@dataclass
class VersionStatistics:
    last_inference_ms: int = 0        # wall clock of the last execution, ms since the epoch
    inference_count: int = 0          # model inputs scored (batch elements, tiles included)
    execution_count: int = 0          # model executions (batches)
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)   # decoding the request's pixels
    compute_infer: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=lambda: defaultdict(Duration))


class InferenceStatistics:
    """Counters keyed by model version. Batches are recorded from the inference thread and requests
    from the event loop, hence the lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self._versions: dict[str, VersionStatistics] = {}

    def _for(self, version: str) -> VersionStatistics:
        return self._versions.setdefault(version, VersionStatistics())

    def record_batch(self, version: str, size: int, seconds: float) -> None:
        with self._lock:
            stats = self._for(version)
            stats.execution_count += 1
            stats.inference_count += size
            stats.last_inference_ms = int(time.time() * 1000)
            stats.batches[size].add(seconds)

    def record_request(self, version: str, ok: bool, seconds: float, timing: dict[str, float]) -> None:
        """One scoring request; `timing` holds the stage seconds stedq/timing.py names (decode, queue,
        inference) as far as the request got."""
        with self._lock:
            stats = self._for(version)
            if not ok:
                stats.fail.add(seconds)
                return
            stats.success.add(seconds)
            stats.queue.add(timing.get("queue", 0.0))
            stats.compute_input.add(timing.get("decode", 0.0))
            stats.compute_infer.add(timing.get("inference", 0.0))

    def clear(self) -> None:
        with self._lock:
            self._versions.clear()

    def snapshot(self) -> dict[str, VersionStatistics]:
        """A copy per version, in the order the versions were first served."""
        with self._lock:
            return copy.deepcopy(self._versions)
