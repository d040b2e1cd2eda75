"""numpy arrays <-> `stedq.v1.Image` messages, and splitting batches to fit the gRPC message limit.

Pixels travel as they are (uint8, uint16, int16, uint32 photon counts; float32 on the model's scale
unless told they are counts): the server applies the pixel contract (stedq.pixels), so integer images
are sent without a float copy four times larger.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from stedq.pixels import Intensity, parse_intensity, to_wire_array
from stedq.v1 import quality_pb2 as pb

WIRE_DTYPES = {
    np.dtype(np.uint8): pb.DTYPE_UINT8,
    np.dtype(np.uint16): pb.DTYPE_UINT16,
    np.dtype(np.int16): pb.DTYPE_INT16,
    np.dtype(np.uint32): pb.DTYPE_UINT32,
    np.dtype(np.float32): pb.DTYPE_FLOAT32,
}
NUMPY_DTYPES = {code: dtype for dtype, code in WIRE_DTYPES.items()}
INTENSITIES = {Intensity.COUNTS: pb.INTENSITY_COUNTS, Intensity.MODEL_SCALE: pb.INTENSITY_MODEL_SCALE}

# Room left in each request for everything that is not pixels (field tags, lengths, client id).
REQUEST_OVERHEAD_BYTES = 64 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # the server's default (--max-message-mb 64)


def as_image_list(images) -> list[np.ndarray]:
    """One H×W array, an N×H×W array, or a sequence of H×W arrays (sizes may differ) -> list of H×W."""
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            return [images]
        if images.ndim == 3:
            return list(images)
        raise ValueError(f"expected one H×W image or an N×H×W stack, got an array of shape {images.shape}")
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise TypeError(f"expected a numpy array or a list of arrays, got {type(images).__name__}")
    result = []
    for index, image in enumerate(images):
        array = np.asarray(image)
        if array.ndim != 2:
            raise ValueError(f"image {index}: expected an H×W array, got shape {array.shape}")
        result.append(array)
    return result


def to_message(image: np.ndarray, index: int = 0, intensity: str | Intensity | None = None,
               pixel_size_nm: float | None = None) -> pb.Image:
    """`intensity` None: the dtype's default (integers are counts, float32 is on the model's scale);
    `pixel_size_nm` None: unknown."""
    array = to_wire_array(image, index)
    height, width = array.shape
    dtype = np.dtype(array.dtype.newbyteorder("="))
    message = pb.Image(data=array.tobytes(), dtype=WIRE_DTYPES[dtype], height=height, width=width,
                       pixel_size_nm=pixel_size_nm or 0.0)
    if intensity is not None:
        message.intensity = INTENSITIES[parse_intensity(intensity, dtype.name, field=f"image {index}")]
    return message


def to_messages(images, intensity=None, pixel_size_nm=None) -> list[pb.Image]:
    """`as_image_list(images)` as messages. `intensity` (None, "counts", "model_scale") and
    `pixel_size_nm` (None or nm) apply to every image, or are lists with one per image."""
    images = as_image_list(images)

    def each(value, what: str) -> list:
        values = list(value) if isinstance(value, (list, tuple)) else [value] * len(images)
        if len(values) != len(images):
            raise ValueError(f"{len(values)} {what} for {len(images)} images")
        return values

    return [to_message(image, i, kind, size) for i, (image, kind, size) in enumerate(
        zip(images, each(intensity, "intensities"), each(pixel_size_nm, "pixel sizes"), strict=True))]


def from_message(message: pb.Image) -> np.ndarray:
    """The inverse of `to_message` (used by tests and tools that inspect requests)."""
    if message.dtype not in NUMPY_DTYPES:
        raise ValueError(f"unknown dtype {message.dtype}")
    dtype = NUMPY_DTYPES[message.dtype].newbyteorder("<")
    return np.frombuffer(message.data, dtype=dtype).reshape(message.height, message.width).astype(
        dtype.newbyteorder("="))


def split_by_size(messages: Sequence[pb.Image],
                  max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Iterator[tuple[int, list[pb.Image]]]:
    """Consecutive chunks whose request stays under the limit, as (index of first image, images).
    An image that alone exceeds the limit raises ValueError naming it."""
    budget = max_message_bytes - REQUEST_OVERHEAD_BYTES
    start, chunk, used = 0, [], 0
    for index, message in enumerate(messages):
        size = message.ByteSize() + 16  # the repeated field's tag and length prefix
        if size > budget:
            raise ValueError(f"image {index} ({message.height}×{message.width}, {size / 2**20:.1f} MiB) is larger "
                             f"than the {max_message_bytes / 2**20:.0f} MiB message limit; crop it or raise "
                             "the limit on both server (--max-message-mb) and client (max_message_bytes)")
        if chunk and used + size > budget:
            yield start, chunk
            start, chunk, used = index, [], 0
        chunk.append(message)
        used += size
    if chunk:
        yield start, chunk
