"""In-process scoring of image arrays with a model bundle: the same pixel rule (stedq.pixels), tiling
(stedq.tiling) and onnxruntime session (stedq.engine) as the server, without gRPC or batching.

For tools that score files where they are (`stedq evaluate --real`); needs the `serve` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stedq.engine import Engine
from stedq.pixels import Intensity, check_image_size, to_model_input
from stedq.settings import Settings
from stedq.tiling import cut_tiles


@dataclass(frozen=True)
class LocalScore:
    score: float                       # for a tiled image, the mean of its tile scores
    tile_scores: np.ndarray | None     # (rows, cols) for a tiled image, else None


class LocalScorer:
    """Scores (H, W) arrays of a wire dtype as a server with default settings would."""

    def __init__(self, model: Path | None = None, *, variant: str = "auto", threads: int = 0,
                 tile_stride: int | None = None, max_batch: int = 32):
        self.engine = Engine(model, device="cpu", variant=variant, intra_op_threads=threads)
        self.tile_stride = tile_stride or Settings.model_fields["tile_stride"].default
        self.max_batch = max_batch

    @property
    def info(self):
        return self.engine.info

    def score(self, pixels: np.ndarray, intensity: Intensity | str | None = None) -> LocalScore:
        """One image (`intensity` None: the dtype's default); InvalidInput (the server's message) when it
        cannot be scored."""
        info = self.engine.info
        check_image_size(*pixels.shape, field="image")
        image = to_model_input(pixels, intensity, field="image")
        tiles, layout = cut_tiles(image, info.input_height, info.input_width, self.tile_stride)
        batch = np.stack(tiles)[:, None]
        scores = np.concatenate([self.engine.run(batch[i:i + self.max_batch])
                                 for i in range(0, len(batch), self.max_batch)])
        if layout is None:
            return LocalScore(score=float(scores[0]), tile_scores=None)
        return LocalScore(score=float(np.mean(scores)), tile_scores=scores.reshape(layout))
