"""Scale and background of STED images, to compare simulated fields with real ones.

    python -m stedq.training.data.field_statistics data/synth6/actin --source synthetic-dense-network
    python -m stedq.training.data.field_statistics path/to/image.tif [...]

For each image: the autocorrelation half-width (px at which the mean-subtracted field's radially averaged
autocorrelation first falls to half its value at lag 1, so that pixel noise does not set it), and the
median pixel as a share of the bright signal (99th percentile). Image statistics only: no score.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def autocorrelation_half_width(image: np.ndarray) -> float:
    field = np.asarray(image, np.float64)
    field = field - field.mean()
    power = np.abs(np.fft.fft2(field, s=[2 * n for n in field.shape])) ** 2
    acf = np.fft.fftshift(np.real(np.fft.ifft2(power)))
    cy, cx = np.array(acf.shape) // 2
    y, x = np.indices(acf.shape)
    radius = np.hypot(y - cy, x - cx).round().astype(int)
    radial = np.bincount(radius.ravel(), acf.ravel()) / np.bincount(radius.ravel())
    below = np.nonzero(radial[1:] <= 0.5 * radial[1])[0]
    return float(below[0] + 1) if below.size else float("nan")


def background_share(image: np.ndarray) -> float:
    bright = float(np.percentile(image, 99))
    return float(np.median(image)) / bright if bright > 0 else float("nan")


def _images(paths: list[Path], source: str | None, max_pixel_nm: float | None, min_label: float):
    import tifffile

    for path in paths:
        if path.is_dir():
            for row in csv.DictReader(open(path / "labels.csv")):
                if source and row["source"] != source or row["class"] != "sted":
                    continue
                if max_pixel_nm and float(row["pixel_nm"]) > max_pixel_nm or float(row["label"]) < min_label:
                    continue
                yield row["file"], tifffile.imread(path / row["file"])
        else:
            yield path.name, tifffile.imread(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="images, or labelled folders (their STED class)")
    parser.add_argument("--source", help="only this labels.csv source (e.g. synthetic-network)")
    parser.add_argument("--max-pixel-nm", type=float, help="only images with pixels up to this size")
    parser.add_argument("--min-label", type=float, default=0.5, help="only images labelled at least this")
    args = parser.parse_args()
    rows = [(name, autocorrelation_half_width(img), background_share(img))
            for name, img in _images(args.paths, args.source, args.max_pixel_nm, args.min_label)]
    if not rows:
        raise SystemExit("no image matched")
    widths, shares = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    if len(rows) <= 10:
        for name, width, share in rows:
            print(f"{name}: half-width {width:.0f} px, median/p99 {share:.1%}")
    print(f"{len(rows)} images: half-width median {np.nanmedian(widths):.1f} px "
          f"(IQR {np.nanpercentile(widths, 25):.0f}-{np.nanpercentile(widths, 75):.0f}), "
          f"median/p99 median {np.nanmedian(shares):.1%} (IQR {np.nanpercentile(shares, 25):.1%}-"
          f"{np.nanpercentile(shares, 75):.1%})")


if __name__ == "__main__":
    main()
