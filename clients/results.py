"""What the clients return: plain numpy-backed dataclasses instead of protobuf messages."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stedq.clients.errors import QualityError
from stedq.tiling import tile_origins as server_tile_origins
from stedq.v1 import quality_pb2 as pb


def tile_origins(length: int, tile: int, stride: int, count: int) -> list[int]:
    """Where the server put `count` tiles along an axis (stedq.tiling's rule); plain strides when a
    server with another rule sent a different count."""
    origins = server_tile_origins(length, tile, stride) if length >= tile else [0]
    if len(origins) != count:  # a server with another rule: fall back to plain strides
        origins = [i * stride for i in range(count)]
    return origins


@dataclass(frozen=True)
class QualityMap:
    """Per-tile scores of an image larger than the model input: `scores[r, c]` is the tile starting
    `stride` pixels after the previous one along each axis; the last tile of a row or column is
    placed flush with the image's edge."""

    scores: np.ndarray        # (rows, cols) float32
    tile_size: int
    stride: int

    @classmethod
    def from_message(cls, message: pb.QualityMap) -> QualityMap:
        scores = np.asarray(message.scores, dtype=np.float32).reshape(message.rows, message.cols)
        return cls(scores=scores, tile_size=message.tile_size, stride=message.stride)

    def tile_boxes(self, height: int, width: int) -> list[tuple[int, int, int, int, float]]:
        """(top, left, bottom, right, score) of every tile of an image of this size."""
        rows, cols = self.scores.shape
        tops = tile_origins(height, self.tile_size, self.stride, rows)
        lefts = tile_origins(width, self.tile_size, self.stride, cols)
        return [(top, left, top + self.tile_size, left + self.tile_size, float(self.scores[r, c]))
                for r, top in enumerate(tops) for c, left in enumerate(lefts)]

    def per_pixel(self, height: int, width: int) -> np.ndarray:
        """An (height, width) map: each pixel gets the mean score of the tiles covering it (NaN where
        no tile does), for overlays."""
        total = np.zeros((height, width), dtype=np.float64)
        count = np.zeros((height, width), dtype=np.int32)
        for top, left, bottom, right, score in self.tile_boxes(height, width):
            total[top:bottom, left:right] += score
            count[top:bottom, left:right] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class ImageResult:
    score: float
    map: QualityMap | None = None   # only for images larger than the model input
    pixel_size_nm: float | None = None   # as sent with the image (from its file), None when unknown
    fit: tuple[str, ...] = ()            # ("ok",) or why the image is outside the training data (stedq.fit)
    # Where its request's time went in the server, in ms (stedq/timing.py: decode, queue, inference,
    # total); shared by the images of one request; None from a server that does not send it.
    timing: dict[str, float] | None = None

    @classmethod
    def from_message(cls, message: pb.ImageScore, timing: dict[str, float] | None = None) -> ImageResult:
        quality_map = QualityMap.from_message(message.map) if message.HasField("map") else None
        return cls(score=float(message.score), map=quality_map, pixel_size_nm=message.pixel_size_nm or None,
                   fit=tuple(message.fit), timing=timing)


@dataclass(frozen=True)
class StreamResult:
    """The answer to one request of a stream; `error` is set (and `results` empty) when it failed."""

    request_id: str
    results: list[ImageResult] = field(default_factory=list)
    error: QualityError | None = None
    model_version: str = ""
    timing: dict[str, float] | None = None   # the server's stages in ms (stedq/timing.py); None if not sent

    @property
    def scores(self) -> np.ndarray:
        return np.array([r.score for r in self.results], dtype=np.float32)
