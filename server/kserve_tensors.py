"""KServe v2 tensors <-> images and scores, for `stedq.server.kserve` (no gRPC here).

A v2 client describes its input as a tensor: a datatype, a shape and the values, either typed
(`contents.fp32_contents` / `contents.uint_contents`) or as little-endian bytes in the request's
`raw_input_contents` (what tritonclient sends). Each image of that tensor (any height and width from
64 px up; one score each, as stedq.v1 gives) goes through the pixel contract
(`stedq.pixels.to_model_input`), so the v2 path and stedq.v1 accept and reject exactly the same pixels. The input parameter `intensity` ("counts" or "model_scale") says what the values
mean; without it integers are photon counts and FP32 is on the model's scale.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stedq.fit import FitQuery
from stedq.kserve import grpc_service_pb2 as pb
from stedq.pixels import (
    MIN_IMAGE_SIZE,
    InvalidInput,
    check_fits,
    check_image_size,
    model_input_buffer,
    parse_intensity,
    to_model_input,
)

INPUT_NAME = "image"
# What ModelMetadata declares and decode_request enforces: N images of one channel, H and W from
# MIN_IMAGE_SIZE up. The declared datatype is FP32 (the model's); the pixel contract also takes photon
# counts as UINT8/UINT16/INT16/UINT32 (DATATYPES), which v2 metadata has no field to list.
INPUT_SHAPE = (-1, 1, -1, -1)
INPUT_DATATYPE = "FP32"
OUTPUT_NAME = "score"
FIT_OUTPUT = "fit"   # BYTES [N, 1]: "ok", or the fit reasons joined by "," (stedq/fit.py)
OUTPUTS = (OUTPUT_NAME, FIT_OUTPUT)

# v2 datatype -> (our dtype name, little-endian numpy dtype, typed `contents` field that carries it)
DATATYPES = {
    "FP32": ("float32", np.dtype("<f4"), "fp32_contents"),
    "UINT16": ("uint16", np.dtype("<u2"), "uint_contents"),
    "UINT8": ("uint8", np.dtype("u1"), "uint_contents"),
    "INT16": ("int16", np.dtype("<i2"), "int_contents"),
    "UINT32": ("uint32", np.dtype("<u4"), "uint_contents"),
}
INTENSITY_PARAMETER = "intensity"
CONTENT_FIELDS = ("bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
                  "fp32_contents", "fp64_contents", "bytes_contents")


@dataclass
class DecodedRequest:
    images: list[np.ndarray]   # float32 (H, W) model input, one per image of the input tensor
    fit_queries: list[FitQuery]   # what each image's fit verdict needs (stedq.fit)
    raw: bool                  # the input came as raw_input_contents: answer with raw_output_contents
    outputs: list[str]         # outputs to return, in order


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _image_shape(tensor: pb.ModelInferRequest.InferInputTensor) -> tuple[int, int, int]:
    """(N, H, W) of a [N, 1, H, W] tensor of images from MIN_IMAGE_SIZE px up: the rank and channel
    count the model metadata declares ([-1, 1, -1, -1]), nothing else."""
    shape = list(tensor.shape)
    where = f"input '{tensor.name}'"
    if len(shape) != len(INPUT_SHAPE) or any(want != -1 and got != want
                                              for got, want in zip(shape, INPUT_SHAPE, strict=True)):
        raise InvalidInput(f"{where}: shape {_shape_text(shape)} is not [N, 1, H, W] (the model metadata "
                           f"declares {_shape_text(INPUT_SHAPE)}: N images of one channel, H and W from "
                           f"{MIN_IMAGE_SIZE} up)")
    n, h, w = shape[0], shape[2], shape[3]
    if min(shape) < 0:
        raise InvalidInput(f"{where}: shape {_shape_text(shape)} has a negative dimension; give the actual "
                           f"sizes (N is the number of images sent)")
    if n == 0:
        raise InvalidInput(f"{where}: empty batch (shape {_shape_text(shape)} has N = 0 images)")
    check_image_size(h, w, field=f"{where}: shape {_shape_text(shape)}")
    return n, h, w


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor, count: int) -> np.ndarray:
    """The flat values of a tensor given in `contents` (range checks come with the image decoding)."""
    _, np_dtype, field = DATATYPES[tensor.datatype]
    where = f"input '{tensor.name}'"
    for other in CONTENT_FIELDS:
        if other != field and len(getattr(tensor.contents, other)):
            raise InvalidInput(f"{where}: datatype {tensor.datatype} takes its values in contents.{field}, "
                               f"not contents.{other}")
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidInput(f"{where}: contents.{field} has {len(values)} values, expected {count} for "
                           f"shape {_shape_text(tensor.shape)}")
    if np_dtype.kind == "f":
        return _packed_floats(tensor.contents)
    # int/uint_contents are 32-bit: keep them wide so that out-of-range values are reported, not wrapped
    wide = np.fromiter(values, dtype=np.int64, count=len(values))
    return check_fits(wide, DATATYPES[tensor.datatype][0], field=where)


def _packed_floats(contents: pb.InferTensorContents) -> np.ndarray:
    """contents.fp32_contents (the only field set) as float32, read in one step.

    np.array() over a repeated field converts it value by value (~0.3 s for 32 images, with the event
    loop blocked). proto3 serializes a repeated float "packed": one tag byte, the byte length as a
    varint, then the values as little-endian float32, which numpy reads as they are (a few ms)."""
    data = contents.SerializeToString()
    if not data:
        return np.empty(0, np.float32)
    start, length, shift = 1, 0, 0   # data[0] is the tag of field 6
    while True:
        byte = data[start]
        start += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    if data[0] != 0x32 or start + length != len(data):  # not the one packed field 6: the slow way
        return np.array(contents.fp32_contents, dtype=np.float32)
    return np.frombuffer(data, dtype="<f4", offset=start, count=length // 4)


def _raw_values(tensor: pb.ModelInferRequest.InferInputTensor, data: bytes, count: int) -> np.ndarray:
    _, np_dtype, _ = DATATYPES[tensor.datatype]
    expected = count * np_dtype.itemsize
    if len(data) != expected:
        raise InvalidInput(
            f"input '{tensor.name}': raw_input_contents[0] has {len(data)} bytes, expected {expected} "
            f"({tensor.datatype} x shape {_shape_text(tensor.shape)})")
    return np.frombuffer(data, dtype=np_dtype)


def _refuse_unsupported(where: str, parameters) -> None:
    """Triton extensions that tritonclient can ask for; ignoring them would answer the wrong thing."""
    if "shared_memory_region" in parameters:
        raise InvalidInput(f"{where}: shared memory is not supported by this server; send the tensor in "
                           f"raw_input_contents (tritonclient: set_data_from_numpy) or contents")
    if "classification" in parameters:
        raise InvalidInput(f"{where}: the classification extension is not supported (the output is a "
                           f"score in [0, 1]); request '{OUTPUT_NAME}' without class_count")


def _intensity(tensor: pb.ModelInferRequest.InferInputTensor) -> str | None:
    """The input's `intensity` parameter ("counts" / "model_scale"), None when absent."""
    if INTENSITY_PARAMETER not in tensor.parameters:
        return None
    parameter = tensor.parameters[INTENSITY_PARAMETER]
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise InvalidInput(f"input '{tensor.name}': parameter '{INTENSITY_PARAMETER}' must be a string, "
                           f"'counts' or 'model_scale'")
    return parameter.string_param


def _requested_outputs(request: pb.ModelInferRequest) -> list[str]:
    for output in request.outputs:
        if output.name not in OUTPUTS:
            raise InvalidInput(f"outputs: unknown output '{output.name}' (the model's outputs are "
                               f"'{OUTPUT_NAME}' and '{FIT_OUTPUT}')")
        _refuse_unsupported(f"output '{output.name}'", output.parameters)
    return list(dict.fromkeys(output.name for output in request.outputs)) or list(OUTPUTS)


def payload_of(request: pb.ModelInferRequest) -> tuple[int, list[tuple[int, int]]]:
    """What a request carries, for admission: pixel bytes received and the (H, W) of each image its input
    shape claims (none when the shape claims more values than the bytes could hold)."""
    payload = sum(len(raw) for raw in request.raw_input_contents) + sum(t.contents.ByteSize() for t in request.inputs)
    shapes: list[tuple[int, int]] = []
    for tensor in request.inputs:
        dims = list(tensor.shape)
        if len(dims) == 4 and min(dims) > 0 and dims[0] * dims[1] * dims[2] * dims[3] <= payload:
            shapes += [(dims[2], dims[3])] * dims[0]
    return payload, shapes


def decode_request(request: pb.ModelInferRequest) -> DecodedRequest:
    """Images of a ModelInferRequest, or InvalidInput naming the input and what is wrong with it."""
    if len(request.inputs) != 1:
        got = ", ".join(f"'{t.name}'" for t in request.inputs) or "none"
        raise InvalidInput(f"inputs: the model takes exactly one input '{INPUT_NAME}' (got {got})")
    tensor = request.inputs[0]
    if tensor.name != INPUT_NAME:
        raise InvalidInput(f"inputs: unknown input '{tensor.name}' (the model's input is '{INPUT_NAME}')")
    if tensor.datatype not in DATATYPES:
        raise InvalidInput(f"input '{tensor.name}': datatype '{tensor.datatype}' is not supported "
                           f"(use {', '.join(DATATYPES)})")
    _refuse_unsupported(f"input '{tensor.name}'", tensor.parameters)
    outputs = _requested_outputs(request)
    n, height, width = _image_shape(tensor)
    count = n * height * width
    raw = len(request.raw_input_contents) > 0
    if raw:
        if len(request.raw_input_contents) != 1:
            raise InvalidInput(f"raw_input_contents has {len(request.raw_input_contents)} entries for 1 input")
        if any(len(getattr(tensor.contents, field)) for field in CONTENT_FIELDS):
            raise InvalidInput(f"input '{tensor.name}': values given both in contents and raw_input_contents")
        values = _raw_values(tensor, request.raw_input_contents[0], count)
    else:
        values = _typed_values(tensor, count)
    intensity = _intensity(tensor)
    pixels = height * width
    buffer = model_input_buffer([(height, width)] * n)
    images = [to_model_input(values[i * pixels:(i + 1) * pixels].reshape(height, width), intensity,
                             field=f"input '{tensor.name}', image {i}", out=None if buffer is None else buffer[i])
              for i in range(n)]
    dtype = DATATYPES[tensor.datatype][0]
    kind = parse_intensity(intensity, dtype, field=f"input '{tensor.name}'")
    return DecodedRequest(images=images, fit_queries=[FitQuery(dtype, kind)] * len(images), raw=raw, outputs=outputs)


def encode_response(request: pb.ModelInferRequest, decoded: DecodedRequest, scores: Sequence[float],
                    fits: Sequence[list[str]], *, model_name: str, model_version: str) -> pb.ModelInferResponse:
    """Scores as output 'score', FP32 [N, 1], and fit verdicts as output 'fit', BYTES [N, 1], in the order
    requested (both when none is): raw bytes if the request sent raw bytes (tritonclient reads outputs
    only from raw_output_contents; BYTES elements as a 4-byte little-endian length and the bytes), else
    typed contents."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request.id)
    values = np.asarray(scores, dtype="<f4").reshape(-1, 1)
    verdicts = [",".join(reasons).encode() for reasons in fits]
    for name in decoded.outputs:
        if name == OUTPUT_NAME:
            output = response.outputs.add(name=name, datatype="FP32", shape=list(values.shape))
            if decoded.raw:
                response.raw_output_contents.append(values.tobytes())
            else:
                output.contents.fp32_contents.extend(values.ravel().tolist())
            continue
        output = response.outputs.add(name=name, datatype="BYTES", shape=[len(verdicts), 1])
        if decoded.raw:
            response.raw_output_contents.append(b"".join(struct.pack("<I", len(v)) + v for v in verdicts))
        else:
            output.contents.bytes_contents.extend(verdicts)
    return response
