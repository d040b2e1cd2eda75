"""Images for INT8 calibration and the accuracy gate: float32 (N, 224, 224) in [0, 1].

A labelled dataset folder (`stedq data synth` output, read by stedq.training.data) gives the images
of the checkpoint's train and test splits (by name, as `stedq train` recorded them); any other folder
is read as plain image files (.tif/.tiff/.png/.npy) by stedq.files and converted by the pixel contract
(stedq.pixels: photon counts / 65535), as the server does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from stedq.export.errors import ExportError
from stedq.files import ReadError, read_frames
from stedq.pixels import InvalidInput, to_model_input
from stedq.training.model import INPUT_SIZE

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".npy"}


def _labelled_split(folder: Path, names: list[str] | None) -> np.ndarray | None:
    """Images of a labelled dataset folder (those in `names` when given), or None when `folder` is not one."""
    from stedq.training.data import DatasetError, check_labelled_folder, load_labelled_folder

    report = check_labelled_folder(folder, read_images=False)
    if not report.entries:   # no labelled images at all: read the folder as plain image files
        return None
    try:
        dataset = load_labelled_folder(folder)
    except DatasetError as exc:
        raise ExportError(f"{folder}: {exc}") from None
    if names is None:
        return np.asarray(dataset.images, np.float32)
    index = {name: i for i, name in enumerate(dataset.names)}
    missing = [name for name in names if name not in index]
    if missing:
        raise ExportError(f"{folder}: {len(missing)} image(s) of the checkpoint's split are not in this dataset, "
                          f"e.g. {missing[0]!r}: give the data the model was trained on (--data)")
    return np.asarray(dataset.images[[index[name] for name in names]], np.float32)


def pixel_sizes_nm(folder: str | Path, names: list[str] | None = None) -> np.ndarray | None:
    """The pixel sizes (nm) a labelled dataset's labels.csv records for `names` (all of its images when
    None): what the fit verdict's pixel-size range spans. None where it records none (real or older data)."""
    from stedq.training.data.loader import label_columns, label_names

    names = label_names(folder) if names is None else names
    if not names:
        return None
    rows = label_columns(Path(folder), list(names), ("pixel_nm",))
    return None if rows is None or not len(rows) else rows[:, 0]


def _read_file(path: Path) -> np.ndarray:
    """Every frame of one file as model input, (N, 224, 224)."""
    try:
        frames = read_frames(path)
        images = [to_model_input(frame.image, frame.intensity, field=str(path)) for frame in frames]
    except (ReadError, InvalidInput) as exc:
        raise ExportError(str(exc)) from None
    if any(image.shape != (INPUT_SIZE, INPUT_SIZE) for image in images):
        raise ExportError(f"{path}: shape {images[0].shape if len(images) == 1 else (len(images), *images[0].shape)}, "
                          f"expected {INPUT_SIZE}x{INPUT_SIZE} (or a stack N x {INPUT_SIZE} x {INPUT_SIZE})")
    return np.stack(images)


def load_images(folder: str | Path, split: str, names: list[str] | None = None, limit: int | None = None,
                seed: int = 0) -> np.ndarray:
    """float32 (N, 224, 224) in [0, 1] for `split` ("train" or "test").

    A labelled dataset folder gives the images listed in `names` (the checkpoint's split), or all of
    them; any other folder gives its `split` subfolder's image files if it has one, else all its files.
    With `limit`, a random subset (fixed seed) of at most `limit` images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such folder (expected a dataset or a folder of images)")
    images = _labelled_split(folder, names)
    if images is None:
        root = folder / split if (folder / split).is_dir() else folder
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise ExportError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) and not a labelled dataset")
        images = np.concatenate([_read_file(p) for p in tqdm(files, desc=f"reading {split} images",
                                                             unit="file", leave=False)])
    if limit is not None and len(images) > limit:
        images = images[np.sort(np.random.default_rng(seed).choice(len(images), limit, replace=False))]
    return np.ascontiguousarray(images, dtype=np.float32)
