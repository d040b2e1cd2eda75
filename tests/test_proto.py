"""The generated protobuf modules are built from proto/ by the build (setup.py). These tests fail when
the installed modules are stale (a .proto changed without reinstalling) or the KServe v2 wire format
drifts from tritonclient's."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

GENERATED = {
    "stedq/v1/quality.proto": "stedq/v1/quality_pb2.py",
    "stedq/kserve/grpc_service.proto": "stedq/kserve/grpc_service_pb2.py",
    "stedq/kserve/model_config.proto": "stedq/kserve/model_config_pb2.py",
}


@pytest.mark.parametrize("proto, module", GENERATED.items())
def test_generated_code_is_fresh(proto, module, tmp_path):
    protoc = pytest.importorskip("grpc_tools.protoc")
    include = Path(protoc.__file__).parent / "_proto"
    assert protoc.main(["grpc_tools.protoc", f"-I{REPO_ROOT / 'proto'}", f"-I{include}",
                        f"--python_out={tmp_path}", str(REPO_ROOT / "proto" / proto)]) == 0
    fresh = (tmp_path / module).read_text()
    installed = (REPO_ROOT / module).read_text()
    assert fresh == installed, f"{module} is stale: reinstall (pip install -e .) to regenerate from {proto}"


DESCRIBE = """
import json, sys
def fields(desc, prefix=""):
    out = {}
    messages = desc.message_types_by_name.values() if hasattr(desc, "message_types_by_name") else desc.nested_types
    for m in messages:
        out[prefix + m.name] = {f.name: [f.number, f.type, f.is_repeated] for f in m.fields}
        out.update(fields(m, prefix + m.name + "."))
    return out
if sys.argv[1] == "tritonclient":
    from tritonclient.grpc import model_config_pb2 as config, service_pb2 as module
else:
    from stedq.kserve import grpc_service_pb2 as module, model_config_pb2 as config
methods = {m.name: [m.input_type.full_name, m.output_type.full_name]
           for m in module.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
enums = {e.name: {v.name: v.number for v in e.values} for e in config.DESCRIPTOR.enum_types_by_name.values()}
print(json.dumps({"messages": {**fields(module.DESCRIPTOR), **fields(config.DESCRIPTOR)}, "methods": methods,
                  "enums": enums}))
"""


def _describe(which: str) -> dict:
    # Separate processes: both register the `inference` package in protobuf's descriptor pool.
    out = subprocess.run([sys.executable, "-c", DESCRIBE, which], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_kserve_v2_wire_format_matches_tritonclient():
    # find_spec of the top package imports nothing: importing tritonclient.grpc here would clash with
    # stedq.kserve in this process (duplicate 'inference' symbols) and break every later server test
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    ours, theirs = _describe("stedq"), _describe("tritonclient")
    for name, fields in ours["messages"].items():
        assert name in theirs["messages"], f"message {name} unknown to tritonclient"
        for field, spec in fields.items():
            assert theirs["messages"][name].get(field) == spec, f"{name}.{field}"
    for method, types in ours["methods"].items():
        assert theirs["methods"][method] == types, method
    for enum, values in ours["enums"].items():
        assert values.items() <= theirs["enums"][enum].items(), enum
    assert {"ModelConfig", "ModelStatistics"} <= set(ours["methods"])
