"""Scoring that never holds up an acquisition: frames go to a worker thread, scores come back later.

The acquisition adapters (stedq.clients.micromanager, stedq.clients.imspector) hand each new frame to
`BackgroundScorer.submit`, which returns at once. A worker thread sends whatever frames are waiting
in one Score request (so it keeps up with a fast camera) and reports each frame's `FrameScore` to a
callback. When the server is down, slow or refuses a frame, the frame's score is *missing*, with the
reason; a score is never invented, and the acquisition never waits for one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from stedq.clients.client import QualityClient
from stedq.clients.errors import QualityError

log = logging.getLogger(__name__)

MAX_FRAMES_PER_REQUEST = 16
# the server could not answer at all: every frame of the request is missing, no retry one by one
SERVER_TROUBLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                  grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED}


@dataclass(frozen=True)
class FrameScore:
    key: Any                         # whatever the adapter identifies the frame by
    score: float | None              # None: missing (see `error`); never a guess
    fit: tuple[str, ...] = ()        # ("ok",) or why the frame lies outside the training data
    model_version: str = ""
    error: str = ""                  # why the score is missing; "" when scored
    seconds: float = 0.0             # from submit to answer

    @property
    def scored(self) -> bool:
        return self.score is not None

    def as_metadata(self) -> dict[str, Any]:
        """What the adapters store beside a frame (JSON-friendly)."""
        if self.score is None:
            return {"status": "missing", "error": self.error}
        return {"status": "scored", "score": round(self.score, 6), "fit": list(self.fit),
                "model_version": self.model_version, "seconds": round(self.seconds, 4)}


@dataclass
class _Frame:
    key: Any
    image: np.ndarray
    pixel_size_nm: float | None
    submitted: float = field(default_factory=time.monotonic)


class BackgroundScorer:
    """Score frames off the acquisition thread.

    `client`: a QualityClient, or a server address (then a client is made with no retries, so a server
    that is down costs one fast failure per request instead of a backoff). `timeout`: seconds one
    request may take before its frames are marked missing. `max_pending`: frames waiting beyond this
    are marked missing at once ("backlog full") instead of piling up behind a slow server.
    `on_result(FrameScore)` runs on the worker thread (for a frame refused because of the backlog, on
    the thread that submitted it); keep it short."""

    def __init__(self, client: QualityClient | str = "localhost:50051", *, timeout: float = 2.0,
                 max_pending: int = 64, on_result: Callable[[FrameScore], None] | None = None):
        self._own_client = isinstance(client, str)
        self.client = QualityClient(client, timeout=timeout, retries=0) if self._own_client else client
        self.timeout, self.max_pending = timeout, max_pending
        self.on_result = on_result
        self.results: list[FrameScore] = []
        self._inbox: queue.Queue[_Frame | None] = queue.Queue()
        self._outstanding = 0
        self._idle = threading.Condition()
        self._worker = threading.Thread(target=self._work, name="stedq-background-scorer", daemon=True)
        self._worker.start()

    # --- the acquisition side
    def submit(self, key: Any, image: np.ndarray, pixel_size_nm: float | None = None) -> None:
        """Queue one frame (a 2-D array); returns at once."""
        frame = _Frame(key, np.array(image, copy=True), pixel_size_nm)  # the camera may reuse its buffer
        with self._idle:
            self._outstanding += 1
            backlog = self._inbox.qsize() >= self.max_pending
        if backlog:
            self._report(FrameScore(key, None, error=f"scoring backlog full ({self.max_pending} frames waiting: "
                                                     f"the server is slower than the acquisition)"))
            return
        self._inbox.put(frame)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every submitted frame has its FrameScore; False if `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._outstanding == 0, timeout)

    @property
    def pending(self) -> int:
        with self._idle:
            return self._outstanding

    def close(self, timeout: float | None = 10.0) -> None:
        """Answer what is queued (or mark it missing), then stop the worker."""
        self.wait(timeout)
        self._inbox.put(None)
        self._worker.join(timeout)
        if self._own_client:
            self.client.close()

    def __enter__(self) -> BackgroundScorer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- the worker
    def _report(self, result: FrameScore) -> None:
        self.results.append(result)
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # an adapter's bug must not stop the scoring of later frames
                log.exception("on_result failed for frame %r", result.key)
        with self._idle:
            self._outstanding -= 1
            self._idle.notify_all()

    def _work(self) -> None:
        while (first := self._inbox.get()) is not None:
            frames = [first]
            while len(frames) < MAX_FRAMES_PER_REQUEST:
                try:
                    frame = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if frame is None:
                    self._inbox.put(None)  # stop after this batch
                    break
                frames.append(frame)
            for result in self._score(frames):
                self._report(result)

    def _score(self, frames: list[_Frame]) -> list[FrameScore]:
        sizes = [f.pixel_size_nm for f in frames]
        try:
            answers = self.client.score_images([f.image for f in frames], timeout=self.timeout,
                                               pixel_size_nm=sizes if any(sizes) else None)
        except (QualityError, ValueError) as exc:
            down = isinstance(exc, QualityError) and exc.code in SERVER_TROUBLE
            if len(frames) > 1 and not down:  # one frame's fault (too small, bad dtype): the rest alone
                return [result for frame in frames for result in self._score([frame])]
            reason = f"{exc.code.name}: {exc.details}" if isinstance(exc, QualityError) else str(exc)
            return [FrameScore(f.key, None, error=reason, seconds=time.monotonic() - f.submitted) for f in frames]
        version = self.client.model_version
        return [FrameScore(f.key, a.score, fit=a.fit, model_version=version, seconds=time.monotonic() - f.submitted)
                for f, a in zip(frames, answers, strict=True)]
