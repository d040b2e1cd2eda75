"""`stedq export --triton DIR`: a bundle as a Triton Inference Server model repository.

    DIR/<name>/config.pbtxt      platform onnxruntime_onnx, batching, I/O read from the ONNX graph
    DIR/<name>/1/model.onnx      the bundle's FP32 graph (normalization inside, as stedq serves it)

Triton versions are integers: the bundle's version string goes into the config's parameters
(`stedq_version`), and the folder is version 1. The config states what stedq does: the same maximum
batch and a dynamic batcher with the same queue delay (stedq.settings defaults). Inputs are what the
graph takes: FP32 on the model scale (photon counts / 65535); Triton does not apply stedq's pixel
contract, so integer counts must be divided by 65535 by the client.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from stedq.bundle import read_manifest, variant_path
from stedq.settings import Settings

ONNX_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16"}


def _tensor(node) -> str:
    """One input/output entry: the graph's name, type and dims without the batch axis."""
    if node.type not in ONNX_TYPES:
        raise ValueError(f"tensor {node.name!r}: ONNX type {node.type} has no Triton datatype here")
    dims = ", ".join(str(d) for d in node.shape[1:])
    return f'  {{\n    name: "{node.name}"\n    data_type: {ONNX_TYPES[node.type]}\n    dims: [ {dims} ]\n  }}'


def config_text(name: str, version: str, graph: Path, max_batch_size: int, queue_delay_us: int) -> str:
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    inputs = ",\n".join(_tensor(node) for node in session.get_inputs())
    outputs = ",\n".join(_tensor(node) for node in session.get_outputs())
    return f'''name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
version_policy: {{ latest: {{ num_versions: 1 }} }}
input [
{inputs}
]
output [
{outputs}
]
dynamic_batching {{
  max_queue_delay_microseconds: {queue_delay_us}
}}
instance_group [ {{ kind: KIND_AUTO }} ]
parameters {{
  key: "stedq_version"
  value: {{ string_value: "{version}" }}
}}
'''


def write_triton_repository(bundle: Path, out: Path) -> Path:
    """Write DIR/<name>/{config.pbtxt, 1/model.onnx} for `bundle`; returns the model folder."""
    manifest = read_manifest(bundle)
    defaults = Settings()
    graph = variant_path(bundle, manifest, "fp32")
    model_dir = Path(out) / manifest.name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(graph, model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(config_text(
        manifest.name, manifest.version, model_dir / "1" / "model.onnx", defaults.max_batch_size,
        round(defaults.max_queue_delay_ms * 1000)))
    return model_dir
