"""`stedq evaluate --crops DATA`: do small images rank as their full images do?

Each image of a labelled synthetic folder is scored whole and as centre crops of 64–223 px, through the
same in-process path as `stedq evaluate --real` (stedq.local: the server's padding and tiling). The
Spearman correlation between crop scores and full-image scores, per crop size, is the figure the
small-image targets are stated in (≥ 0.95 at 100 px, ≥ 0.85 at 64 px).

Beside it, where the folder's labels.csv records each label's inputs (`stedq data synth` does), the
same figure for the virtual expert itself judging the crop: its rule with the SNR and saturation
measured on the crop and everything else (resolution, bleaching, structure) taken from the full
acquisition, against its full-image label. That is what the crop's own photons allow a judge that sees
only the crop; a model cannot be expected to rank crops better than the rule that labels its data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SIZES = (64, 72, 80, 90, 100, 112, 128, 144, 160, 176, 192, 208, 223)
TARGETS = {100: 0.95, 64: 0.85}


def crop_curve(images: np.ndarray, score, sizes=SIZES, progress=lambda n: None) -> dict:
    """{size: Spearman of crop scores vs full scores}; `images` are model input, `score` one image -> score."""
    from scipy.stats import spearmanr

    full = np.array([score(image) for image in images])
    progress(1)
    curve = {}
    for size in sizes:
        top, left = (images.shape[1] - size) // 2, (images.shape[2] - size) // 2
        crops = np.array([score(image[top:top + size, left:left + size]) for image in images])
        curve[size] = float(spearmanr(crops, full)[0])
        progress(1)
    return curve


def rule_curve(counts: np.ndarray, components: np.ndarray, clean: np.ndarray, sizes=SIZES) -> dict:
    """{size: Spearman of the virtual expert on centre crops vs its full-image label}. `counts` (N, H, W)
    photon counts; `components` (N, 4) in LABEL_INPUTS order; `clean` the full images' clean labels."""
    from scipy.stats import spearmanr

    from stedq.training.data.label import expert_quality, image_saturation, image_snr

    curve = {}
    for size in sizes:
        top, left = (counts.shape[1] - size) // 2, (counts.shape[2] - size) // 2
        judged = []
        for image, (resolution_nm, loss, structure, _) in zip(counts, components, strict=True):
            crop = image[top:top + size, left:left + size]
            judged.append(expert_quality(resolution_nm, image_snr(crop)[0], loss, structure, image_saturation(crop)))
        curve[size] = float(spearmanr(judged, clean)[0])
    return curve


def write_curve(curve: dict, out: Path, meta: dict, rule: dict | None = None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    targets = {size: {"target": target, "spearman": curve.get(size), "met": curve.get(size, 0) >= target}
               for size, target in TARGETS.items()}
    figures = {**meta, "spearman_by_crop_size": {str(k): round(v, 4) for k, v in curve.items()},
               "targets": {str(k): v for k, v in targets.items()}}
    if rule:
        figures["label_rule_on_crop"] = {str(k): round(v, 4) for k, v in rule.items()}
    (out / "crops.json").write_text(json.dumps(figures, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(list(curve), list(curve.values()), "o-", label=f"model {meta['model']['version']}")
    if rule:
        ax.plot(list(rule), list(rule.values()), "--", color="grey",
                label="the label rule judging the crop (SNR measured on it)")
    for size, target in TARGETS.items():
        ax.plot([size], [target], "r_", ms=18, mew=2)
        ax.annotate(f"target ≥ {target}", (size, target), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set(xlabel="centre crop (px), padded to 224 by mirroring", ylabel="Spearman vs full-image score",
           ylim=(0.5, 1.0), title=f"small images rank as the full image ({meta['images']} synthetic images)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "crops.png", dpi=100)
    plt.close(fig)
    return figures
