"""Dataset figures for docs/data.md beside `stedq data preview`'s: a contact sheet per sample source and
image class, the label against each factor, and photon counts of the synthetic set beside real images."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from stedq.training.data.calibration import pyplot
from stedq.training.data.preview import sheet_cell, show_counts

GROUPS = [("synthetic-rings", "sted"), ("synthetic-network", "sted"), ("synthetic-mesh", "sted"), ("synthetic-puncta", "sted"),
          ("synthetic-bundles", "sted"), ("synthetic-bundle-network", "sted"), ("pysted-factin", "sted"), ("synthetic-filaments", "sted"),
          ("pysted-tubulin", "sted"), (None, "confocal"), (None, "out_of_focus"), (None, "bleached"),
          (None, "saturated"), (None, "shuffled"), (None, "empty")]
REAL_PIXEL_NM = (15.0, 35.0)   # pixel sizes of published STED data (../shared/FACTS.md)


def _rows(folder: Path) -> list[dict]:
    with open(Path(folder) / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def class_sheet(folders: list[Path], png: Path, per_group: int = 5, seed: int = 0) -> Path:
    """One row per sample source (STED acquisitions) and per near-0 class, `per_group` random images each."""
    import tifffile

    plt = pyplot()
    rows = [(Path(folder), row) for folder in folders for row in _rows(folder)]
    rng = np.random.default_rng(seed)
    groups = [(source, kind, [r for r in rows if r[1].get("class", "sted") == kind
                              and (source is None or r[1]["source"] == source)]) for source, kind in GROUPS]
    groups = [g for g in groups if g[2]]
    fig, axes = plt.subplots(len(groups), per_group, figsize=(2.0 * per_group, 2.2 * len(groups)), squeeze=False)
    for line, (source, kind, members) in zip(axes, groups, strict=True):
        chosen = rng.choice(len(members), size=min(per_group, len(members)), replace=False)
        for col, ax in enumerate(line):
            ylabel = f"{source or kind}\n({len(members)})" if col == 0 else None
            if not sheet_cell(ax, ylabel, filled=col < len(chosen)):
                continue
            folder, row = members[chosen[col]]
            image = tifffile.imread(folder / row["file"])
            show_counts(ax, image)
            pixel = f", {float(row['pixel_nm']):.0f} nm" if row.get("pixel_nm") else ""
            ax.set_title(f"q={float(row['label']):.2f}, max {int(image.max())}{pixel}", fontsize=7)
    fig.suptitle("simulated images by sample source and class (each with its own contrast)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return png


def label_factors(folder: Path, png: Path) -> Path:
    """The label against resolution, SNR, structure shown, structure lost and saturation (a point per image)."""
    plt = pyplot()
    rows = _rows(folder)
    label = np.array([float(r["label_clean"]) for r in rows])
    kinds = np.array([r.get("class", "sted") for r in rows])
    factors = [("resolution_nm", "resolution (nm, PSF FWHM)"), ("snr", "SNR"),
               ("structure_similarity", "structure shown (correlation with the ideal image)"),
               ("structure_loss", "structure lost to bleaching")]
    if rows and "saturation" in rows[0]:
        factors.append(("saturation", "saturation (bright pixels at the maximum)"))
    fig, axes = plt.subplots(1, len(factors), figsize=(4 * len(factors), 3.4))
    for ax, (key, title) in zip(axes, factors, strict=True):
        values = np.array([float(r[key]) for r in rows])
        for kind in dict.fromkeys(kinds):
            mask = kinds == kind
            ax.scatter(values[mask], label[mask], s=5, alpha=0.5, label=f"{kind} ({mask.sum()})")
        ax.set(xlabel=title, ylabel="label (noise-free)", ylim=(-0.02, 1.0))
        if key == "snr":
            ax.set_xscale("log")
    axes[0].legend(fontsize=7, markerscale=3)
    fig.suptitle(f"{folder}: the virtual expert's label against each factor", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def count_histograms(folder: Path, real: Path, png: Path) -> Path:
    """Mean and peak photon counts, and pixel sizes: the synthetic set beside the real images in `real`."""
    import tifffile

    from stedq.files import read_frames

    plt = pyplot()
    sted_rows = [r for r in _rows(folder) if r.get("class", "sted") == "sted"]
    synthetic = [tifffile.imread(Path(folder) / r["file"]) for r in sted_rows]
    reals = [frame.image for path in sorted(Path(real).rglob("*.tif")) for frame in read_frames(path)
             if "__" not in path.stem]   # originals, not their degraded copies
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, (name, stat) in zip(axes, [("mean counts per pixel", np.mean), ("peak counts", np.max)], strict=False):
        values = np.array([float(stat(image)) for image in synthetic])
        bins = np.logspace(np.log10(max(values.min(), 0.05)), np.log10(values.max() * 1.1), 30)
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.7, label=f"synthetic STED ({len(values)})")
        for image in reals:
            ax.axvline(float(stat(image)), color="tab:red", lw=1)
        ax.plot([], [], color="tab:red", label=f"real images ({len(reals)})")
        ax.set(xscale="log", xlabel=name, ylabel="images")
        ax.legend(fontsize=8)
    if sted_rows and sted_rows[0].get("pixel_nm"):
        sizes, counts = np.unique([float(r["pixel_nm"]) for r in sted_rows], return_counts=True)
        axes[2].bar(sizes, counts, width=3, color="tab:blue", alpha=0.7, label="synthetic STED")
    axes[2].axvspan(*REAL_PIXEL_NM, color="tab:red", alpha=0.15, label="published STED data")
    axes[2].set(xlabel="pixel size (nm)", ylabel="images", xlim=(10, 40))
    axes[2].legend(fontsize=8)
    fig.suptitle(f"photon counts: {folder} against {real}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
