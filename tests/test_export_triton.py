"""`stedq export --triton DIR`: the repository's config.pbtxt parses with Triton's own model-config
protobuf (tritonclient's model_config_pb2, in a subprocess: its `inference` protos clash with ours in one
process) and every field matches the ONNX graph it sits beside and what stedq serves."""

from __future__ import annotations

import json
import subprocess
import sys

import onnxruntime as ort
import pytest

import stedq
from stedq.cli import main
from stedq.settings import Settings

PARSE = """
import json, sys
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
config = text_format.Parse(open(sys.argv[1]).read(), model_config_pb2.ModelConfig())
print(json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)))
"""


def parse(path) -> dict:
    done = subprocess.run([sys.executable, "-c", PARSE, str(path)], capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise ValueError(done.stderr.strip().splitlines()[-1])
    return json.loads(done.stdout)


def test_the_bundled_model_as_a_triton_repository(tmp_path):
    assert main(["export", "--triton", str(tmp_path)]) == 0
    model_dir = tmp_path / "quality"
    config = parse(model_dir / "config.pbtxt")
    graph = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    defaults = Settings()
    assert config["name"] == "quality" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == defaults.max_batch_size
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == defaults.max_queue_delay_ms * 1000
    manifest = json.loads((stedq.DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert config["parameters"]["stedq_version"]["string_value"] == manifest["version"]
    for declared, node in [(config["input"][0], graph.get_inputs()[0]), (config["output"][0], graph.get_outputs()[0])]:
        assert declared["name"] == node.name and declared["data_type"] == "TYPE_FP32"
        assert [int(d) for d in declared["dims"]] == list(node.shape[1:])
    assert (model_dir / "1" / "model.onnx").read_bytes() == (stedq.DEFAULT_MODEL_DIR / "model.onnx").read_bytes()


def test_a_misspelled_field_does_not_parse(tmp_path):
    broken = tmp_path / "config.pbtxt"
    broken.write_text('name: "quality"\nplatform: "onnxruntime_onnx"\nmax_batch_sise: 32\n')
    with pytest.raises(ValueError, match="max_batch_sise"):
        parse(broken)
