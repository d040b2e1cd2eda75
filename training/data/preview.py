"""`stedq data preview`: a contact sheet (images per quality bin) and a label histogram, as PNGs.

Each image is shown with its own contrast (0 to its 99.5th percentile, 'hot' colour map, as STED images
are usually displayed), so a dim image looks noisy rather than black; its photon-count maximum is printed
under it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

QUALITY_BINS = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def _labelled_folders(folder: Path) -> list[Path]:
    if any(p.suffix.lower() in (".tif", ".tiff") for p in folder.iterdir()):
        return [folder]
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [p for p in subfolders if any(q.suffix.lower() in (".tif", ".tiff") for q in p.iterdir())] or [folder]


def sheet_cell(ax, ylabel: str | None, *, filled: bool, fontsize: int = 8) -> bool:
    """One cell of a contact sheet: no ticks, the row's label in the first column, no frame when the row
    has no image for it. True when an image goes in the cell."""
    ax.set_xticks([])
    ax.set_yticks([])
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=fontsize)
    if not filled:
        ax.set_frame_on(False)
    return filled


def show_counts(ax, image: np.ndarray) -> None:
    """A photon-count image with its own contrast (0 to its 99.5th percentile)."""
    ax.imshow(image, cmap="hot", vmin=0, vmax=max(float(np.percentile(image, 99.5)), 1.0), interpolation="nearest")


def contact_sheet(folder: Path, png: Path, per_bin: int = 4, seed: int = 0) -> Path:
    """Rows = quality bins (best on top), `per_bin` images each, drawn at random (fixed seed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tifffile

    from stedq.training.data.loader import check_labelled_folder

    report = check_labelled_folder(folder, read_images=False)
    entries = report.entries
    if not entries:
        raise SystemExit("\n".join(report.problems) or f"{folder}: no labelled images")
    labels = np.array([label for _, label, _ in entries])
    rng = np.random.default_rng(seed)
    n_bins = len(QUALITY_BINS) - 1
    fig, axes = plt.subplots(n_bins, per_bin, figsize=(2.3 * per_bin, 2.6 * n_bins), squeeze=False)
    for row, b in enumerate(reversed(range(n_bins))):
        low, high = QUALITY_BINS[b], QUALITY_BINS[b + 1]
        members = np.flatnonzero((labels >= low) & ((labels < high) | ((b == n_bins - 1) & (labels <= high))))
        chosen = np.sort(rng.choice(members, size=min(per_bin, len(members)), replace=False)) \
            if len(members) else []
        for col in range(per_bin):
            ax = axes[row, col]
            ylabel = f"quality {low:.1f}-{high:.1f}\n({len(members)} images)" if col == 0 else None
            if not sheet_cell(ax, ylabel, filled=col < len(chosen), fontsize=9):
                continue
            path, label, _ = entries[chosen[col]]
            image = tifffile.imread(path)
            show_counts(ax, image)
            ax.set_title(f"{path.stem.rsplit('-', 1)[0]}  q={label:.2f}", fontsize=8)
            ax.set_xlabel(f"max {int(image.max())} counts", fontsize=7)
    fig.suptitle(f"{folder}: {len(entries)} images by quality (each with its own contrast)", fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return png


def label_histogram(folder: Path, png: Path) -> Path:
    """Histogram of the labels (by structure when labels.csv names it), like the paper's Figure 4."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stedq.training.data.loader import check_labelled_folder

    report = check_labelled_folder(folder, read_images=False)
    if not report.entries:
        raise SystemExit("\n".join(report.problems) or f"{folder}: no labelled images")
    groups: dict[str, list[float]] = {}
    for _, label, structure in report.entries:
        groups.setdefault(structure or folder.name, []).append(label)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(0, 1, 21)
    ax.hist(list(groups.values()), bins=bins, stacked=True, label=list(groups), edgecolor="white")
    all_labels = np.concatenate([np.asarray(v) for v in groups.values()])
    ax.set_xlabel("quality label")
    ax.set_ylabel("images")
    ax.set_xlim(0, 1)
    ax.set_title(f"{folder}: {len(all_labels)} images, mean {all_labels.mean():.2f}, "
                 f"median {np.median(all_labels):.2f}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def preview(folder: Path, out: Path | None = None, per_bin: int = 4, real: Path | None = None) -> list[Path]:
    """Both PNGs for a labelled folder, or for each labelled sub-folder of a synth output; for a synth
    output with image classes also the per-class sheet, the label against each factor and (with `real`)
    the photon counts beside real images (stedq.training.data.figures)."""
    from stedq.training.data import figures

    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not a folder")
    written = []
    subs = _labelled_folders(folder)
    for sub in subs:
        target = Path(out) if out else sub
        prefix = "" if sub == folder else f"{sub.name}-"
        written.append(contact_sheet(sub, target / f"{prefix}contact_sheet.png", per_bin))
        written.append(label_histogram(sub, target / f"{prefix}label_histogram.png"))
        if _has_classes(sub):
            written.append(figures.label_factors(sub, target / f"{prefix}label_factors.png"))
            if real is not None:
                written.append(figures.count_histograms(sub, real, target / f"{prefix}counts_vs_real.png"))
    with_classes = [sub for sub in subs if _has_classes(sub)]
    if with_classes:
        target = Path(out) if out else folder
        written.append(figures.class_sheet(with_classes, target / "class_sheet.png"))
    return written


def _has_classes(folder: Path) -> bool:
    table = folder / "labels.csv"
    return table.is_file() and "class" in table.open().readline().split(",")
