"""Reduced-precision variants of the FP32 graph: INT8 (static QDQ quantization) and FP16.

Both keep the FP32 model's I/O (float32 image in, float32 score out), so the server and clients
never see the difference; whether a variant is good enough is decided by stedq.export.gate.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from stedq.export.errors import ExportError

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 16


class _ImageReader:
    """onnxruntime's CalibrationDataReader protocol over an in-memory image array."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int = CALIBRATION_BATCH):
        images = np.asarray(images, np.float32)
        self.batches = [{input_name: np.ascontiguousarray(images[i:i + batch_size, None])}
                        for i in range(0, len(images), batch_size)]
        self.index = 0

    def get_next(self):
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return self.batches[self.index - 1]

    def rewind(self):
        self.index = 0


# Where INT8 goes, tried in this order until one passes the accuracy gate: "convK-6" quantizes
# convolutions K..6 and keeps the earlier ones FP32; the fully connected head (0.4 % of the
# multiply-adds) always stays FP32. The early layers see the widest activation ranges (dim and bright
# images differ by orders of magnitude), where one per-tensor 8-bit scale loses the most (measured;
# see docs/export.md).
INT8_PLACEMENTS: dict[str, int] = {f"conv{k}-6": k - 1 for k in range(2, 7)}   # value: convs kept FP32
# "all" first: every Conv and Gemm (2.2x FP32 here, scripts/int8_ceiling.py); a network trained on log(1 + counts)
# (--input-transform log) passes the gate with it, the paper's linear input does not.
DEFAULT_INT8_PLACEMENTS = ("all", "conv2-6", "conv3-6", "conv4-6", "conv5-6")
# A ReLU network (QualityNet(activation="relu")) quantizes these too: ReLU then folds into the convolution's
# output scale and max-pooling runs on INT8 data, so no block pays a Dequantize/Quantize round trip.
RELU_INT8_OPS = ("Relu", "MaxPool")


def quantize_int8(fp32: onnx.ModelProto, calibration_images: np.ndarray, placement: str = "conv2-6", *,
                  method: str = "minmax", also_quantize: tuple[str, ...] = ()) -> onnx.ModelProto:
    """Static QDQ quantization (U8 activations, S8 per-channel weights) calibrated on `calibration_images`
    (N, H, W); `placement` (INT8_PLACEMENTS) says which convs are quantized, "all" quantizes every Conv
    and Gemm; `also_quantize` adds op types (e.g. "Relu", "MaxPool") so that they run on INT8 data too.

    The quantized convs run as QLinearConv in onnxruntime's CPU provider. ELU has no quantized kernel,
    so each block pays a DequantizeLinear/QuantizeLinear round trip around it.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration_images) == 0:
        raise ExportError("INT8: no calibration images")
    if placement != "all" and placement not in INT8_PLACEMENTS:
        raise ExportError(f"INT8: unknown placement {placement!r} (choose from all, {', '.join(INT8_PLACEMENTS)})")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="stedq-int8-") as tmp:
        src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(fp32, src)
        # Shape inference and graph optimization first, as onnxruntime's quantization guide advises.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(pre).graph
        op_types = ["Conv", "Gemm"] if placement == "all" else ["Conv"]
        op_types += list(also_quantize)
        # "convK-6": every node of those op types before the K-th convolution stays FP32.
        conv_positions = [i for i, node in enumerate(graph.node) if node.op_type == "Conv"]
        first = 0 if placement == "all" else conv_positions[INT8_PLACEMENTS[placement]]
        exclude = [node.name for node in graph.node[:first] if node.op_type in op_types]
        reader = _ImageReader(fp32.graph.input[0].name, calibration_images)
        try:
            quantize_static(
                str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=methods[method], op_types_to_quantize=op_types, nodes_to_exclude=exclude,
                calibration_providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ExportError(f"INT8 quantization failed: {type(exc).__name__}: {exc}") from exc
        model = onnx.load(dst)
    _restore_graph_docs(fp32, model)
    return model


def convert_fp16(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """float16 weights and activations inside, float32 input and output (keep_io_types)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(fp32)
    try:
        model = convert_float_to_float16(copy, keep_io_types=True)
    except Exception as exc:
        raise ExportError(f"FP16 conversion failed: {type(exc).__name__}: {exc}") from exc
    _restore_graph_docs(fp32, model)
    return model


def _restore_graph_docs(source: onnx.ModelProto, target: onnx.ModelProto) -> None:
    target.producer_name = source.producer_name
    target.doc_string = source.doc_string
    for dst, src in zip(target.graph.input, source.graph.input, strict=False):
        dst.doc_string = src.doc_string
    for dst, src in zip(target.graph.output, source.graph.output, strict=False):
        dst.doc_string = src.doc_string
