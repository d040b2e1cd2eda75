"""Rebuild samples/ from a trained run and its dataset: 8 images of the run's held-out test split and 4
of the unseen tubulin set, spread over the label range, as zlib-compressed TIFFs with their labels.csv rows.

    .venv/bin/python scripts/make_samples.py --run runs/v3 --data data/synth3 --out samples

The actin picks are STED acquisitions at evenly spaced label ranks plus one near-0 image of another class
(shuffled, empty, confocal, out of focus or saturated), so `stedq score samples/` shows the whole scale.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import tifffile

NEAR_ZERO = ("shuffled", "out_of_focus", "saturated", "confocal", "empty")


def _rows(folder: Path) -> dict[str, dict]:
    with open(folder / "labels.csv", newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


def _spread(rows: list[dict], n: int) -> list[dict]:
    ranked = sorted(rows, key=lambda r: float(r["label"]))
    return [ranked[int(i)] for i in np.linspace(0, len(ranked) - 1, n).round()]


def pick(run: Path, data: Path) -> list[tuple[Path, dict]]:
    test = {name.rsplit("-", 1)[0] for name in json.loads((run / "split.json").read_text())["test"]}
    actin = [row for name, row in _rows(data / "actin").items() if name in test]
    sted = [r for r in actin if r["class"] == "sted"]
    near_zero = sorted((r for r in actin if r["class"] in NEAR_ZERO), key=lambda r: (NEAR_ZERO.index(r["class"]),
                                                                                   r["name"]))[:1]
    chosen = [(data / "actin", r) for r in _spread(sted, 7) + near_zero]
    tubulin = [r for r in _rows(data / "tubulin").values() if r["class"] == "sted"]
    return chosen + [(data / "tubulin", r) for r in _spread(tubulin, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="training run folder (split.json)")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with actin/ and tubulin/")
    parser.add_argument("--out", type=Path, default=Path("samples"))
    args = parser.parse_args()
    chosen = pick(args.run, args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.tiff"):
        old.unlink()
    fields = list(chosen[0][1])
    with open(args.out / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for folder, row in chosen:
            image = tifffile.imread(folder / row["file"])
            tifffile.imwrite(args.out / row["file"], image, photometric="minisblack", compression="zlib",
                             metadata=None)
            writer.writerow(row)
    print(f"wrote {len(chosen)} samples to {args.out}: " +
          ", ".join(f"{row['name']} ({row['class']}, {float(row['label']):.2f})" for _, row in chosen))


if __name__ == "__main__":
    main()
