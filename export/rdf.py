"""bioimage.io-style model description beside the bundle, so the model is usable outside stedq.

rdf.yaml (model spec 0.5) points at model.onnx, describes the input axes and value range, and ships a
test input/output pair (the spec requires one to check a runtime reproduces the model) and a model
card (README.md). Normalization is inside the graph, so the only preprocessing is the dtype cast.
The test input is a typical test-split image when the export has test images.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import yaml

from stedq.bundle import VARIANT_FILES, Manifest
from stedq.training.model import INPUT_SIZE

RDF_NAME = "rdf.yaml"
CARD_NAME = "README.md"
TEST_INPUT = "test_input.npy"
TEST_OUTPUT = "test_output.npy"
RDF_FILES = (RDF_NAME, CARD_NAME, TEST_INPUT, TEST_OUTPUT)
FORMAT_VERSION = "0.5.4"
PAPER = ("Robitaille, L.-É., Durand, A., Gardner, M.-A., Gagné, C., De Koninck, P., Lavoie-Cardinal, F. "
         "Learning to Become an Expert: Deep Networks Applied To Super-Resolution Microscopy. IAAI 2018.")
PAPER_URL = "https://arxiv.org/abs/1803.10806"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _test_image(seed: int = 0) -> np.ndarray:
    """A fixed, structured test input: blurred random filaments (a real image is not needed to check
    that a runtime reproduces the model's output)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((INPUT_SIZE, INPUT_SIZE), np.float32)
    for _ in range(12):
        x, y = rng.uniform(0, INPUT_SIZE, 2)
        angle = rng.uniform(0, np.pi)
        for t in np.linspace(-80, 80, 320):
            i, j = int(y + t * np.sin(angle)), int(x + t * np.cos(angle))
            if 0 <= i < INPUT_SIZE and 0 <= j < INPUT_SIZE:
                image[i, j] += 1.0
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    image = np.apply_along_axis(np.convolve, 0, image, kernel, mode="same")
    image = np.apply_along_axis(np.convolve, 1, image, kernel, mode="same")
    image = image / image.max() * 0.8 + rng.poisson(3, image.shape) / 100
    return np.clip(image, 0, 1).astype(np.float32)


def _numbers(values: dict) -> str:
    shown = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(shown) or "none recorded"


def _transform(manifest: Manifest) -> str:
    if manifest.normalization.transform == "log":
        return "The graph takes log(1 + counts) first (the network was trained on it). "
    return ""


def _gates(manifest: Manifest) -> str:
    lines = []
    for variant, gate in (manifest.metrics.get("variants") or {}).items():
        where = f", layers {gate['placement']}" if gate.get("placement") else ""
        verdict = "written" if gate.get("passed") else f"not written ({gate.get('reason')})"
        lines.append(f"- {variant}{where}: mean |Δscore| {gate['mean_abs_diff']:.4f}, max {gate['max_abs_diff']:.4f}, "
                     f"Spearman {gate['spearman']:.4f} on {gate['n_images']} test images: {verdict}")
    return "\n".join(lines) or "- no variants were built (no test images)"


def _card(manifest: Manifest) -> str:
    placeholder = manifest.training.get("placeholder")
    warning = f"\n**Placeholder model: {placeholder}.**\n" if placeholder else ""
    data = manifest.training.get("data", {})
    return f"""# {manifest.name} {manifest.version}: STED image quality (QualityNet)
{warning}
Scores a 224×224 STED microscopy image for quality in [0, 1], the way an expert would
(QualityNet, {PAPER} {PAPER_URL}). Made by `stedq export` (stedq {manifest.stedq_version}) on {manifest.created}.

- Input `{manifest.input.name}`: float32 [batch, 1, 224, 224], photon counts / 65535 (stedq's pixel
  contract: the same counts give the same input whatever the file's dtype). {_transform(manifest)}The training set's normalization (mean {manifest.normalization.mean},
  std {manifest.normalization.std}) is applied inside the graph: do not normalize again.
- Output `{manifest.output.name}`: float32 [batch, 1], the quality score.
- Variants: {", ".join(f"{k} ({v})" for k, v in manifest.variants.items())}; all share the same I/O.
- Training data: {data.get("description", "unknown")} (hash {data.get("hash", "") or "none"}).
- Test metrics (FP32 PyTorch, test split): {_numbers(manifest.metrics.get("test") or {})}.
- Real images: trained on simulated images only; the synthetic validation split chose the epoch. Real
  STED images (`validation/real-dev`) are a release gate (`stedq evaluate --real`, docs/training.md),
  never used for training, for choosing among runs or for tuning.

## Validation

stedq checks every export: the FP32 graph reproduces PyTorch within 1e-5 at batch 1, 7, 32 and 64,
and each INT8/FP16 variant scores the test split like FP32 (mean |Δscore| <= 0.01, Spearman >= 0.99)
or is not written. This export (parity max |Δ| {max((manifest.metrics.get("parity_max_abs_diff") or {"-": 0}).values()):.2g}):

{_gates(manifest)}

Simulated STED images are made with pySTED (CC BY 4.0: credit its authors when you reuse them).
"""


def write_rdf(folder: Path, manifest: Manifest, fp32_session: ort.InferenceSession,
              fp32: onnx.ModelProto, sample: np.ndarray | None = None) -> None:
    """rdf.yaml, the model card and the test pair; `sample` (224, 224) in [0, 1] is the test input
    (default: a synthetic pattern)."""
    folder = Path(folder)
    image = _test_image() if sample is None else np.asarray(sample, np.float32)
    test_input = np.ascontiguousarray(image.reshape(1, 1, INPUT_SIZE, INPUT_SIZE))
    (test_output,) = fp32_session.run(None, {manifest.input.name: test_input})
    np.save(folder / TEST_INPUT, test_input)
    np.save(folder / TEST_OUTPUT, np.asarray(test_output, np.float32))
    (folder / CARD_NAME).write_text(_card(manifest))
    opset = max(o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx"))
    description = {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": f"STED image quality QualityNet {manifest.name}",
        "description": "Scores a 224x224 STED super-resolution microscopy image for quality in [0, 1], "
                       "as an expert would (Robitaille et al., IAAI 2018), exported by stedq.",
        # bioimage.io wants a PEP 440 version: 0.0.0-untrained -> 0.0.0+untrained
        "version": manifest.version.replace("-", "+", 1),
        "authors": [{"name": "stedq contributors"}],
        "cite": [{"text": PAPER, "url": PAPER_URL}],
        "license": "MIT",
        "documentation": CARD_NAME,
        "tags": ["STED", "super-resolution", "image-quality", "regression", "2d", "onnx"],
        "inputs": [{
            "id": manifest.input.name,
            "description": "STED image, photon counts / 65535; normalization is inside the model",
            "axes": [
                {"type": "batch"},
                {"type": "channel", "channel_names": ["intensity"]},
                {"type": "space", "id": "y", "size": INPUT_SIZE},
                {"type": "space", "id": "x", "size": INPUT_SIZE},
            ],
            "test_tensor": {"source": TEST_INPUT, "sha256": _sha256(folder / TEST_INPUT)},
            "data": {"type": "float32", "range": [0.0, 1.0]},
            "preprocessing": [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}],
        }],
        "outputs": [{
            "id": manifest.output.name,
            "description": "quality score in [0, 1]",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["quality"]}],
            "test_tensor": {"source": TEST_OUTPUT, "sha256": _sha256(folder / TEST_OUTPUT)},
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "weights": {"onnx": {"source": VARIANT_FILES["fp32"], "sha256": _sha256(folder / VARIANT_FILES["fp32"]),
                             "opset_version": opset}},
        "config": {"stedq": {"manifest": "manifest.json",
                             "normalization": manifest.normalization.model_dump()}},
    }
    (folder / RDF_NAME).write_text(yaml.safe_dump(description, sort_keys=False, allow_unicode=True))
