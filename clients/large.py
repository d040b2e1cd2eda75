"""Images too large for one request: scored as horizontal bands of whole tile rows, reassembled into the
image's quality map.

A request is limited by the gRPC message size and by the server's model inputs per request
(`ModelInfo.max_request_inputs`). A band starts at a tile origin of the full image (stedq.tiling), so
the server tiles each band exactly as it would tile the whole image: the bands' quality maps stacked
in order are the full image's map, and the image's score is the mean of all its tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stedq.clients.images import REQUEST_OVERHEAD_BYTES
from stedq.clients.results import ImageResult, QualityMap
from stedq.pixels import MODEL_INPUT_SIZE, to_wire_array
from stedq.tiling import tile_origins

DEFAULT_MAX_INPUTS = 64   # a server that does not say how many model inputs it takes per request


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int
    max_inputs: int           # model inputs (tiles) per request
    tile: int = MODEL_INPUT_SIZE
    stride: int = MODEL_INPUT_SIZE // 2

    @classmethod
    def of(cls, client, info) -> Limits:
        """From a connected client and its server's ModelInfo."""
        return cls(max_message_bytes=client.config.max_message_bytes,
                   max_inputs=info.max_request_inputs or DEFAULT_MAX_INPUTS,
                   tile=info.input_height or MODEL_INPUT_SIZE, stride=info.tile_stride or MODEL_INPUT_SIZE // 2)


def _origins(length: int, limits: Limits) -> list[int]:
    return tile_origins(length, limits.tile, limits.stride) if length > limits.tile else [0]


def needs_bands(shape: tuple[int, int], itemsize: int, limits: Limits) -> bool:
    height, width = shape
    inputs = len(_origins(height, limits)) * len(_origins(width, limits))
    return inputs > limits.max_inputs or height * width * itemsize > limits.max_message_bytes - REQUEST_OVERHEAD_BYTES


def plan_bands(shape: tuple[int, int], itemsize: int, limits: Limits) -> list[tuple[int, int]]:
    """(top, bottom) of each band: consecutive tile rows under both limits. ValueError when a single tile
    row is already over them (an image that wide cannot be scored in bands)."""
    height, width = shape
    rows, cols = _origins(height, limits), len(_origins(width, limits))
    budget = limits.max_message_bytes - REQUEST_OVERHEAD_BYTES
    one_row = min(limits.tile, height) * width * itemsize
    if cols > limits.max_inputs or one_row > budget:
        raise ValueError(f"image is {height}x{width}: one row of tiles ({cols} tiles, {one_row / 2**20:.1f} MiB) is "
                         f"over the server's limits ({limits.max_inputs} model inputs, "
                         f"{limits.max_message_bytes / 2**20:.0f} MiB per request); crop it")
    bands, first = [], 0
    for last in range(len(rows)):
        bottom = rows[last] + limits.tile
        too_many = (last - first + 1) * cols > limits.max_inputs
        too_big = (bottom - rows[first]) * width * itemsize > budget
        if too_many or too_big:
            bands.append((rows[first], rows[last - 1] + limits.tile))
            first = last
    bands.append((rows[first], min(rows[-1] + limits.tile, height)))
    return bands


def score_in_bands(client, image: np.ndarray, limits: Limits, *, intensity=None,
                   pixel_size_nm: float | None = None) -> ImageResult:
    """One large image through as many requests as the limits need; the result of the whole image."""
    wire = to_wire_array(image)
    maps, fits = [], {}
    for top, bottom in plan_bands(wire.shape, wire.itemsize, limits):
        [result] = client.score_images([wire[top:bottom]], intensity=[intensity], pixel_size_nm=[pixel_size_nm])
        maps.append(result.map.scores if result.map is not None else np.array([[result.score]], np.float32))
        fits.update(dict.fromkeys(result.fit))
    scores = np.vstack(maps).astype(np.float32)
    verdict = tuple(r for r in fits if r != "ok") or tuple(fits)   # a reason in any band is the image's
    return ImageResult(score=float(np.mean(scores)), map=QualityMap(scores=scores, tile_size=limits.tile,
                                                                     stride=limits.stride),
                       pixel_size_nm=pixel_size_nm, fit=verdict)
