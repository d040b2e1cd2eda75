"""What the pixel size does to a model trained at one pixel size, on synthetic images of many.

A bundle trained on `stedq data synth --pixel-nm 20` scores the test split of a set with drawn pixel
sizes (the default data 2.0; same --seed, so the same draws) twice: as stored, and each image first
resampled to the model's pixel size from its recorded one (photons conserved; what the server could do
with a request's `pixel_size_nm`). Per pixel size: Spearman and mean error against the labels, beside the
set's pixel-size-blind oracle (`stedq data ceiling`).

    python scripts/pixel_size_experiment.py --model runs/v20/bundle --data data/synth4/actin \
        --out runs/v20/pixel-size            # ~1 min on 2 cores: 200 images, twice
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile

from stedq.local import LocalScorer
from stedq.pixels import Intensity
from stedq.training.data.ceiling import label_ceiling
from stedq.training.data.loader import label_columns, load_labelled_folder
from stedq.training.metrics import regression_metrics
from stedq.training.train import split_indices


def resample_counts(counts: np.ndarray, from_nm: float, to_nm: float) -> np.ndarray:
    """Photon counts at `from_nm` pixels -> expected counts at `to_nm` pixels (bilinear, anti-aliased when
    shrinking; each new pixel gets the photons of the area it covers)."""
    from skimage.transform import rescale

    scale = from_nm / to_nm
    if scale == 1:
        return counts.astype(np.float32)
    resampled = rescale(counts.astype(np.float64), scale, order=1, anti_aliasing=scale < 1,
                        preserve_range=True, mode="reflect")
    return np.clip(resampled / scale**2, 0, None).astype(np.float32)


def figures(scores: np.ndarray, labels: np.ndarray, pixel_nm: np.ndarray) -> dict:
    out = {"all": {**_brief(scores, labels)}}
    for size in np.unique(pixel_nm):
        chosen = pixel_nm == size
        out[f"{size:g} nm"] = _brief(scores[chosen], labels[chosen])
    return out


def _brief(scores: np.ndarray, labels: np.ndarray) -> dict:
    m = regression_metrics(scores, labels)
    return {"n": m["n"], "spearman": m["spearman"], "rmse": m["rmse"],
            "bias": float(np.mean(scores - labels)) if len(scores) else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="bundle trained at one pixel size")
    parser.add_argument("--data", type=Path, required=True, help="synthetic folder with drawn pixel sizes")
    parser.add_argument("--model-pixel-nm", type=float, default=20.0)
    parser.add_argument("--split-seed", type=int, default=0, help="the training runs' split (default: 0)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    ds = load_labelled_folder(args.data, size=None)
    test = split_indices(len(ds.names), 0.1, 0.1, args.split_seed)["test"]
    names = [ds.names[i] for i in test]
    labels = np.asarray(ds.labels, np.float64)[test]
    pixel_nm = label_columns(args.data, names, ("pixel_nm",))[:, 0]
    scorer = LocalScorer(args.model)
    as_stored, resampled = [], []
    for i, size in zip(test, pixel_nm, strict=True):
        counts = tifffile.imread(ds.paths[i]).astype(np.float32)
        as_stored.append(scorer.score(counts, Intensity.COUNTS).score)
        resampled.append(scorer.score(resample_counts(counts, size, args.model_pixel_nm), Intensity.COUNTS).score)
    result = {"model": str(args.model), "data": str(args.data), "model_pixel_nm": args.model_pixel_nm,
              "ceiling": label_ceiling(args.data, names),
              "as_stored": figures(np.array(as_stored), labels, pixel_nm),
              "resampled": figures(np.array(resampled), labels, pixel_nm)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pixel_size.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| pixel size | n | as stored: Spearman, RMSE, bias | resampled to "
          f"{args.model_pixel_nm:g} nm: Spearman, RMSE, bias |\n|---|---|---|---|")
    for key in result["as_stored"]:
        a, r = result["as_stored"][key], result["resampled"][key]
        print(f"| {key} | {a['n']} | {_cell(a)} | {_cell(r)} |")


def _cell(m: dict) -> str:
    rho = "–" if m["spearman"] is None else f"{m['spearman']:.3f}"
    return f"{rho}, {m['rmse']:.3f}, {m['bias']:+.3f}"


if __name__ == "__main__":
    main()
