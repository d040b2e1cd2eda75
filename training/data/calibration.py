"""`stedq data calibrate`: the plots that document the virtual expert (docs/data.md).

- data_resolution.png: effective-PSF FWHM against depletion power (what resolution_nm measures).
- data_label_map.png: label and its components over (depletion power, dwell time) on fresh samples at a
  fixed excitation: where the good region lies inside the parameter ranges.
- data_label_components.png: from a generated dataset's labels.csv, the label against each component.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def resolution_plot(png: Path) -> Path:
    from stedq.training.data.microscope import PARAMETER_RANGES, resolution_nm

    plt = pyplot()
    powers = np.linspace(*PARAMETER_RANGES["p_sted_mw"], 61)
    widths = [resolution_nm(10.0, float(p)) for p in powers]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(powers, widths)
    ax.set_xlabel("depletion power (mW)")
    ax.set_ylabel("effective PSF FWHM (nm)")
    ax.set_title("resolution of the simulated microscope (20 nm pixels)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def label_map(png: Path, p_ex_uw: float = 10.0, samples: int = 2, progress: bool = True) -> Path:
    from tqdm import tqdm

    from stedq.training.data.microscope import SimulatedMicroscope

    plt = pyplot()
    powers = np.array([0, 5, 10, 20, 35, 50, 70, 90, 120, 150], dtype=float)
    dwells = np.array([2, 4, 7, 12, 20, 35, 60, 100], dtype=float)
    keys = ("label_clean", "q_resolution", "q_snr", "bleaching")
    grids = {key: np.zeros((len(dwells), len(powers))) for key in keys}
    with tqdm(total=len(powers) * len(dwells) * samples, desc="label map", disable=not progress) as bar:
        for i, dwell in enumerate(dwells):
            for j, power in enumerate(powers):
                for s in range(samples):
                    _, info = SimulatedMicroscope("actin", seed=1000 + s).acquire(dwell, p_ex_uw, power)
                    for key in keys:
                        grids[key][i, j] += info[key] / samples
                    bar.update()
    titles = {"label_clean": "virtual-expert label (noise-free)", "q_resolution": "resolution score",
              "q_snr": "SNR score", "bleaching": "fraction bleached by the scan (the loop's budget, not the label)"}
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for ax, key in zip(axes.ravel(), keys, strict=True):
        image = ax.imshow(grids[key], origin="lower", aspect="auto", cmap="viridis",
                          vmin=0, vmax=1 if key != "bleaching" else max(0.01, grids[key].max()))
        ax.set_xticks(range(len(powers)), [f"{p:g}" for p in powers])
        ax.set_yticks(range(len(dwells)), [f"{d:g}" for d in dwells])
        ax.set_xlabel("depletion power (mW)")
        ax.set_ylabel("dwell time (us)")
        ax.set_title(titles[key], fontsize=9)
        fig.colorbar(image, ax=ax)
        if key == "label_clean":
            for i in range(len(dwells)):
                for j in range(len(powers)):
                    ax.text(j, i, f"{grids[key][i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if grids[key][i, j] < 0.5 else "black")
    fig.suptitle(f"actin-like samples, excitation {p_ex_uw:g} uW, mean of {samples} samples", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def components_plot(labels_csv: Path, png: Path) -> Path:
    plt = pyplot()
    with open(labels_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise SystemExit(f"{labels_csv}: no rows")
    # Sets made before the label used structure_loss only have the per-scan bleaching.
    loss = "structure_loss" if "structure_loss" in rows[0] else "bleaching"
    col = {key: np.array([float(r[key]) for r in rows]) for key in
           ("label", "resolution_nm", "snr", loss, "p_sted_mw", "dwell_time_us")}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, key, name in zip(axes, ("resolution_nm", "snr", loss),
                             ("resolution (nm)", "SNR", f"{loss.replace('_', ' ')} (fraction)"), strict=True):
        points = ax.scatter(col[key], col["label"], c=col["dwell_time_us"], s=5, cmap="plasma", alpha=0.7)
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log")
    axes[0].set_ylabel("label")
    fig.colorbar(points, ax=axes, label="dwell time (us)")
    fig.suptitle(f"{labels_csv.parent}: {len(rows)} images", fontsize=10)
    fig.savefig(png, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return png


def calibrate(out: Path, dataset: Path | None = None, progress: bool = True) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [resolution_plot(out / "data_resolution.png"), label_map(out / "data_label_map.png",
                                                                          progress=progress)]
    if dataset is not None:
        labels = Path(dataset) / "labels.csv"
        if not labels.is_file():
            raise SystemExit(f"{labels}: not found (pass a generated structure folder, e.g. data/synth/actin)")
        written.append(components_plot(labels, out / "data_label_components.png"))
    return written
