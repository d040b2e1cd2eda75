"""numpy arrays <-> `stedq.v1.Image` messages, and splitting batches to fit the gRPC message limit.

The wire format carries uint8, uint16 or float32 pixels; the server rescales integers to [0, 1] itself
(x / 255, x / 65535), so integer images are sent as they are, without a float copy four times larger.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from stedq.v1 import quality_pb2 as pb

WIRE_DTYPES = {
    np.dtype(np.uint8): pb.DTYPE_UINT8,
    np.dtype(np.uint16): pb.DTYPE_UINT16,
    np.dtype(np.float32): pb.DTYPE_FLOAT32,
}
NUMPY_DTYPES = {code: dtype for dtype, code in WIRE_DTYPES.items()}

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


def to_wire_array(image: np.ndarray, index: int = 0) -> np.ndarray:
    """The image as a C-contiguous little-endian uint8/uint16/float32 array; ValueError/TypeError if it
    cannot be sent without changing what it means."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"image {index}: expected an H×W array, got shape {array.shape}")
    if array.dtype.kind == "f":
        if array.dtype != np.float32:
            array = array.astype(np.float32)
        if array.size and not np.isfinite(array).all():
            raise ValueError(f"image {index}: float image contains NaN or infinity")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(f"image {index}: float images must already be scaled to [0, 1] "
                             f"(found values in [{array.min():g}, {array.max():g}]); "
                             "floats mean counts / 65535, the scale the model was trained on: send photon "
                             "counts as uint16 instead")
    elif np.dtype(array.dtype.newbyteorder("=")) not in WIRE_DTYPES:
        raise TypeError(f"image {index}: dtype {array.dtype} is not supported; send uint8, uint16 or "
                        "float32 in [0, 1] (e.g. photon counts: np.clip(counts, 0, 65535).astype(np.uint16))")
    little = array.dtype.newbyteorder("<")
    return np.ascontiguousarray(array, dtype=little)


def to_message(image: np.ndarray, index: int = 0) -> pb.Image:
    array = to_wire_array(image, index)
    height, width = array.shape
    return pb.Image(data=array.tobytes(), dtype=WIRE_DTYPES[np.dtype(array.dtype.newbyteorder("="))],
                    height=height, width=width)


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
