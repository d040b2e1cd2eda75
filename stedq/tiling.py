"""How an image larger than the model input is cut into tiles; one rule for the server, in-process
scoring and the clients' quality-map overlays.

Tile origins step by `stride` pixels along each axis; when the steps do not end exactly at the
border, one more tile is aligned to the right/bottom edge, so the tiles always cover the whole image
(e.g. width 500, tile 224, stride 112: x = 0, 112, 224, 276). The image's score is the mean of its
tile scores; the per-tile scores form a row-major quality map.
"""

from __future__ import annotations

import numpy as np


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Tile start positions covering [0, length): every `stride` px, plus one tile flush with the end."""
    if length < tile:
        raise ValueError(f"length {length} is smaller than the tile {tile}")
    origins = list(range(0, length - tile + 1, stride))
    if origins[-1] + tile < length:
        origins.append(length - tile)
    return origins


def cut_tiles(image: np.ndarray, tile_height: int, tile_width: int,
              stride: int) -> tuple[list[np.ndarray], tuple[int, int] | None]:
    """An (H, W) image at least one tile large -> its tiles (views) and the (rows, cols) of its quality
    map, or None for an image of exactly one tile."""
    height, width = image.shape
    if (height, width) == (tile_height, tile_width):
        return [image], None
    ys, xs = tile_origins(height, tile_height, stride), tile_origins(width, tile_width, stride)
    return [image[y:y + tile_height, x:x + tile_width] for y in ys for x in xs], (len(ys), len(xs))
