"""NormalizedQualityNet -> ONNX ModelProto (torch.onnx dynamo exporter, dynamic batch axis)."""

from __future__ import annotations

import logging
import warnings

import onnx
import torch

from stedq.export.errors import ExportError
from stedq.training.model import INPUT_SIZE, NormalizedQualityNet

INPUT_NAME = "image"
OUTPUT_NAME = "score"
DEFAULT_OPSET = 20   # the dynamo exporter's own default in torch 2.13; onnxruntime >= 1.17 runs it

INPUT_DOC = (f"STED image(s), float32 [N, 1, {INPUT_SIZE}, {INPUT_SIZE}], rescaled to [0, 1] "
             f"(uint8 / 255, uint16 / 65535); the training set's mean/std is applied inside the graph")
OUTPUT_DOC = "quality score in [0, 1], float32 [N, 1]"


def export_onnx(model: NormalizedQualityNet, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """One self-contained ModelProto (weights inline) with a dynamic batch axis named 'batch'."""
    example = torch.rand(2, 1, INPUT_SIZE, INPUT_SIZE)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter reports its steps through warnings and logging; they are noise for our users.
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model.eval(), (example,), dynamo=True, verbose=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes={"image": {0: batch}}, optimize=True, external_data=False)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    proto = program.model_proto
    proto.producer_name = "stedq"
    proto.doc_string = "QualityNet (Robitaille et al., IAAI 2018): STED image quality score"
    proto.graph.input[0].doc_string = INPUT_DOC
    proto.graph.output[0].doc_string = OUTPUT_DOC
    check_model(proto)
    return proto


def check_model(proto: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from None
