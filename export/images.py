"""Images for INT8 calibration and the accuracy gate: float32 (N, 224, 224) in [0, 1].

A labelled dataset folder (`stedq data synth` output, read by stedq.training.data) gives the images
of the checkpoint's train and test splits (by name, as `stedq train` recorded them); any other folder
is read as plain image files (.tif/.tiff/.png/.npy), rescaled like the server does (uint8 / 255,
uint16 / 65535; floats must already be in [0, 1]).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from stedq.export.errors import ExportError
from stedq.training.model import INPUT_SIZE

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".npy"}
_SCALE = {np.dtype("uint8"): 255.0, np.dtype("uint16"): 65535.0}


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


def _read_file(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif path.suffix in {".tif", ".tiff"}:
        import tifffile
        array = tifffile.imread(path)
    else:
        from PIL import Image
        with Image.open(path) as image:
            array = np.asarray(image)
    array = np.squeeze(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
        raise ExportError(f"{path}: shape {array.shape}, expected {INPUT_SIZE}x{INPUT_SIZE} "
                          f"(or a stack N x {INPUT_SIZE} x {INPUT_SIZE})")
    if array.dtype in _SCALE:
        return array.astype(np.float32) / np.float32(_SCALE[array.dtype])
    if array.dtype.kind != "f":
        raise ExportError(f"{path}: dtype {array.dtype}; expected uint8, uint16 or float in [0, 1]")
    array = array.astype(np.float32)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ExportError(f"{path}: float pixels must be finite and in [0, 1] "
                          f"(min {np.nanmin(array):g}, max {np.nanmax(array):g})")
    return array


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
