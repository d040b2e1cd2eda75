"""The MLServer peer: a custom MLModel that runs the bundle's ONNX file with onnxruntime.

There is no `mlserver-onnx` runtime on PyPI, so this is how MLServer users serve an ONNX model. The
bench copies this file into the MLServer model folder it writes (model-settings.json names the class)
and runs it with MLServer's own Python (`.venv-mlserver`, see docs/benchmarks.md); it never runs in
stedq's environment. Input "image" FP32 [N, 1, 224, 224] in [0, 1]; output "score" FP32 [N, 1].
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxQualityModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("STEDQ_BENCH_INTRA_OP_THREADS", "0"))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        if os.environ.get("STEDQ_BENCH_DEVICE", "cpu") == "cpu":
            providers = ["CPUExecutionProvider"]
        self._session = ort.InferenceSession(str(self.settings.parameters.uri), options, providers=providers)
        self._input = self._session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        batch = np.ascontiguousarray(NumpyCodec.decode_input(payload.inputs[0]), dtype=np.float32)
        (scores,) = self._session.run(None, {self._input: batch.reshape(-1, *batch.shape[-3:])})
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output("score", scores.astype(np.float32))])
