"""Raw pixels from the wire -> float32 images in [0, 1], with errors that say what was wrong.

Shared by our API (stedq.v1), the KServe v2 servicer and in-process scoring (stedq.local). An image is row-major, single-channel,
little-endian; uint images are rescaled by their dtype's range as in the paper (x / 255, x / 65535),
float32 images must already be finite and in [0, 1].
"""

from __future__ import annotations

import enum

import numpy as np

MODEL_INPUT_SIZE = 224


class InvalidInput(ValueError):
    """A request the server cannot score; the message names the field and the problem."""


class DType(str, enum.Enum):
    UINT8 = "uint8"
    UINT16 = "uint16"
    FLOAT32 = "float32"


# wire dtype (little-endian) and the value that maps to 1.0 (None: already in [0, 1])
_LAYOUT: dict[DType, tuple[np.dtype, float | None]] = {
    DType.UINT8: (np.dtype("u1"), 255.0),
    DType.UINT16: (np.dtype("<u2"), 65535.0),
    DType.FLOAT32: (np.dtype("<f4"), None),
}

# Spellings accepted for each dtype: ours, numpy's, the stedq.v1 enum's and KServe v2's datatypes.
_ALIASES: dict[str, DType] = {
    "uint8": DType.UINT8, "u1": DType.UINT8, "dtype_uint8": DType.UINT8,
    "uint16": DType.UINT16, "u2": DType.UINT16, "dtype_uint16": DType.UINT16,
    "float32": DType.FLOAT32, "f4": DType.FLOAT32, "fp32": DType.FLOAT32, "dtype_float32": DType.FLOAT32,
}
# stedq.v1.DType enum numbers (see proto/stedq/v1/quality.proto)
_ENUM_NUMBERS = {1: DType.UINT8, 2: DType.UINT16, 3: DType.FLOAT32}


def parse_dtype(dtype: str | int | DType, *, field: str) -> DType:
    """'uint16', 'UINT16', 'DTYPE_UINT16', 2 (the proto enum), 'FP32', ... -> DType."""
    if isinstance(dtype, DType):
        return dtype
    if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        if int(dtype) in _ENUM_NUMBERS:
            return _ENUM_NUMBERS[int(dtype)]
        if int(dtype) == 0:
            raise InvalidInput(f"{field}: dtype is not set (DTYPE_UNSPECIFIED); use uint8, uint16 or float32")
        raise InvalidInput(f"{field}: unknown dtype {int(dtype)} (expected uint8, uint16 or float32)")
    name = str(dtype).strip().lower()
    if name in _ALIASES:
        return _ALIASES[name]
    shown = name or "unspecified"
    raise InvalidInput(f"{field}: unknown dtype {shown!r} (expected uint8, uint16 or float32)")


def to_unit_range(pixels: np.ndarray, dtype: str | int | DType, *, field: str) -> np.ndarray:
    """Rescale already-shaped pixels of `dtype` to float32 in [0, 1] and check them.

    For callers that receive numbers rather than bytes (KServe v2 typed contents): the values must
    fit the dtype (uint8 in 0..255, ...); float32 values must be finite and in [0, 1].
    """
    kind = parse_dtype(dtype, field=field)
    wire, scale = _LAYOUT[kind]
    if scale is None:
        image = np.asarray(pixels, dtype=np.float32)
        _check_unit_floats(image, field=field)
        return image
    values = np.asarray(pixels)
    if values.dtype != wire:
        if values.size and (values.min() < 0 or values.max() > scale):
            raise InvalidInput(f"{field}: values outside the {kind.value} range 0..{int(scale)} "
                               f"(min {values.min()}, max {values.max()})")
    return (values.astype(np.float32) / np.float32(scale)).astype(np.float32, copy=False)


def decode_image(data: bytes, dtype: str | int | DType, height: int, width: int, *, field: str,
                 min_height: int = MODEL_INPUT_SIZE, min_width: int = MODEL_INPUT_SIZE) -> np.ndarray:
    """Raw bytes -> float32 (height, width) in [0, 1]; raises InvalidInput naming `field`."""
    kind = parse_dtype(dtype, field=field)
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise InvalidInput(f"{field}: height and width must be positive (got {height}x{width})")
    if height < min_height or width < min_width:
        raise InvalidInput(f"{field}: image is {height}x{width}, smaller than the model input "
                           f"{min_height}x{min_width} (larger images are tiled; smaller ones cannot be scored)")
    wire, _ = _LAYOUT[kind]
    expected = height * width * wire.itemsize
    if len(data) != expected:
        raise InvalidInput(f"{field}: data has {len(data)} bytes but a {height}x{width} {kind.value} image "
                           f"needs {expected} ({height}*{width}*{wire.itemsize})")
    pixels = np.frombuffer(data, dtype=wire).reshape(height, width)
    return to_unit_range(pixels, kind, field=field)


def _check_unit_floats(image: np.ndarray, *, field: str) -> None:
    finite = np.isfinite(image)
    if not finite.all():
        bad = int(image.size - np.count_nonzero(finite))
        raise InvalidInput(f"{field}: float32 image has {bad} NaN/Inf pixel(s); send finite values in [0, 1]")
    if image.size and (image.min() < 0.0 or image.max() > 1.0):
        raise InvalidInput(f"{field}: float32 values must be in [0, 1] (got min {image.min():.4g}, "
                           f"max {image.max():.4g}); rescale the image, or send it as uint8/uint16")


def demo_image(size: int = MODEL_INPUT_SIZE, seed: int = 7) -> np.ndarray:
    """A built-in synthetic STED-like image (blurred fibres with Poisson noise) for the start-up self-test.

    Photon counts rescaled as a uint16 export is (counts / 65535): the range the model was trained on.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.zeros((size, size), np.float32)
    for _ in range(6):  # a few straight fibres with a Gaussian profile (~2 px wide)
        angle = rng.uniform(0, np.pi)
        x0, y0 = rng.uniform(0, size, 2)
        distance = np.abs((xx - x0) * np.sin(angle) - (yy - y0) * np.cos(angle))
        image += np.exp(-0.5 * (distance / 2.0) ** 2)
    counts = rng.poisson(image * 30.0 + 1.0).astype(np.float32)
    return np.clip(counts / np.float32(65535), 0.0, 1.0).astype(np.float32)
