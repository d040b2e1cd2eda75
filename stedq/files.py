"""Image files for `stedq score`: expand paths (files, folders, globs) and read TIFF (incl. multi-page
and OME-TIFF stacks), PNG and NPY into single-channel frames the server accepts.

Pixels keep their meaning: uint8/uint16 are sent as they are; other integer types are accepted when
their values fit uint16 (e.g. int64 photon counts); float images must already be in [0, 1]. Colour
images are accepted only when their channels are equal (a grey image saved as RGB).
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUFFIXES = (".tif", ".tiff", ".png", ".npy")
GENERIC_AXES = {"I": "page", "Q": "page"}  # tifffile's names for a plain sequence of pages


class ReadError(Exception):
    """A file that cannot be scored; str() names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Frame:
    path: str
    frame: str          # "" for a single image; "Z=3", "T=0,C=1", "2" within a stack
    image: np.ndarray   # H×W uint8, uint16 or float32

    @property
    def name(self) -> str:
        return f"{self.path}[{self.frame}]" if self.frame else self.path


def expand_paths(arguments: Iterable[str]) -> tuple[list[Path], list[ReadError]]:
    """Files named by the arguments, in order and without repeats: a file as given, a folder's
    TIFF/PNG/NPY files (recursively, sorted), a glob's matches. Arguments matching nothing are errors."""
    files: list[Path] = []
    errors: list[ReadError] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                errors.append(ReadError(argument, f"folder has no {'/'.join(SUFFIXES)} files"))
            files += found
        elif path.exists():
            files.append(path)
        elif glob.has_magic(argument):
            found = []
            for match in sorted(glob.glob(argument, recursive=True)):
                match_path = Path(match)
                if match_path.is_dir():
                    found += sorted(p for p in match_path.rglob("*")
                                    if p.is_file() and p.suffix.lower() in SUFFIXES)
                elif match_path.is_file():
                    found.append(match_path)
            if not found:
                errors.append(ReadError(argument, "no files match this pattern"))
            files += found
        else:
            errors.append(ReadError(argument, "no such file or folder"))
    return list(dict.fromkeys(files)), errors


def read_frames(path: str | Path) -> list[Frame]:
    """Every single-channel frame of one file; ReadError if it cannot be read or scored."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            return _read_tiff(path)
        if suffix == ".png":
            return [Frame(str(path), "", _pixels(path, _read_png(path)))]
        if suffix == ".npy":
            return _read_npy(path)
    except ReadError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise ReadError(path, f"cannot read it as {suffix[1:].upper()}: {exc}") from None
    raise ReadError(path, f"unsupported file type {path.suffix or '(none)'!r} (use {', '.join(SUFFIXES)})")


def _pixels(path: Path, array: np.ndarray) -> np.ndarray:
    """The frame in a dtype the wire carries, without changing what the values mean."""
    if array.dtype in (np.uint8, np.uint16):
        return array
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ReadError(path, "float image contains NaN or infinity")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ReadError(path, f"float pixels must be in [0, 1], found [{low:g}, {high:g}]; "
                                  "floats mean counts / 65535 (as the model was trained); save photon counts as uint16")
        return array.astype(np.float32)
    if array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise ReadError(path, f"{array.dtype} values in [{low}, {high}] do not fit uint16 counts")
        return array.astype(np.uint16)
    raise ReadError(path, f"unsupported pixel type {array.dtype}")


def _one_channel(path: Path, array: np.ndarray) -> np.ndarray:
    """H×W×channels -> H×W when every colour channel is the same (alpha ignored)."""
    colour = array[..., :3] if array.shape[-1] in (3, 4) else array[..., :1]
    if colour.shape[-1] > 1 and not all(np.array_equal(colour[..., 0], colour[..., c])
                                        for c in range(1, colour.shape[-1])):
        raise ReadError(path, "colour image: stedq scores single-channel (grey) STED images; "
                              "save the channel you want to score on its own")
    return colour[..., 0]


def _read_png(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ModuleNotFoundError:
        raise ReadError(path, "reading PNG needs Pillow: pip install 'stedq[client]'") from None
    with Image.open(path) as image:
        if image.mode == "1":
            image = image.convert("L")
        elif image.mode in ("P", "PA"):
            image = image.convert("RGBA")
        array = np.asarray(image)
    if array.ndim == 3:
        array = _one_channel(path, array)
    return array


def _read_npy(path: Path) -> list[Frame]:
    array = np.load(path, allow_pickle=False)  # never unpickle: a .npy from elsewhere could run code
    if array.ndim < 2:
        raise ReadError(path, f"expected an H×W image or an N×H×W stack, got shape {array.shape}")
    if array.ndim == 2:
        return [Frame(str(path), "", _pixels(path, array))]
    stack = array.reshape(-1, *array.shape[-2:])
    labels = [",".join(map(str, index)) for index in np.ndindex(*array.shape[:-2])]
    return [Frame(str(path), label, _pixels(path, frame)) for label, frame in zip(labels, stack, strict=True)]


def _read_tiff(path: Path) -> list[Frame]:
    import tifffile

    frames: list[Frame] = []
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ReadError(path, "TIFF file has no images")
        for number, series in enumerate(tif.series):
            array, axes = series.asarray(), series.axes
            if "S" in axes:  # samples per pixel (RGB, interleaved or planar): one grey channel
                array = _one_channel(path, np.moveaxis(array, axes.index("S"), -1))
                axes = axes.replace("S", "")
            if not axes.endswith("YX") or array.ndim < 2:
                raise ReadError(path, f"unexpected TIFF layout (axes {axes!r}, shape {array.shape})")
            prefix = f"series={number}," if len(tif.series) > 1 else ""
            stack = array.reshape(-1, *array.shape[-2:])
            lead = axes[:-2]
            for index, frame in zip(np.ndindex(*array.shape[:-2]), stack, strict=True):
                label = ",".join(f"{GENERIC_AXES.get(axis, axis)}={i}" for axis, i in zip(lead, index, strict=True))
                frames.append(Frame(str(path), (prefix + label).rstrip(","), _pixels(path, frame)))
    return frames
