"""Helpers for the server tests: a model bundle, free ports, a server running in a background thread."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

import stedq
from stedq.bundle import MANIFEST_NAME, VARIANT_FILES, read_manifest, variant_path, write_manifest

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


# --- a model bundle for the tests: the shipped one when it exists, else one exported here (cached)
_BUNDLE: dict[str, Path] = {}


def model_bundle() -> Path:
    """The bundled default model once the export engineer ships it; until then a bundle exported from
    stedq.training.model with random weights (once per test session)."""
    shipped = shipped_bundle()
    if shipped is not None:
        return shipped
    if "exported" not in _BUNDLE:
        _BUNDLE["exported"] = export_test_bundle(Path(tempfile.mkdtemp(prefix="stedq-test-bundle-")))
    return _BUNDLE["exported"]


def copy_bundle(source: Path, target: Path, *, version: str | None = None) -> Path:
    """A copy of a bundle (its fp32 model and manifest), optionally with another version string."""
    manifest = read_manifest(source)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(variant_path(source, manifest, "fp32"), target / VARIANT_FILES["fp32"])
    manifest.variants = {"fp32": VARIANT_FILES["fp32"]}
    if version is not None:
        manifest.version = version
    write_manifest(target, manifest)
    return target


def reference_scores(bundle: Path, images: np.ndarray) -> np.ndarray:
    """Scores of float32 (N, H, W) images from a plain onnxruntime session (no stedq code)."""
    import onnxruntime as ort

    manifest = read_manifest(bundle)
    session = ort.InferenceSession(str(variant_path(bundle, manifest, "fp32")), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {session.get_inputs()[0].name: images[:, None].astype(np.float32)})
    return scores.reshape(-1)


def pb_image(pixels: np.ndarray):
    """A stedq.v1.Image from a uint8 / uint16 / int16 / uint32 / float32 (H, W) array."""
    from stedq.v1 import quality_pb2 as pb

    dtype = {np.dtype(np.uint8): pb.DTYPE_UINT8, np.dtype(np.uint16): pb.DTYPE_UINT16,
             np.dtype(np.int16): pb.DTYPE_INT16, np.dtype(np.uint32): pb.DTYPE_UINT32,
             np.dtype(np.float32): pb.DTYPE_FLOAT32}[pixels.dtype]
    return pb.Image(data=np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes(),
                    dtype=dtype, height=pixels.shape[0], width=pixels.shape[1])


def random_images(n: int, seed: int = 0, size: tuple[int, int] = (224, 224)) -> np.ndarray:
    """float32 (n, H, W) model inputs that differ, so their scores differ: the built-in STED-like image
    (fibres with Poisson noise, photon counts / 65535) of seed `seed + i` at a brightness from 0.3 to 1.

    Structured on purpose: the shipped model scores an image with no structure (pixel noise) 0 by its
    structure factor, and images far brighter than photon counts are outside what it saw (docs/export.md).
    """
    from stedq.pixels import demo_image

    scale = np.linspace(0.3, 1.0, n, dtype=np.float32)
    images = [demo_image(max(size), seed=seed + i)[:size[0], :size[1]] * scale[i] for i in range(n)]
    return np.stack(images).astype(np.float32)


def scrape(port: int) -> dict[str, list]:
    """A real scrape of /metrics parsed by prometheus_client: {sample name: [(labels, value), ...]}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def sample_value(samples: dict[str, list], name: str, **labels: str) -> float:
    return sum(value for got, value in samples.get(name, []) if all(got.get(k) == v for k, v in labels.items()))


def settled_value(port: int, name: str, reaches: float, timeout: float = 10.0, **labels: str) -> float:
    """The sample's value once it reaches `reaches` (or after `timeout` s, whatever it is then).

    An error status (context.abort) goes out to the client before the server's interceptor counts the
    call, so a scrape made the moment the client sees the error may not hold it yet.
    """
    end = time.monotonic() + timeout
    while True:
        value = sample_value(scrape(port), name, **labels)
        if value >= reaches or time.monotonic() > end:
            return value
        time.sleep(0.02)


class ThreadedServer:
    """A real StedqServer on 127.0.0.1 (random free ports), its event loop in a background thread."""

    def __init__(self, settings, *, warm: bool = True):
        from stedq.server.app import StedqServer

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stedq-test-server", daemon=True)
        self.thread.start()
        self.server = self.call(self._make(StedqServer, settings))
        self.call(self.server.open())
        if warm:
            self.call(self.server.warm_up())
        self.address = f"127.0.0.1:{self.server.port}"

    @staticmethod
    async def _make(cls, settings):
        return cls(settings)  # built inside the loop (asyncio primitives bind to it)

    def call(self, coroutine, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, grace: float = 5.0) -> None:
        async def stop():
            await self.server.stop(grace)
        try:
            self.call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def server_settings(bundle: Path, **overrides):
    """Small, fast server settings for tests: random ports, small batches, 1 inference thread."""
    from stedq.settings import Settings

    # FP32 unless a test asks otherwise: tests compare the server with FP32 onnxruntime (reference_scores);
    # the shipped bundle's `auto` is INT8 on a CPU.
    values = dict(model=bundle, variant="fp32", host="127.0.0.1", port=0, metrics_port=0, max_batch_size=8,
                  max_queue_delay_ms=5.0, max_queue_size=64, intra_op_threads=1, watch_model=False,
                  grace_period_s=10.0)
    values.update(overrides)
    return Settings(**values)


class HeldEngine:
    """Swap into a running server's scorer: the real engine, but each batch waits in `run` until released,
    so tests that need a queue (deadlines, a full queue) hold the engine instead of racing it.

        with HeldEngine(server.server.scorer) as held:
            ...send; held.entered.wait(); ...; held.release.set()
    """

    def __init__(self, scorer):
        import copy
        import threading

        self.scorer, self.good = scorer, scorer.engine
        self.entered, self.release = threading.Event(), threading.Event()
        self.held = copy.copy(self.good)
        self.held.run = self._run

    def _run(self, batch):
        self.entered.set()
        if not self.release.wait(60):
            raise TimeoutError("HeldEngine was never released")
        return self.good.run(batch)

    def __enter__(self):
        self.scorer.swap(self.held)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.scorer.swap(self.good)
