"""The onnxruntime session: loads a model bundle (or a bare .onnx file) and scores batches.

`Engine.run(batch)` takes float32 (N, 1, H, W) images in [0, 1] (normalization is inside the graph)
and returns (N,) scores. It knows nothing about gRPC or batching. Loading is plain blocking code:
the server calls it off the event loop (at start-up and on reload). It lives in the core package
because the server and in-process tools (`stedq evaluate --real`, bench) load bundles the same way;
onnxruntime comes with the `serve` extra.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

import stedq
from stedq.bundle import BundleError, Manifest, Normalization, read_manifest, variant_path
from stedq.fit import FitStatistics

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class EngineError(RuntimeError):
    """The model cannot be served as configured; the message says why and what to do."""


@dataclass(frozen=True)
class EngineInfo:
    name: str
    version: str
    path: Path                     # the .onnx file in use
    variant: str                   # fp32 | int8 | fp16
    input_height: int
    input_width: int
    mean: list[float]
    std: list[float]
    providers: list[str]           # onnxruntime providers actually in use, in priority order
    device: str                    # cpu | cuda
    note: str = ""                 # e.g. why `--device auto` fell back to the CPU
    metadata: dict[str, str] = field(default_factory=dict)
    fit: FitStatistics | None = None   # what the training images span (None: the bundle does not say)
    transform: str = "linear"          # the input transform inside the graph (stedq.bundle.Normalization)


def resolve_model_path(model: Path | None) -> Path:
    """The bundle to serve: `model`, or the bundled default model when none is given."""
    path = Path(model) if model is not None else stedq.DEFAULT_MODEL_DIR
    if not path.exists():
        if model is None:
            raise EngineError(f"the bundled default model is missing ({path}); pass --model BUNDLE_DIR "
                              f"(a folder made by `stedq export`) or a .onnx file")
        raise EngineError(f"--model {path}: no such file or folder")
    return path


def watched_files(model: Path) -> list[Path]:
    """Files whose change means a new model (manifest and every variant of a bundle, or the .onnx)."""
    model = Path(model)
    if model.is_dir():
        return sorted(p for p in model.iterdir() if p.suffix in {".json", ".onnx"})
    return [model]


def _choose_providers(device: str) -> tuple[list[str], str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU], ""
    if CUDA in available:
        return [CUDA, CPU], ""
    if device == "cuda":
        raise EngineError(f"--device cuda: this onnxruntime ({ort.__version__}, {ort.get_device()}) has no "
                          f"CUDAExecutionProvider (available: {', '.join(available)}); install onnxruntime-gpu "
                          f"on a machine with an NVIDIA GPU, or use --device cpu / auto")
    return [CPU], "--device auto: no CUDAExecutionProvider in this onnxruntime, running on the CPU"


def _metadata_strings(values: dict[str, Any]) -> dict[str, str]:
    return {key: value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            for key, value in values.items()}


def _manifest_from_onnx_props(path: Path, props: dict[str, str]) -> Manifest:
    """A bare .onnx file describes itself in metadata_props: either a whole manifest as JSON under
    'stedq.manifest' / 'manifest', or 'name', 'version', 'normalization_mean', 'normalization_std'."""
    for key in ("stedq.manifest", "stedq_manifest", "manifest"):
        if key in props:
            try:
                return Manifest.model_validate_json(props[key])
            except ValueError as exc:
                raise EngineError(f"{path}: metadata_props[{key!r}] is not a valid manifest: {exc}") from None

    def floats(*keys: str) -> list[float]:
        for key in keys:
            if key in props:
                try:
                    value = json.loads(props[key])
                except json.JSONDecodeError:
                    raise EngineError(f"{path}: metadata_props[{key!r}] = {props[key]!r} is not JSON") from None
                return [float(v) for v in (value if isinstance(value, list) else [value])]
        return []

    return Manifest(name=props.get("name", path.stem), version=props.get("version", "unknown"),
                    normalization=Normalization(mean=floats("normalization_mean", "mean"),
                                                std=floats("normalization_std", "std")))


# On the CPU, `--variant auto` serves a bundle's INT8 only where its export measured it at least this much
# faster than FP32 (manifest metrics.cpu_images_per_s_batch32); a bundle has an INT8 file only if it
# passed the export's accuracy gate. (1.1.0's INT8, convolutions 5-6 only: 1.09x, so FP32 serves.)
INT8_AUTO_MIN_SPEEDUP = 1.5


def auto_variant(manifest: Manifest, on_cuda: bool) -> str:
    """What `--variant auto` serves: FP16 on a GPU (it pays off there only), INT8 on the CPU where it is
    gated and clearly faster, else FP32."""
    if on_cuda:
        return "fp16" if "fp16" in manifest.variants else "fp32"
    speed = manifest.metrics.get("cpu_images_per_s_batch32") or {}
    try:
        faster = float(speed["int8"]) >= INT8_AUTO_MIN_SPEEDUP * float(speed["fp32"]) > 0
    except (KeyError, TypeError, ValueError):
        faster = False
    return "int8" if faster and "int8" in manifest.variants else "fp32"


class Engine:
    """One onnxruntime session for one model file; immutable once built (reload builds a new one)."""

    def __init__(self, model: Path | None = None, *, device: str = "auto", variant: str = "auto",
                 intra_op_threads: int = 0, inter_op_threads: int = 0):
        source = resolve_model_path(model)
        providers, note = _choose_providers(device)
        on_cuda = providers[0] == CUDA
        if source.is_dir():
            try:
                manifest = read_manifest(source)
                chosen = auto_variant(manifest, on_cuda) if variant == "auto" else variant
                onnx_path = variant_path(source, manifest, chosen)
            except BundleError as exc:
                raise EngineError(str(exc)) from None
            if not onnx_path.is_file():
                raise EngineError(f"{source}: the manifest lists {onnx_path.name} for variant {chosen!r}, "
                                  f"but the file is missing")
        else:
            if source.suffix != ".onnx":
                raise EngineError(f"--model {source}: expected a bundle folder or a .onnx file")
            manifest, chosen, onnx_path = None, ("fp32" if variant == "auto" else variant), source

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise EngineError(f"{onnx_path}: onnxruntime cannot load it: {exc}") from None
        in_use = self.session.get_providers()
        if on_cuda and CUDA not in in_use:  # the CUDA provider exists but failed to start (drivers, libs)
            if device == "cuda":
                raise EngineError(f"--device cuda: onnxruntime could not start the CUDA provider for "
                                  f"{onnx_path} (in use: {', '.join(in_use)}); check the driver and CUDA libraries")
            note = "--device auto: the CUDA provider failed to start, running on the CPU"
        if manifest is None:
            manifest = _manifest_from_onnx_props(onnx_path, self.session.get_modelmeta().custom_metadata_map)

        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(f"{onnx_path}: expected one input and one output, found "
                              f"{len(inputs)} and {len(outputs)}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        shape = inputs[0].shape
        height, width = manifest.input_size
        if len(shape) != 4 or shape[1] != 1 or (isinstance(shape[2], int) and shape[2] != height) \
                or (isinstance(shape[3], int) and shape[3] != width):
            raise EngineError(f"{onnx_path}: input {self.input_name!r} has shape {shape}, expected "
                              f"[N, 1, {height}, {width}]")
        metadata = _metadata_strings({"training": manifest.training, "metrics": manifest.metrics,
                                      "created": manifest.created, "stedq_version": manifest.stedq_version,
                                      "fit": manifest.fit})
        self.info = EngineInfo(
            name=manifest.name, version=manifest.version, path=onnx_path, variant=chosen,
            input_height=height, input_width=width, mean=list(manifest.normalization.mean),
            std=list(manifest.normalization.std), providers=in_use,
            device="cuda" if CUDA in in_use else "cpu", note=note,
            metadata={k: v for k, v in metadata.items() if v not in ("", "{}")},
            fit=FitStatistics.from_dict(manifest.fit) if manifest.fit else None,
            transform=manifest.normalization.transform)
        if note:
            log.warning(note)

    @classmethod
    def from_settings(cls, settings: Any, model: Path | None = None) -> Engine:
        return cls(model if model is not None else settings.model, device=settings.device,
                   variant=settings.variant, intra_op_threads=settings.intra_op_threads,
                   inter_op_threads=settings.inter_op_threads)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 1, H, W) in [0, 1] -> float32 (N,) scores."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        (scores,) = self.session.run([self.output_name], {self.input_name: batch})
        return np.asarray(scores, dtype=np.float32).reshape(len(batch))

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> float:
        """Run each batch size once (first runs allocate and pick kernels); returns the seconds spent."""
        start = time.perf_counter()
        for n in batch_sizes:
            self.run(np.full((n, 1, self.info.input_height, self.info.input_width), 0.5, np.float32))
        return time.perf_counter() - start
