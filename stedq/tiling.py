"""How an image of any size from `stedq.pixels.MIN_IMAGE_SIZE` (64 px) up becomes model inputs; one
rule for the server, in-process scoring and the clients' quality-map overlays.

- An axis shorter than the model input (224) is padded to it by mirroring the image at its edges
  (numpy's "symmetric" mode, repeated as often as needed), the image centred. On the synthetic test
  set this ranks 160 / 100 / 64 px crops as their full images with Spearman 0.99 / 0.93 / 0.77
  (model 1.1.0; docs/server.md has the curve); constant, noise or wrap-around padding rank worse.
- An axis longer than the model input is cut into tiles whose origins step by `stride` pixels; when
  the steps do not end exactly at the border, one more tile is aligned to the right/bottom edge, so
  the tiles always cover the whole image (e.g. width 500, tile 224, stride 112: x = 0, 112, 224,
  276). The image's score is the mean of its tile scores; the per-tile scores form a row-major
  quality map.
"""

from __future__ import annotations

import numpy as np


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` with each axis shorter than (height, width) mirrored out to it, the image centred."""
    pad_y, pad_x = max(height - image.shape[0], 0), max(width - image.shape[1], 0)
    if not pad_y and not pad_x:
        return image
    return np.pad(image, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2)), mode="symmetric")



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
    """An (H, W) image of at least MIN_IMAGE_SIZE px -> its tiles and the (rows, cols) of its quality map,
    or None for an image that makes one model input (exactly one tile, or padded to one)."""
    image = pad_to(image, tile_height, tile_width)
    height, width = image.shape
    if (height, width) == (tile_height, tile_width):
        return [image], None
    ys, xs = tile_origins(height, tile_height, stride), tile_origins(width, tile_width, stride)
    return [image[y:y + tile_height, x:x + tile_width] for y in ys for x in xs], (len(ys), len(xs))
