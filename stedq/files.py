"""Image files, read once for every part: expand paths (files, folders, globs) and read TIFF (incl.
multi-page, ImageJ and OME-TIFF stacks), PNG and NPY into single-channel frames of photon counts.

This is where a file's calibration is applied (the pixel contract, stedq.pixels): an ImageJ
"straight line" calibration (value = c0 + c1 * stored, e.g. signed 16-bit data stored as uint16 +
32768) gives the counts the file means. Integer frames keep a wire dtype (uint8, uint16, int16,
uint32; wider integers are narrowed to one their values fit); a float frame is on the model's scale
when all its values are in [0, 1], otherwise it is counts. Colour images are accepted only when their
channels are equal (a grey image saved as RGB).
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stedq.pixels import Intensity, to_wire_array

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
    image: np.ndarray   # H×W of a wire dtype (stedq.pixels.WIRE_DTYPES)
    intensity: Intensity = Intensity.COUNTS   # what the values mean
    pixel_size_nm: float | None = None        # from ImageJ or OME-TIFF metadata; None when the file says nothing

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
            return [_frame(path, "", _read_png(path))]
        if suffix == ".npy":
            return _read_npy(path)
    except ReadError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise ReadError(path, f"cannot read it as {suffix[1:].upper()}: {exc}") from None
    raise ReadError(path, f"unsupported file type {path.suffix or '(none)'!r} (use {', '.join(SUFFIXES)})")


def _frame(path: Path, label: str, array: np.ndarray, calibration: tuple[float, float] | None = None) -> Frame:
    """One frame in a wire dtype, calibrated to counts, with what its values mean."""
    if calibration is not None:
        offset, slope = calibration
        values = offset + slope * array.astype(np.float64)
        integral = float(offset).is_integer() and float(slope).is_integer()
        array = values.astype(np.int64) if integral and array.dtype.kind in "iub" else values
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ReadError(path, "float image contains NaN or infinity")
        on_model_scale = calibration is None and (array.size == 0 or (array.min() >= 0.0 and array.max() <= 1.0))
        return Frame(str(path), label, array, Intensity.MODEL_SCALE if on_model_scale else Intensity.COUNTS)
    if array.dtype.kind not in "iub":
        raise ReadError(path, f"unsupported pixel type {array.dtype}")
    try:
        return Frame(str(path), label, to_wire_array(array))
    except (TypeError, ValueError) as exc:
        raise ReadError(path, str(exc).removeprefix("image 0: ")) from None


NM_PER_UNIT = {"nm": 1.0, "nanometer": 1.0, "um": 1e3, "µm": 1e3, "\u03bcm": 1e3, "micron": 1e3,
               "micrometer": 1e3, "mm": 1e6, "millimeter": 1e6}


def _pixel_size_nm(tif) -> float | None:
    """The x pixel size an ImageJ (XResolution + unit) or OME-TIFF (PhysicalSizeX) file states."""
    if tif.is_ome and tif.ome_metadata:
        import re

        pixels = re.search(r"<Pixels\b[^>]*>", tif.ome_metadata)
        size = pixels and re.search(r'PhysicalSizeX="([^"]+)"', pixels.group(0))
        unit = pixels and re.search(r'PhysicalSizeXUnit="([^"]+)"', pixels.group(0))
        if size:
            factor = NM_PER_UNIT.get(unit.group(1) if unit else "µm")
            return float(size.group(1)) * factor if factor else None
    metadata = tif.imagej_metadata or {}
    unit = NM_PER_UNIT.get(str(metadata.get("unit", "")).strip().lower())
    resolution = tif.pages[0].tags.get("XResolution")
    if unit and resolution:
        numerator, denominator = resolution.value
        if numerator > 0 and denominator > 0:
            return unit * denominator / numerator
    return None


def _imagej_calibration(path: Path, tif) -> tuple[float, float] | None:
    """(c0, c1) of an ImageJ straight-line calibration, None when the file has none."""
    metadata = tif.imagej_metadata or {}
    if "c0" not in metadata and "c1" not in metadata:
        return None
    function = int(metadata.get("cf", 0))
    if function != 0:  # ImageJ's Calibration.STRAIGHT_LINE; others (log, poly, ...) are not counts
        raise ReadError(path, f"ImageJ calibration function {function} is not a straight line; save the "
                              "photon counts without a calibration")
    offset, slope = float(metadata.get("c0", 0.0)), float(metadata.get("c1", 1.0))
    return None if (offset, slope) == (0.0, 1.0) else (offset, slope)


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
        return [_frame(path, "", array)]
    stack = array.reshape(-1, *array.shape[-2:])
    labels = [",".join(map(str, index)) for index in np.ndindex(*array.shape[:-2])]
    return [_frame(path, label, frame) for label, frame in zip(labels, stack, strict=True)]


def _read_tiff(path: Path) -> list[Frame]:
    import tifffile

    frames: list[Frame] = []
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ReadError(path, "TIFF file has no images")
        calibration = _imagej_calibration(path, tif)
        pixel_size = _pixel_size_nm(tif)
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
                frames.append(replace(_frame(path, (prefix + label).rstrip(","), frame, calibration),
                                      pixel_size_nm=pixel_size))
    return frames
