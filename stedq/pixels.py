"""The pixel contract: what pixel values mean and how they become the model's input, for every part
(training, export, server, bench, clients; the Node client follows the same rule, tested with the
same files).

- Integer pixels (uint8, uint16, int16, uint32) are **photon counts**: the same counts give the same
  model input whatever the dtype. Negative counts (int16) are read as 0.
- float32 pixels are **on the model's scale** (counts / 65535, finite, in [0, 1]) unless the sender
  says they are counts.
- The model was trained on uint16 photon counts / 65535, so its input is counts / 65535
  (`MODEL_COUNTS_PER_UNIT`).

The intensity convention travels with every image (`Intensity`; proto `stedq.v1.Intensity`, the
KServe v2 input parameter `intensity`), so the server never guesses. A file's calibration (ImageJ
offset and slope) is applied when the file is read (stedq.files), before any of this.
"""

from __future__ import annotations

import enum

import numpy as np

MODEL_INPUT_SIZE = 224
MIN_IMAGE_SIZE = 64   # smaller images are refused; smaller than the model input are padded (stedq.tiling)
MODEL_COUNTS_PER_UNIT = 65535.0

# wire dtype name -> little-endian numpy dtype
WIRE_DTYPES: dict[str, np.dtype] = {
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "int16": np.dtype("<i2"),
    "uint32": np.dtype("<u4"),
    "float32": np.dtype("<f4"),
}
_EXPECTED = ", ".join(WIRE_DTYPES)
# Spellings of each dtype: ours, numpy's, the stedq.v1 enum's and KServe v2's datatypes.
_ALIASES = {
    **{name: name for name in WIRE_DTYPES}, **{f"dtype_{name}": name for name in WIRE_DTYPES},
    "u1": "uint8", "u2": "uint16", "i2": "int16", "u4": "uint32", "f4": "float32", "fp32": "float32",
}
# stedq.v1.DType enum numbers (proto/stedq/v1/quality.proto)
DTYPE_NUMBERS = {1: "uint8", 2: "uint16", 3: "float32", 4: "int16", 5: "uint32"}


class InvalidInput(ValueError):
    """An image that cannot be scored; the message names the field and the problem."""


class Intensity(str, enum.Enum):
    COUNTS = "counts"               # photon counts per pixel
    MODEL_SCALE = "model_scale"     # counts / 65535 already, in [0, 1]


# stedq.v1.Intensity enum numbers; 0 (unspecified) means the dtype's default
INTENSITY_NUMBERS = {1: Intensity.COUNTS, 2: Intensity.MODEL_SCALE}


def default_intensity(dtype: str) -> Intensity:
    return Intensity.MODEL_SCALE if dtype == "float32" else Intensity.COUNTS


def parse_dtype(dtype: str | int, *, field: str) -> str:
    """'uint16', 'UINT16', 'DTYPE_UINT16', 2 (the proto enum), 'FP32', 'INT16', ... -> a WIRE_DTYPES name."""
    if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        if int(dtype) in DTYPE_NUMBERS:
            return DTYPE_NUMBERS[int(dtype)]
        if int(dtype) == 0:
            raise InvalidInput(f"{field}: dtype is not set (DTYPE_UNSPECIFIED); use {_EXPECTED}")
        raise InvalidInput(f"{field}: unknown dtype {int(dtype)} (expected {_EXPECTED})")
    name = str(dtype).strip().lower()
    if name in _ALIASES:
        return _ALIASES[name]
    raise InvalidInput(f"{field}: unknown dtype {name or 'unspecified'!r} (expected {_EXPECTED})")


def parse_intensity(value: str | int | Intensity | None, dtype: str, *, field: str) -> Intensity:
    """Intensity from our enum, its name, the proto enum number, or None / 0 / '' (the dtype's default)."""
    if isinstance(value, Intensity):
        return value
    if value is None or (isinstance(value, (int, np.integer)) and int(value) == 0):
        return default_intensity(dtype)
    if isinstance(value, (int, np.integer)):
        if int(value) in INTENSITY_NUMBERS:
            return INTENSITY_NUMBERS[int(value)]
        raise InvalidInput(f"{field}: unknown intensity {int(value)} (expected counts or model_scale)")
    name = str(value).strip().lower().removeprefix("intensity_")
    if name in ("", "unspecified"):
        return default_intensity(dtype)
    for member in Intensity:
        if name == member.value:
            return member
    raise InvalidInput(f"{field}: unknown intensity {value!r} (expected 'counts' or 'model_scale')")


def to_model_input(pixels: np.ndarray, intensity: str | int | Intensity | None = None, *,
                   field: str = "image", out: np.ndarray | None = None) -> np.ndarray:
    """Pixels of a wire dtype ((H, W), or a stack) -> float32 model input (counts / 65535); InvalidInput
    names `field`. With `out` (float32, the pixels' shape) the result is written there and returned.

    Numbers that arrive wider than their dtype (KServe v2 typed contents) are checked against it."""
    values = np.asarray(pixels)
    dtype = np.dtype(values.dtype).newbyteorder("=").name
    if dtype not in WIRE_DTYPES:
        raise InvalidInput(f"{field}: dtype {dtype} is not one of {_EXPECTED}")
    kind = parse_intensity(intensity, dtype, field=field)
    if dtype == "float32":
        finite = np.isfinite(values)
        if not finite.all():
            bad = int(values.size - np.count_nonzero(finite))
            raise InvalidInput(f"{field}: float32 image has {bad} NaN/Inf pixel(s); send finite values")
        if kind is Intensity.MODEL_SCALE:
            if values.size and (values.min() < 0.0 or values.max() > 1.0):
                raise InvalidInput(f"{field}: float32 values on the model scale must be in [0, 1] (got min "
                                   f"{values.min():.4g}, max {values.max():.4g}); send photon counts as integers, "
                                   f"or say intensity=counts")
            if out is None:
                return values.astype(np.float32, copy=False)
            np.copyto(out, values, casting="unsafe")
            return out
    elif kind is Intensity.MODEL_SCALE:
        raise InvalidInput(f"{field}: {dtype} pixels are photon counts; intensity model_scale applies to float32 "
                           f"only")
    if values.dtype.kind == "u":   # one pass: convert and scale (as astype then divide, value for value)
        return np.divide(values, np.float32(MODEL_COUNTS_PER_UNIT), out=out, dtype=np.float32, casting="unsafe")
    counts = values.astype(np.float32)
    np.maximum(counts, 0.0, out=counts)  # no negative photons (int16 files, float counts)
    return np.divide(counts, np.float32(MODEL_COUNTS_PER_UNIT), out=out)


def model_input_buffer(shapes: list[tuple[int, int]]) -> np.ndarray | None:
    """One (N, H, W) float32 array to decode N images of one shape into (None for one image or mixed
    shapes): its rows are the images, and the whole goes to the model without another copy."""
    if len(shapes) < 2 or len(set(shapes)) != 1:
        return None
    return np.empty((len(shapes), *shapes[0]), np.float32)


def check_fits(values: np.ndarray, dtype: str, *, field: str) -> np.ndarray:
    """Wide numbers (KServe v2 typed contents) that must fit `dtype`, returned as that dtype."""
    wire = WIRE_DTYPES[dtype]
    if wire.kind in "iu" and values.size:
        info = np.iinfo(wire)
        low, high = values.min(), values.max()
        if low < info.min or high > info.max:
            raise InvalidInput(f"{field}: values outside the {dtype} range {info.min}..{info.max} "
                               f"(min {low}, max {high})")
    return values.astype(wire.newbyteorder("="), copy=False)


def check_image_size(height: int, width: int, *, field: str, minimum: int = MIN_IMAGE_SIZE) -> None:
    """InvalidInput naming `field` for an image too small to score (or of no size at all)."""
    if height <= 0 or width <= 0:
        raise InvalidInput(f"{field}: height and width must be positive (got {height}x{width})")
    if height < minimum or width < minimum:
        raise InvalidInput(f"{field}: image is {height}x{width}, smaller than the minimum {minimum}x{minimum} "
                           f"the model can score (images from {minimum}x{minimum} up are accepted)")


def decode_image(data: bytes, dtype: str | int, height: int, width: int, *, field: str,
                 intensity: str | int | Intensity | None = None, min_size: int = MIN_IMAGE_SIZE,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Raw little-endian bytes from the wire -> float32 (height, width) model input (into `out` if given);
    InvalidInput names `field`."""
    name = parse_dtype(dtype, field=field)
    height, width = int(height), int(width)
    check_image_size(height, width, field=field, minimum=min_size)
    wire = WIRE_DTYPES[name]
    expected = height * width * wire.itemsize
    if len(data) != expected:
        raise InvalidInput(f"{field}: data has {len(data)} bytes but a {height}x{width} {name} image "
                           f"needs {expected} ({height}*{width}*{wire.itemsize})")
    return to_model_input(np.frombuffer(data, dtype=wire).reshape(height, width), intensity, field=field, out=out)


def to_wire_array(image, index: int = 0) -> np.ndarray:
    """A caller's (H, W) array as a C-contiguous little-endian wire array holding the same numbers.

    bool and int8 widen losslessly; other integers narrow to the first of uint16, int16, uint32 their
    values fit; float16/float64 become float32. TypeError/ValueError name the image."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"image {index}: expected an H×W array, got shape {array.shape}")
    kind, name = array.dtype.kind, np.dtype(array.dtype).newbyteorder("=").name
    if kind == "b":
        array = array.astype(np.uint8)
    elif kind == "f":
        if name != "float32":
            array = array.astype(np.float32)
        if array.size and not np.isfinite(array).all():
            raise ValueError(f"image {index}: float image contains NaN or infinity")
    elif kind in "iu" and name not in WIRE_DTYPES:
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for candidate in ("uint16", "int16", "uint32"):
            info = np.iinfo(candidate)
            if info.min <= low and high <= info.max:
                array = array.astype(candidate)
                break
        else:
            raise ValueError(f"image {index}: {array.dtype} values in [{low}, {high}] fit none of {_EXPECTED}; "
                             "photon counts never need more than uint32")
    elif kind not in "iu":
        raise TypeError(f"image {index}: dtype {array.dtype} is not an image type; send one of {_EXPECTED}")
    wire = WIRE_DTYPES[np.dtype(array.dtype).newbyteorder("=").name]
    return np.ascontiguousarray(array, dtype=wire)


def demo_image(size: int = MODEL_INPUT_SIZE, seed: int = 7) -> np.ndarray:
    """A built-in synthetic STED-like image (blurred fibres with Poisson noise) for the start-up self-test,
    as model input (uint16 photon counts / 65535: the range the model was trained on)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.zeros((size, size), np.float32)
    for _ in range(6):  # a few straight fibres with a Gaussian profile (~2 px wide)
        angle = rng.uniform(0, np.pi)
        x0, y0 = rng.uniform(0, size, 2)
        distance = np.abs((xx - x0) * np.sin(angle) - (yy - y0) * np.cos(angle))
        image += np.exp(-0.5 * (distance / 2.0) ** 2)
    counts = rng.poisson(image * 30.0 + 1.0).astype(np.uint16)
    return to_model_input(counts)
