"""Images as testers see them: a percentile contrast stretch, a colour map, a PNG.

STED images are mostly dark background with a few bright structures; a min-max rescale would let one
hot pixel wash the structures out, so the stretch clips at low/high percentiles (as ImageJ's "auto"
does). The PNG keeps the image's own pixels; the page enlarges it without smoothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_STRETCH = (0.5, 99.5)   # percentiles mapped to black and white
DEFAULT_CMAP = "gray"


def stretch(image: np.ndarray, low: float = DEFAULT_STRETCH[0], high: float = DEFAULT_STRETCH[1]) -> np.ndarray:
    """The image rescaled to [0, 1] between its `low` and `high` percentiles (clipped outside)."""
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"stretch percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {array.shape}")
    lo, hi = np.percentile(array, [low, high])
    if hi <= lo:                               # a flat image (or almost): show it mid-grey, not noise
        return np.full(array.shape, 0.5 if array.size else 0.0)
    return np.clip((array - lo) / (hi - lo), 0.0, 1.0)


def write_png(image: np.ndarray, path: Path, cmap: str = DEFAULT_CMAP,
              percentiles: tuple[float, float] = DEFAULT_STRETCH) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import colormaps
    from matplotlib.image import imsave

    if cmap not in colormaps:
        raise ValueError(f"unknown colour map {cmap!r} (try gray, hot, magma, inferno)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, stretch(image, *percentiles), cmap=cmap, vmin=0.0, vmax=1.0)
    return path
