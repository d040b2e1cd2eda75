"""Helpers for the server tests: a model bundle, free ports, a server running in a background thread."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import stedq
from stedq.bundle import MANIFEST_NAME

EXPORT_SCRIPT = """
import sys, torch
from pathlib import Path
from stedq.bundle import Manifest, Normalization, write_manifest
from stedq.training.model import NormalizedQualityNet, QualityNet
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(int(sys.argv[2]))
net = QualityNet()
# spread the batch-norm statistics so that random weights still give scores that differ per image
for module in net.modules():
    if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
        module.running_var.uniform_(0.5, 2.0)
model = NormalizedQualityNet(net, mean=0.1, std=0.2).eval()
torch.onnx.export(model, torch.rand(2, 1, 224, 224), out / "model.onnx", input_names=["image"],
                  output_names=["score"], dynamic_axes={"image": {0: "n"}, "score": {0: "n"}},
                  opset_version=17, dynamo=False)
write_manifest(out, Manifest(name="quality", version=sys.argv[3],
                             normalization=Normalization(mean=[0.1], std=[0.2])))
"""


def export_test_bundle(out: Path, *, version: str = "test-1", seed: int = 0) -> Path:
    """A real bundle exported with torch from stedq.training.model (random weights), in a subprocess
    so that the test process itself never imports torch."""
    subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, str(out), str(seed), version], check=True,
                   capture_output=True, text=True, timeout=300)
    return out


def shipped_bundle() -> Path | None:
    path = stedq.DEFAULT_MODEL_DIR
    return path if (path / MANIFEST_NAME).is_file() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_version(bundle: Path) -> str:
    return json.loads((bundle / MANIFEST_NAME).read_text())["version"]
