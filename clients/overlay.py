"""Quality-map overlays as PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stedq.clients.results import QualityMap


def display_range(image: np.ndarray) -> tuple[float, float]:
    """0.5-99.5 percentile contrast, as image viewers do for microscopy counts."""
    low, high = np.percentile(image, [0.5, 99.5])
    return float(low), float(max(high, low + 1e-6))


def save_overlay(path: Path, image: np.ndarray, quality_map: QualityMap, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    height, width = image.shape
    per_pixel = quality_map.per_pixel(height, width)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 5.2), constrained_layout=True)
    low, high = display_range(image)
    left.imshow(image, cmap="gray", vmin=low, vmax=high)
    left.set_title("image")
    right.imshow(image, cmap="gray", vmin=low, vmax=high)
    shown = right.imshow(np.ma.masked_invalid(per_pixel), cmap="RdYlGn", vmin=0.0, vmax=1.0, alpha=0.45)
    rows, cols = quality_map.scores.shape
    if rows * cols <= 64:  # few tiles: print each tile's score at its centre
        for top, left_edge, bottom, right_edge, score in quality_map.tile_boxes(height, width):
            right.text((left_edge + right_edge) / 2, (top + bottom) / 2, f"{score:.2f}", ha="center", va="center",
                       fontsize=8, color="black",
                       bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.6, "lw": 0})
    right.set_title(f"quality map: {rows}×{cols} tiles of {quality_map.tile_size} px, "
                    f"stride {quality_map.stride}")
    for axis in (left, right):
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(shown, ax=right, shrink=0.85, label="quality score (tile mean per pixel)")
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
