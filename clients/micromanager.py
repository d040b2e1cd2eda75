"""Score every frame of a Micro-Manager acquisition (pymmcore-plus) as it arrives.

    from pymmcore_plus import CMMCorePlus
    from stedq.clients.micromanager import MDAScoring

    core = CMMCorePlus.instance(); core.loadSystemConfiguration()
    with MDAScoring(core, "scope-pc:50051", threshold=0.3, on_low="stop") as scoring:
        core.mda.run(scoring.events(my_sequence))      # or core.run_mda(...) on a thread
    print(scoring.table())                             # one row per frame: score, fit, model version

The acquisition never waits for the server: frames are scored on a worker thread (BackgroundScorer).
When a score arrives it is written into that frame's metadata dict under "stedq" (score, fit verdict,
model version; or status "missing" with the reason when the server was down, slow or refused the
frame) and kept in `frames`. Below `threshold` the adapter can stop the acquisition (`on_low="stop"`)
or acquire the frame's event again (`on_low="requeue"`, at most `max_requeue` times, when events come
from `events()`). Needs the optional extra: pip install 'stedq[micromanager]'.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from stedq.clients.background import BackgroundScorer, FrameScore
from stedq.clients.client import QualityClient

METADATA_KEY = "stedq"
ON_LOW = ("none", "stop", "requeue")


@dataclass
class ScoredFrame:
    index: dict[str, int]        # the event's position (t, p, c, z, ...)
    attempt: int                 # 0 for the first acquisition of the event, 1.. for re-queued ones
    result: FrameScore


class MDAScoring:
    """Connects to `core.mda.events`; use as a context manager (or call `disconnect()`)."""

    def __init__(self, core, client: QualityClient | str = "localhost:50051", *, threshold: float | None = None,
                 on_low: str = "none", max_requeue: int = 1, timeout: float = 2.0, max_pending: int = 64,
                 final_wait_s: float = 10.0):
        if on_low not in ON_LOW:
            raise ValueError(f"on_low must be one of {', '.join(ON_LOW)}, not {on_low!r}")
        if on_low != "none" and threshold is None:
            raise ValueError(f"on_low={on_low!r} needs a threshold")
        self.core, self.threshold, self.on_low = core, threshold, on_low
        self.max_requeue, self.final_wait_s = max_requeue, final_wait_s
        self.frames: list[ScoredFrame] = []
        self.stopped_by_score: FrameScore | None = None
        self._requeue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self.scorer = BackgroundScorer(client, timeout=timeout, max_pending=max_pending, on_result=self._on_result)
        core.mda.events.frameReady.connect(self._on_frame)

    # --- events in
    def _on_frame(self, image: np.ndarray, event, meta: dict | None = None) -> None:
        attempt = int((event.metadata or {}).get("stedq_attempt", 0))
        if meta is not None:
            meta[METADATA_KEY] = {"status": "pending"}
        size_um = (meta or {}).get("pixel_size_um") or self.core.getPixelSizeUm()
        self.scorer.submit((event, meta, attempt), image if image.ndim == 2 else image[..., 0],
                           pixel_size_nm=size_um * 1000.0 if size_um else None)

    def _on_result(self, result: FrameScore) -> None:
        event, meta, attempt = result.key
        if meta is not None:
            meta[METADATA_KEY] = result.as_metadata()
        with self._lock:
            self.frames.append(ScoredFrame(dict(event.index), attempt, result))
        if self.threshold is None or result.score is None or result.score >= self.threshold:
            return
        if self.on_low == "stop" and self.stopped_by_score is None:
            self.stopped_by_score = result
            self.core.mda.cancel()
        elif self.on_low == "requeue" and attempt < self.max_requeue:
            metadata = {**(event.metadata or {}), "stedq_attempt": attempt + 1}
            self._requeue.put(event.model_copy(update={"metadata": metadata}))

    # --- events out
    def events(self, sequence: Iterable) -> Iterator:
        """The sequence's events, with re-queued ones inserted as soon as their low score is known;
        after the last event, waits (up to `final_wait_s`) for the scores still out, to re-queue those too."""
        for event in sequence:
            yield event
            yield from self._drain()
        while self.on_low == "requeue":
            done = self.scorer.wait(self.final_wait_s)
            ready = list(self._drain())
            if not ready:
                break
            yield from ready
            if not done:
                break

    def _drain(self) -> Iterator:
        while True:
            try:
                yield self._requeue.get_nowait()
            except queue.Empty:
                return

    # --- results
    def wait(self, timeout: float | None = None) -> bool:
        """Until every frame acquired so far has its score (or is marked missing)."""
        return self.scorer.wait(timeout)

    def table(self) -> list[dict[str, Any]]:
        """One row per scored frame, in the order the scores arrived."""
        with self._lock:
            return [{**{f"index_{k}": v for k, v in frame.index.items()}, "attempt": frame.attempt,
                     **frame.result.as_metadata()} for frame in self.frames]

    def disconnect(self, timeout: float | None = None) -> None:
        """Wait for the scores still out (up to `timeout`, default final_wait_s), then detach."""
        self.scorer.close(self.final_wait_s if timeout is None else timeout)
        self.core.mda.events.frameReady.disconnect(self._on_frame)

    def __enter__(self) -> MDAScoring:
        return self

    def __exit__(self, *exc_info) -> None:
        self.disconnect()
