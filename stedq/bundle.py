"""The model bundle: the folder `stedq export` writes and `stedq serve` reads.

    manifest.json      this file's `Manifest` (name, version, I/O, normalization, variants, provenance)
    model.onnx         FP32; input "image" float32 [N, 1, 224, 224] in [0, 1]; output "score" float32 [N, 1]
    model.int8.onnx    optional, same I/O (static QDQ quantization, for CPUs)
    model.fp16.onnx    optional, same I/O (float16 inside, float32 at the edges, for GPUs)
    rdf.yaml           bioimage.io-style description

Only the standard library and pydantic here: both the exporter (torch side) and the server (no torch)
import it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

MANIFEST_NAME = "manifest.json"
FORMAT = "stedq-bundle/1"
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}


class TensorSpec(BaseModel):
    name: str
    shape: list[int]          # -1 marks the dynamic batch axis
    dtype: str = "float32"


class Normalization(BaseModel):
    mean: list[float]
    std: list[float]
    # applied before mean/std, inside the graph too: "linear" (none) or "log" (log(1 + counts))
    transform: str = "linear"


class Manifest(BaseModel):
    format: str = FORMAT
    name: str = "quality"
    version: str
    input: TensorSpec = TensorSpec(name="image", shape=[-1, 1, 224, 224])
    output: TensorSpec = TensorSpec(name="score", shape=[-1, 1])
    input_range: list[float] = [0.0, 1.0]
    normalization: Normalization
    variants: dict[str, str] = Field(default_factory=lambda: {"fp32": VARIANT_FILES["fp32"]})
    training: dict[str, Any] = Field(default_factory=dict)    # data description and hash, config
    metrics: dict[str, Any] = Field(default_factory=dict)     # test-set metrics, variant accuracy
    fit: dict[str, Any] = Field(default_factory=dict)         # stedq.fit.FitStatistics of the training images
    stedq_version: str = ""
    created: str = ""                                         # ISO 8601, UTC

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input.shape[-2], self.input.shape[-1]


class BundleError(ValueError):
    """A bundle folder or file that cannot be used; the message names the path and the problem."""


def read_manifest(bundle_dir: Path) -> Manifest:
    path = Path(bundle_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: no manifest (is {bundle_dir} a model bundle made by `stedq export`?)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable manifest: {exc}") from None
    try:
        manifest = Manifest.model_validate(data)
    except ValueError as exc:
        raise BundleError(f"{path}: invalid manifest: {exc}") from None
    if manifest.format != FORMAT:
        raise BundleError(f"{path}: unsupported bundle format {manifest.format!r} (expected {FORMAT!r})")
    return manifest


def variant_path(bundle_dir: Path, manifest: Manifest, variant: str) -> Path:
    if variant not in manifest.variants:
        raise BundleError(f"{bundle_dir}: no {variant!r} variant (has: {', '.join(sorted(manifest.variants))})")
    return Path(bundle_dir) / manifest.variants[variant]


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; this is an ordinary file
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    path = Path(bundle_dir) / MANIFEST_NAME
    write_atomic(path, (manifest.model_dump_json(indent=2) + "\n").encode())
    return path


# --- the manifest inside each .onnx file (metadata_props), so a bare model file describes itself.
# The whole manifest is stored as JSON under MANIFEST_METADATA_KEY; a few fields are repeated as
# plain keys for tools that show metadata (Netron, onnxruntime's custom_metadata_map).
MANIFEST_METADATA_KEY = "stedq.manifest"


def manifest_to_metadata(manifest: Manifest, variant: str = "fp32") -> dict[str, str]:
    """metadata_props (all strings) for the `variant` file of a bundle described by `manifest`."""
    data = manifest.training.get("data", {}) if isinstance(manifest.training, dict) else {}
    return {
        MANIFEST_METADATA_KEY: manifest.model_dump_json(),
        "name": manifest.name,
        "version": manifest.version,
        "variant": variant,
        "input": f"{manifest.input.name} {manifest.input.dtype} {manifest.input.shape} "
                 f"in [{manifest.input_range[0]:g}, {manifest.input_range[1]:g}]",
        "output": f"{manifest.output.name} {manifest.output.dtype} {manifest.output.shape}",
        "normalization_mean": json.dumps(manifest.normalization.mean),
        "normalization_std": json.dumps(manifest.normalization.std),
        "input_transform": manifest.normalization.transform,
        "training_data": str(data.get("description", "")),
        "training_data_hash": str(data.get("hash", "")),
        "metrics": json.dumps(manifest.metrics, sort_keys=True),
        "stedq_version": manifest.stedq_version,
        "created": manifest.created,
    }


def manifest_from_metadata(metadata: dict[str, str], source: str = "model") -> Manifest:
    """The manifest stored in a model's metadata_props (e.g. onnxruntime's custom_metadata_map)."""
    if MANIFEST_METADATA_KEY not in metadata:
        raise BundleError(f"{source}: no {MANIFEST_METADATA_KEY!r} in its metadata (not exported by `stedq export`?)")
    try:
        return Manifest.model_validate_json(metadata[MANIFEST_METADATA_KEY])
    except ValueError as exc:
        raise BundleError(f"{source}: invalid {MANIFEST_METADATA_KEY!r} metadata: {exc}") from None
