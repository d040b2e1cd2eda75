"""The pixel contract's shared table of files: the real-dev originals (ImageJ-offset uint16, int16) beside
their plain counts, and one set of counts stored every way a lab stores them. Every client (stedq score,
the Python clients, KServe v2, the Node client) must give identical scores for identical counts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import tifffile

from tests.conftest import REPO_ROOT

REAL_DEV = REPO_ROOT / "validation" / "real-dev"
COUNTS_SOURCE = REAL_DEV / "degraded" / "axon_actin_2__thin050.tif"   # counts 0..58: fit every dtype


def table_counts() -> np.ndarray:
    return tifffile.imread(COUNTS_SOURCE).astype(np.int64)


def write_table(folder: Path) -> dict[str, list[str]]:
    """Write the table into `folder`; returns groups of file names that hold the same counts."""
    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[str]] = {}
    for original in sorted((REAL_DEV / "originals").glob("*.tif")):
        shutil.copy(original, folder / original.name)
        base = f"{original.stem}__base.tif"
        shutil.copy(REAL_DEV / "degraded" / base, folder / base)
        groups[original.stem] = [original.name, base]
    counts = table_counts()
    same = []
    for dtype in ("uint8", "uint16", "int16", "uint32", "float32"):
        tifffile.imwrite(folder / f"counts_{dtype}.tif", counts.astype(dtype))
        same.append(f"counts_{dtype}.tif")
    tifffile.imwrite(folder / "counts_ome.ome.tif", counts.astype(np.uint16), ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.02, "PhysicalSizeY": 0.02})
    tifffile.imwrite(folder / "counts_imagej_offset.tif", (counts + 32768).astype(np.uint16), imagej=True,
                     metadata={"cf": 0, "c0": -32768.0, "c1": 1.0, "vunit": "Gray Value"})
    groups["counts"] = same + ["counts_ome.ome.tif", "counts_imagej_offset.tif"]
    return groups
