"""INT8 placement on this CPU's onnxruntime: with ReLU quantized too, a QualityNet runs INT8 from its
first convolution to its head (one Quantize at the input, one Dequantize before the sigmoid), which is
what scripts/int8_ceiling.py times; ELU has no INT8 kernel and needs a round trip per block."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from stedq.export.checkpoint import build_export_model, untrained_checkpoint
from stedq.export.errors import ExportError
from stedq.export.onnx_graph import export_onnx
from stedq.export.variants import RELU_INT8_OPS, quantize_int8
from stedq.training.model import NormalizedQualityNet, QualityNet


def optimized_ops(model: onnx.ModelProto, tmp_path) -> Counter:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return Counter(node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)


@pytest.fixture(scope="module")
def relu_graph():
    """A ReLU QualityNet's FP32 graph (seeded random weights: speed and placement do not depend on them)
    and photon-count-like calibration images."""
    torch.manual_seed(0)
    fp32 = export_onnx(NormalizedQualityNet(QualityNet(activation="relu"), mean=0.0003, std=0.0005).eval())
    return fp32, (np.random.default_rng(0).poisson(10, (16, 224, 224)) / 65535).astype(np.float32)


def test_relu_network_runs_int8_end_to_end(relu_graph, tmp_path):
    fp32, calibration = relu_graph
    ops = optimized_ops(quantize_int8(fp32, calibration, "all", also_quantize=RELU_INT8_OPS), tmp_path)
    assert ops["QLinearConv"] == 6 and ops["QGemm"] == 3, ops
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1, ops
    assert "Relu" not in ops and "Conv" not in ops, ops
    # Without ReLU and max-pooling quantized, every block goes back to float and again to INT8.
    assert optimized_ops(quantize_int8(fp32, calibration, "all"), tmp_path)["DequantizeLinear"] >= 6


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        QualityNet(activation="gelu")


def test_checkpoint_activation_reaches_the_exported_graph():
    checkpoint = untrained_checkpoint()
    checkpoint["config"] = {"activation": "relu"}
    ops = {node.op_type for node in export_onnx(build_export_model(checkpoint)).graph.node}
    assert "Relu" in ops and "Elu" not in ops, ops
    checkpoint["config"] = {"activation": "gelu"}
    with pytest.raises(ExportError, match="unknown activation 'gelu'"):
        build_export_model(checkpoint)


def test_placement_keeps_the_early_blocks_float(relu_graph, tmp_path):
    fp32, calibration = relu_graph
    ops = optimized_ops(quantize_int8(fp32, calibration, "conv5-6", also_quantize=RELU_INT8_OPS), tmp_path)
    assert ops["QLinearConv"] == 2 and ops["QuantizeLinear"] == 1, ops   # one entry into INT8, at conv 5
