"""Rebuilds degraded/ from originals/: seeded physical degradations of five real STED images.

Run: python make_degraded.py   (needs numpy, scipy, tifffile). Output is deterministic.

Each original, read as photon counts (ImageJ's +32768 offset removed), gives:
  __base                 the counts as plain uint16
  __thin050/025/010      binomial thinning of every count: the same field with 50/25/10 % of the photons
                         (shorter dwell time or lower excitation)
  __blur15/30/50         Gaussian blur of sigma 1.5/3/5 px, then Poisson noise of the same photon budget
                         (lower resolution; sigma 5 px is about what a confocal image of the field looks like
                         at these 15-20 nm pixels)
  __shuffle              the same pixel values in random places: the photon histogram with no structure
  __crop064/100/160      centre crops of the base: regions of interest smaller than 224 px
"""
import os

import numpy as np
import tifffile
from scipy.ndimage import gaussian_filter

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "degraded")


def counts(path):
    with tifffile.TiffFile(path) as tif:
        a = tif.asarray().astype(np.int64)
        offset = (tif.imagej_metadata or {}).get("c0")
    if offset is not None:  # ImageJ calibration: value = c0 + c1 * stored
        a = a + int(offset)
    return np.clip(a, 0, None)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261204)
    for name in sorted(os.listdir(os.path.join(HERE, "originals"))):
        stem = os.path.splitext(name)[0]
        a = counts(os.path.join(HERE, "originals", name))
        out = {"base": a}
        for frac in (0.5, 0.25, 0.1):
            out[f"thin{int(frac * 100):03d}"] = rng.binomial(a, frac)
        for sigma in (1.5, 3.0, 5.0):
            out[f"blur{int(sigma * 10):02d}"] = rng.poisson(gaussian_filter(a.astype(np.float64), sigma))
        shuffled = a.ravel().copy()
        rng.shuffle(shuffled)
        out["shuffle"] = shuffled.reshape(a.shape)
        h, w = a.shape
        for size in (64, 100, 160):
            y, x = (h - size) // 2, (w - size) // 2
            out[f"crop{size:03d}"] = a[y:y + size, x:x + size]
        for kind, img in out.items():
            tifffile.imwrite(os.path.join(OUT, f"{stem}__{kind}.tif"), img.astype(np.uint16))
    print(f"wrote {len(os.listdir(OUT))} files to {OUT}")


if __name__ == "__main__":
    main()
