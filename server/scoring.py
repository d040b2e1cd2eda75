"""The scorer: decoded images in, scores (and quality maps) out. Knows nothing about gRPC.

An image of exactly the model's input size (224x224) gets one score. A larger image is cut into
tiles by `stedq.tiling` (stride `tile_stride`); its score is the mean of its tile scores, and the
per-tile scores come back as a row-major quality map. A smaller image (from 64 px) is padded to the
input size by the same module; below 64 px it is refused (InvalidInput).

All tiles of all images of a request go through the dynamic batcher together, so a quality map
batches like any other request. `swap`/`reload` replace the engine atomically: a batch that already
started finishes on the old engine, the next one runs on the new.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stedq.engine import Engine, EngineError, EngineInfo
from stedq.fit import FitQuery, FitStatistics, fit_verdicts
from stedq.pixels import InvalidInput, check_image_size, demo_image
from stedq.server.admission import InFlightBytes, request_cost
from stedq.server.batching import DynamicBatcher
from stedq.server.metrics import Metrics
from stedq.server.statistics import InferenceStatistics
from stedq.settings import Settings
from stedq.tiling import cut_tiles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityMap:
    rows: int
    cols: int
    tile_size: int
    stride: int
    scores: list[float]        # rows * cols, row-major


@dataclass(frozen=True)
class ImageScore:
    score: float               # for a tiled image, the mean of its tile scores
    map: QualityMap | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    input_height: int
    input_width: int
    normalization_mean: list[float]
    normalization_std: list[float]
    providers: list[str]
    device: str
    variant: str
    max_batch_size: int
    tile_stride: int
    metadata: dict[str, str] = field(default_factory=dict)
    fit: FitStatistics | None = None   # the training images' ranges, for the fit verdict
    input_transform: str = "linear"    # applied in the graph before the normalization


STACK_ON_LOOP_TILES = 64
# Event-loop turns the fit check waits so that an idle server's batch is already in onnxruntime: the
# scoring task enqueues (1), the batcher's collector takes the batch and hands it to its thread (2).
FIT_CHECK_YIELDS = 3
FIT_ON_LOOP_PIXELS = 1 << 20   # above this (~16 images of 224², 5 ms of statistics) the verdicts go off the loop


def _stack(tiles: list[np.ndarray]) -> np.ndarray:
    """(N, 1, H, W) float32 model input. Without a copy where the tiles already are one: a single image of
    the input size, or every image of a request decoded into one buffer (stedq.pixels.model_input_buffer)."""
    if len(tiles) == 1 and tiles[0].dtype == np.float32:
        return tiles[0][None, None]
    whole = tiles[0].base
    if (isinstance(whole, np.ndarray) and whole.dtype == np.float32 and whole.ndim == 3 and len(whole) == len(tiles)
            and whole.shape[1:] == tiles[0].shape and whole.flags.c_contiguous
            and all(tile.base is whole and tile.ctypes.data == whole[i].ctypes.data for i, tile in enumerate(tiles))):
        return whole[:, None, :, :]
    return np.stack(tiles).astype(np.float32, copy=False)[:, None, :, :]


class Scorer:
    def __init__(self, engine: Engine, settings: Settings | None = None, metrics: Metrics | None = None):
        self.settings = settings or Settings()
        self.metrics = metrics
        self._engine = engine
        self.batcher = DynamicBatcher(
            self._infer, max_batch_size=self.settings.max_batch_size,
            max_queue_delay_s=self.settings.max_queue_delay_ms / 1000.0,
            max_queue_size=self.settings.max_queue_size, merge=self.settings.batching, metrics=metrics)
        self.in_flight = InFlightBytes(self.settings.max_inflight_mb * 1024 * 1024,
                                       metrics.in_flight_bytes if metrics is not None else None)
        self.statistics = InferenceStatistics()
        self.ready = False
        self._reload_lock = asyncio.Lock()
        self._publish_model()

    # --- the model
    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def model_info(self) -> ModelInfo:
        """Built once per model (every request reads it), again when a reload swaps the engine."""
        return self._model_info

    def _build_model_info(self) -> ModelInfo:
        info = self._engine.info
        metadata = dict(info.metadata)
        if info.note:
            metadata["device_note"] = info.note
        return ModelInfo(
            name=info.name, version=info.version, input_height=info.input_height,
            input_width=info.input_width, normalization_mean=list(info.mean),
            normalization_std=list(info.std), providers=list(info.providers), device=info.device,
            variant=info.variant, max_batch_size=self.settings.max_batch_size,
            tile_stride=self.settings.tile_stride, metadata=metadata, fit=info.fit,
            input_transform=info.transform)

    def admit(self, payload_bytes: int, shapes: list[tuple[int, int]]):
        """Context manager holding a request's estimated memory (server/admission.py) while it is decoded
        and scored; raises MemoryBoundExceeded when the in-flight bound would be passed."""
        info = self._engine.info
        return self.in_flight.hold(request_cost(payload_bytes, shapes, tile=max(info.input_height, info.input_width),
                                                stride=self.settings.tile_stride))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        engine = self._engine  # read once per batch: a swap affects the next batch only
        began = time.perf_counter()
        scores = engine.run(batch)
        self.statistics.record_batch(engine.info.version, len(batch), time.perf_counter() - began)
        return scores

    def swap(self, engine: Engine) -> EngineInfo:
        """Serve `engine` from the next batch on (a single reference assignment: atomic)."""
        old = self._engine.info
        new = engine.info
        if (new.input_height, new.input_width) != (old.input_height, old.input_width):
            raise EngineError(f"{new.path}: input size {new.input_height}x{new.input_width} differs from the "
                              f"served model's {old.input_height}x{old.input_width}; restart the server instead")
        self._engine = engine
        self._publish_model()
        return new

    async def reload(self, model: Path | None = None) -> EngineInfo:
        """Load the configured model again (or `model`) off the event loop, warm it up, swap it in.
        On failure the current model stays in service and EngineError is raised."""
        async with self._reload_lock:
            loop = asyncio.get_running_loop()

            def load() -> Engine:
                engine = Engine.from_settings(self.settings, model)
                engine.warm_up((1, self.settings.max_batch_size))
                info = engine.info
                score = float(engine.run(demo_image(info.input_height)[None, None])[0])
                if not 0.0 <= score <= 1.0:  # same self-test as at start-up
                    raise EngineError(f"self-test: {info.path} scored the built-in image {score}, which is "
                                      f"not a quality score in [0, 1]")
                return engine

            try:
                info = self.swap(await loop.run_in_executor(None, load))
            except EngineError as exc:
                if self.metrics is not None:
                    self.metrics.model_reloads.labels(result="failure").inc()
                raise exc
            if self.metrics is not None:
                self.metrics.model_reloads.labels(result="success").inc()
            return info

    def _publish_model(self) -> None:
        self._model_info = self._build_model_info()
        if self.metrics is not None:
            info = self._engine.info
            self.metrics.set_model(info.name, info.version, info.variant, info.providers[0], info.device)

    # --- lifecycle
    async def start(self) -> None:
        await self.batcher.start()
        self.ready = True

    async def close(self) -> None:
        """Finish queued work and stop; new score() calls fail with BatcherClosed."""
        self.ready = False
        await self.batcher.close()

    # --- scoring
    async def score(self, images: list[np.ndarray], *, deadline: float | None = None,
                    timing: dict | None = None) -> list[ImageScore]:
        """Score float32 (H, W) images in [0, 1]; `deadline` is a time.monotonic() value or None;
        `timing`, if given, gets the batcher's "queue" and "inference" seconds for this request.

        Raises InvalidInput, or the batcher's QueueFull / DeadlineExceeded / BatcherClosed /
        InferenceFailed."""
        version, began = self._engine.info.version, time.perf_counter()
        timing = {} if timing is None else timing
        try:
            results = await self._score(images, deadline, timing)
        except InvalidInput:
            raise  # the sender's mistake, not a failed inference: only stedq_requests_total counts it
        except BaseException:  # accepted but not scored: queue full, deadline, cancelled, inference failed
            self.statistics.record_request(version, False, time.perf_counter() - began, timing)
            raise
        elapsed = time.perf_counter() - began + timing.get("decode", 0.0)
        self.statistics.record_request(version, True, elapsed, timing)
        return results

    async def score_with_fits(self, images: list[np.ndarray], queries: list[FitQuery], *,
                              deadline: float | None = None,
                              timing: dict | None = None) -> tuple[list[ImageScore], list[list[str]]]:
        """score() and each image's fit verdict (stedq.fit). The verdicts (~0.1 ms an image) are computed
        on the event loop while the batch runs in onnxruntime's thread, not before it: they are not
        needed until the answer is built, so they cost a request no latency."""
        stats = self.model_info.fit

        async def verdicts() -> list[list[str]]:
            if sum(image.size for image in images) > FIT_ON_LOOP_PIXELS:  # big: keep the loop free meanwhile
                return await asyncio.get_running_loop().run_in_executor(None, fit_verdicts, images, queries, stats)
            for _ in range(FIT_CHECK_YIELDS):  # the scoring task submits, the batcher starts the batch
                await asyncio.sleep(0)
            return fit_verdicts(images, queries, stats)

        results, fits = await asyncio.gather(self.score(images, deadline=deadline, timing=timing), verdicts())
        return results, fits

    async def _score(self, images: list[np.ndarray], deadline: float | None, timing: dict) -> list[ImageScore]:
        if not images:
            raise InvalidInput("images: empty batch; send at least one image")
        info = self._engine.info
        tile_h, tile_w = info.input_height, info.input_width
        stride = self.settings.tile_stride
        tiles: list[np.ndarray] = []
        layouts: list[tuple[int, int] | None] = []   # (rows, cols) of a quality map, None for one tile
        for index, image in enumerate(images):
            if image.ndim != 2:
                raise InvalidInput(f"images[{index}]: expected an H×W image, got shape {image.shape}")
            check_image_size(*image.shape, field=f"images[{index}]")
            image_tiles, layout = cut_tiles(image, tile_h, tile_w, stride)
            tiles.extend(image_tiles)
            layouts.append(layout)
        limit = self.settings.max_queue_size
        if len(tiles) > limit:
            raise InvalidInput(f"images: the request needs {len(tiles)} model inputs ({len(images)} images, "
                               f"tiles of quality maps included), over the per-request limit of {limit} "
                               f"(--max-queue-size); split it into smaller requests")
        if len(tiles) <= STACK_ON_LOOP_TILES:
            batch = _stack(tiles)
        else:  # copying hundreds of tiles takes a while: keep the event loop free meanwhile
            batch = await asyncio.get_running_loop().run_in_executor(None, _stack, tiles)
        started = time.monotonic()
        scores = await self.batcher.submit(batch, deadline=deadline, timing=timing)
        log.debug("scored %d images (%d inputs) in %.1f ms", len(images), len(tiles),
                  (time.monotonic() - started) * 1000)
        results: list[ImageScore] = []
        offset = 0
        for layout in layouts:
            if layout is None:
                results.append(ImageScore(score=float(scores[offset])))
                offset += 1
                continue
            rows, cols = layout
            tile_scores = scores[offset:offset + rows * cols]
            offset += rows * cols
            results.append(ImageScore(score=float(np.mean(tile_scores)), map=QualityMap(
                rows=rows, cols=cols, tile_size=tile_h, stride=stride,
                scores=[float(s) for s in tile_scores])))
        if self.metrics is not None:
            self.metrics.images_scored.inc(len(images))
        return results
