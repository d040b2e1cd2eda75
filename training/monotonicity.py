"""Does the score fall when only one acquisition parameter worsens? (simulated microscope, known physics)

For several simulated samples, each axis images the *same* sample (same seed) at worsening settings:
  depletion  STED power 80 -> 40 -> 20 -> 10 -> 0 mW (confocal), dwell and excitation fixed, no bleaching
  dwell      pixel dwell 80 -> 40 -> 20 -> 10 -> 5 µs (fewer photons: lower SNR), no bleaching
  bleaching  the same field imaged again and again at high power (each scan bleaches the next one),
             plus bleaching switched off vs on for one scan
The network's mean score over samples should decrease along each axis (no step up by more than
STEP_TOLERANCE, and at least MIN_DROP from best to worst); we report the per-sample share that does
too, and the virtual expert's clean label as the reference, beside the part of it the image shows: the
label without its fading term (a uniformly faded field looks like a more dimly labelled one, so an
image-only model sees the fading only as lost photons, through the SNR term; stedq.training.data.ceiling).
"""

from __future__ import annotations

import numpy as np

BASE = {"dwell_time_us": 40.0, "p_ex_uw": 10.0, "p_sted_mw": 60.0}
DEPLETION_MW = (50.0, 30.0, 15.0, 5.0, 0.0)
DWELL_US = (80.0, 40.0, 20.0, 10.0, 5.0)
REPEATS = 4
BLEACH_SETTINGS = {"dwell_time_us": 80.0, "p_ex_uw": 10.0, "p_sted_mw": 100.0}


def _labels(info: dict) -> tuple[float, float]:
    """(clean label, the part the image shows: the clean label without the fading term)."""
    from stedq.training.data.label import expert_quality

    return info["label_clean"], expert_quality(info["resolution_nm"], info["snr"], 0.0,
                                               info["structure_similarity"], info["saturation"])


def acquire_series(structure: str, seed: int, depletion_mw=DEPLETION_MW, dwell_us=DWELL_US,
                   repeats: int = REPEATS) -> dict[str, dict]:
    """{axis: {"levels": [...], "images": (L, 224, 224) uint16, "labels": (clean, image-visible) labels}} for
    one sample."""
    from stedq.training.data.microscope import SimulatedMicroscope

    def fresh():
        return SimulatedMicroscope(structure=structure, seed=seed)

    series = {}
    images, labels = [], []
    for p_sted in depletion_mw:
        image, info = fresh().acquire(**{**BASE, "p_sted_mw": p_sted}, bleach=False)
        images.append(image)
        labels.append(_labels(info))
    series["depletion"] = {"levels": [f"{p:g} mW" for p in depletion_mw], "images": images, "labels": labels}

    images, labels = [], []
    for dwell in dwell_us:
        image, info = fresh().acquire(**{**BASE, "dwell_time_us": dwell}, bleach=False)
        images.append(image)
        labels.append(_labels(info))
    series["dwell"] = {"levels": [f"{d:g} µs" for d in dwell_us], "images": images, "labels": labels}

    images, labels = [], []
    unbleached, info = fresh().acquire(**BLEACH_SETTINGS, bleach=False)
    images.append(unbleached)
    labels.append(_labels(info))
    scope = fresh()
    for _ in range(repeats):
        image, info = scope.acquire(**BLEACH_SETTINGS, bleach=True)
        images.append(image)
        labels.append(_labels(info))
    series["bleaching"] = {"levels": ["no bleaching"] + [f"scan {i + 1}" for i in range(repeats)],
                           "images": images, "labels": labels}
    return series


STEP_TOLERANCE = 0.01   # a step may rise this much (score noise) and still count as not increasing
MIN_DROP = 0.05         # best to worst must fall at least this much (a constant score is not "decreasing")


def _decreasing(values) -> bool:
    steps_ok = all(b <= a + STEP_TOLERANCE for a, b in zip(values[:-1], values[1:], strict=True))
    return bool(steps_ok and values[0] - values[-1] >= MIN_DROP)


def check_monotonicity(score_images, samples: int = 3, structure: str = "actin", seed: int = 10_000,
                       progress: bool = True, **levels) -> dict:
    """score_images: (N, 224, 224) uint16 counts -> scores. Returns per axis the levels, mean scores,
    per-sample scores, mean clean labels and whether the mean (and each sample) decreases."""
    from tqdm import tqdm

    per_axis: dict[str, dict] = {}
    for sample in tqdm(range(samples), desc="monotonicity samples", disable=not progress, leave=False):
        for axis, s in acquire_series(structure, seed + sample, **levels).items():
            entry = per_axis.setdefault(axis, {"levels": s["levels"], "scores": [], "labels": []})
            entry["scores"].append([float(v) for v in score_images(np.stack(s["images"]))])
            entry["labels"].append([[float(v) for v in pair] for pair in s["labels"]])
    result = {}
    for axis, entry in per_axis.items():
        scores, labels = np.array(entry["scores"]), np.array(entry["labels"])   # labels: (samples, levels, 2)
        mean_scores, mean_labels = scores.mean(axis=0), labels.mean(axis=0)
        result[axis] = {
            "levels": entry["levels"], "mean_score": mean_scores.round(4).tolist(),
            "mean_label_clean": mean_labels[:, 0].round(4).tolist(),
            "mean_label_image": mean_labels[:, 1].round(4).tolist(),
            "label_decreasing": _decreasing(mean_labels[:, 0]),
            "label_image_decreasing": _decreasing(mean_labels[:, 1]),
            "scores": scores.round(4).tolist(),
            "mean_decreasing": _decreasing(mean_scores),
            "samples_decreasing": int(sum(_decreasing(row) for row in scores)),
            "samples": int(len(scores)),
            "first_minus_last": float(mean_scores[0] - mean_scores[-1]),
        }
    return result


def monotonicity_markdown(result: dict) -> str:
    lines = [f"Decreasing: no step up by more than {STEP_TOLERANCE}, and a drop of at least {MIN_DROP} "
             "from the best to the worst setting.", "",
             "| axis | levels (best → worst) | mean score | virtual-expert label | the part the image shows | "
             "mean decreasing | samples decreasing |", "|---|---|---|---|---|---|---|"]
    for axis, r in result.items():
        image = r.get("mean_label_image")   # absent from reports written before it existed
        image_cell = "–" if image is None else (f"{' → '.join(f'{v:.2f}' for v in image)} (decreasing: "
                                                f"{'yes' if r['label_image_decreasing'] else 'no'})")
        lines.append(f"| {axis} | {' → '.join(r['levels'])} | {' → '.join(f'{v:.2f}' for v in r['mean_score'])} | "
                     f"{' → '.join(f'{v:.2f}' for v in r['mean_label_clean'])} | {image_cell} | "
                     f"{'yes' if r['mean_decreasing'] else 'no'} | {r['samples_decreasing']}/{r['samples']} |")
    lines += ["", "The part the image shows: the label without its fading term (a uniformly faded field looks like "
              "a more dimly labelled one, so an image-only model sees fading only as lost photons)."]
    return "\n".join(lines) + "\n"


def plot_monotonicity(result: dict, png_path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result), figsize=(4.5 * len(result), 3.6), squeeze=False)
    for ax, (axis, r) in zip(axes[0], result.items(), strict=True):
        x = np.arange(len(r["levels"]))
        for row in r["scores"]:
            ax.plot(x, row, color="#4c72b0", alpha=0.3, linewidth=1)
        ax.plot(x, r["mean_score"], color="#4c72b0", marker="o", label="network (mean)")
        ax.plot(x, r["mean_label_clean"], color="#dd8452", marker="s", linestyle="--", label="virtual expert")
        if "mean_label_image" in r:
            ax.plot(x, r["mean_label_image"], color="#55a868", marker="^", linestyle=":", label="what the image shows")
        ax.set_xticks(x, r["levels"], rotation=30, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"worsening {axis}")
        ax.set_ylabel("quality score")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
