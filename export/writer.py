"""Checkpoint -> model bundle folder (see stedq.bundle): export, gates, variants, manifest, rdf.yaml.

Everything is written into a hidden staging folder beside the output and moved into place only when
all of it succeeded, so an error never leaves a partial bundle (and a server watching the output
folder sees the old files or the new ones, never a mix of half-written files).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import stedq
from stedq.bundle import (
    MANIFEST_NAME,
    VARIANT_FILES,
    Manifest,
    Normalization,
    manifest_to_metadata,
    write_manifest,
)
from stedq.export import rdf
from stedq.export.checkpoint import build_export_model
from stedq.export.errors import ExportError
from stedq.export.gate import MAX_MEAN_ABS_DIFF, MIN_SPEARMAN, GateResult, accuracy_gate
from stedq.export.onnx_graph import DEFAULT_OPSET, export_onnx
from stedq.export.parity import PARITY_BATCH_SIZES, PARITY_TOLERANCE, check_parity
from stedq.export.runtime import cpu_session, images_per_second, score
from stedq.export.variants import DEFAULT_INT8_PLACEMENTS, RELU_INT8_OPS, convert_fp16, quantize_int8
from stedq.training.checkpoint import checkpoint_activation, checkpoint_factors

log = logging.getLogger(__name__)

# Why an FP16 variant is not written for a model whose scores carry a rule factor (keep_io_types casts the
# input to float16 before the factor reads it).
FP16_UNSAFE_FACTORS = {
    # counts a few apart at a bright peak merge into one plateau: clipping that is not there
    "saturation": "the saturation factor compares pixels with the image's maximum, which float16 cannot "
                  "resolve at bright peaks (use fp32 or int8)",
    # squares of centred counts / 65535 (1e-8 and below)
    "structure": "the structure factor's neighbour correlation squares pixel values that underflow float16 "
                 "(use fp32 or int8)",
}

# Files `stedq export` owns inside a bundle folder (stale ones are removed when re-exporting).
BUNDLE_FILES = (MANIFEST_NAME, *VARIANT_FILES.values(), *rdf.RDF_FILES)


@dataclass
class ExportOptions:
    name: str = "quality"
    version: str = "1.0.0"
    variants: tuple[str, ...] = ("int8", "fp16")        # besides fp32, which is always written
    opset: int = DEFAULT_OPSET
    parity_batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES
    parity_tolerance: float = PARITY_TOLERANCE
    max_mean_abs_diff: float = MAX_MEAN_ABS_DIFF
    min_spearman: float = MIN_SPEARMAN
    calibration_images: np.ndarray | None = None        # (N, 224, 224) in [0, 1], training split
    test_images: np.ndarray | None = None               # (N, 224, 224) in [0, 1], test split
    fit_images: np.ndarray | None = None                # training split, for the fit verdict's statistics
    fit_pixel_sizes_nm: np.ndarray | None = None        # the training split's pixel sizes, where recorded
    int8_placements: tuple[str, ...] = DEFAULT_INT8_PLACEMENTS   # tried in order, first to pass wins
    measure_speed: bool = False                         # images/s of each variant (batch 32, CPU)
    write_rdf: bool = True


@dataclass
class ExportReport:
    out: Path
    manifest: Manifest
    parity: dict[str, float]
    gates: dict[str, GateResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)    # variant -> why it was not written
    speed: dict[str, float] = field(default_factory=dict)    # variant -> images/s


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _staging_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    except OSError as exc:
        raise ExportError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


def _publish(staging: Path, out: Path) -> None:
    """Move the staged bundle into `out`: models first, the manifest last, then drop stale files."""
    # mkdtemp/mkstemp make owner-only files; a bundle is read by servers running as other users.
    staging.chmod(0o755)
    for path in staging.iterdir():
        path.chmod(0o644)
    if not out.exists():
        os.rename(staging, out)
        return
    if not os.access(out, os.W_OK):
        raise ExportError(f"--out {out}: the folder is not writable")
    names = sorted(p.name for p in staging.iterdir())
    names.sort(key=lambda name: name == MANIFEST_NAME)
    for name in names:
        os.replace(staging / name, out / name)
    for name in BUNDLE_FILES:
        if name not in names:
            (out / name).unlink(missing_ok=True)
    staging.rmdir()


def export_bundle(checkpoint: dict[str, Any], out: str | Path, options: ExportOptions | None = None) -> ExportReport:
    options = options or ExportOptions()
    out = Path(out)
    unknown = set(options.variants) - {"int8", "fp16"}
    if unknown:
        raise ExportError(f"unknown variant(s) {', '.join(sorted(unknown))} (choose from int8, fp16)")
    model = build_export_model(checkpoint)   # before touching the disk: bad checkpoints fail fast
    staging = _staging_dir(out)
    try:
        report = _export_into(staging, out, checkpoint, model, options)
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _export_into(staging: Path, out: Path, checkpoint: dict[str, Any], model, options: ExportOptions) -> ExportReport:
    log.info("exporting %s to ONNX (opset %d)", checkpoint.get("path", "checkpoint"), options.opset)
    models = {"fp32": export_onnx(model, options.opset)}
    sessions = {"fp32": cpu_session(models["fp32"].SerializeToString())}
    log.info("parity gate: batch sizes %s", ", ".join(map(str, options.parity_batch_sizes)))
    parity = check_parity(model, sessions["fp32"], options.parity_batch_sizes, options.parity_tolerance,
                          images=options.test_images)
    log.info("parity: max |ONNX - PyTorch| = %.3g", max(parity.values()))

    gates: dict[str, GateResult] = {}        # the variant's final verdict
    attempts: dict[str, list[GateResult]] = {}   # every INT8 placement tried
    skipped: dict[str, str] = {}
    test = options.test_images
    reference = score(sessions["fp32"], test, desc="fp32 on test split") if test is not None else None
    for variant in options.variants:
        if test is None or len(test) < 3:
            skipped[variant] = "no test images for the accuracy gate (give --data or --test-data)"
            continue
        if variant == "int8" and (options.calibration_images is None or len(options.calibration_images) == 0):
            skipped[variant] = "no calibration images (give --data or --calibration-data)"
            continue
        unsafe = [FP16_UNSAFE_FACTORS[name] for name, on in checkpoint_factors(checkpoint).items() if on]
        if variant == "fp16" and unsafe:
            skipped[variant] = unsafe[0]
            continue
        # INT8 tries its placements in order (fastest first) and keeps the first that passes.
        tries = options.int8_placements if variant == "int8" else ("",)
        for placement in tries:
            if variant == "int8":
                log.info("INT8 (%s): static QDQ quantization, calibrated on %d images", placement,
                         len(options.calibration_images))
                also = RELU_INT8_OPS if checkpoint_activation(checkpoint) == "relu" else ()
                candidate = quantize_int8(models["fp32"], options.calibration_images, placement, also_quantize=also)
            else:
                log.info("FP16: converting (float32 I/O kept)")
                candidate = convert_fp16(models["fp32"])
            session = cpu_session(candidate.SerializeToString())
            gate = accuracy_gate(variant, reference, score(session, test, desc=f"{variant} on test split"),
                                 options.max_mean_abs_diff, options.min_spearman, placement)
            attempts.setdefault(variant, []).append(gate)
            log.info("%s%s gate on %d test images: mean |Δ| %.4g, max |Δ| %.4g, Spearman %.4f -> %s", variant,
                     f" ({placement})" if placement else "", gate.n_images, gate.mean_abs_diff,
                     gate.max_abs_diff, gate.spearman, "passed" if gate.passed else "failed")
            if gate.passed:
                models[variant], sessions[variant] = candidate, session
                break
        gates[variant] = gate
        if not gate.passed:
            skipped[variant] = f"failed the accuracy gate: {gate.reason}"

    speed: dict[str, float] = {}
    if options.measure_speed:
        log.info("measuring images/s of %s (onnxruntime CPU, batch 32)", ", ".join(sessions))
        speed = {k: round(v, 1) for k, v in images_per_second(sessions, 32).items()}
        log.info("images/s: %s", ", ".join(f"{k} {v:.0f}" for k, v in speed.items()))

    manifest = _manifest(checkpoint, options, parity, gates, attempts, skipped, speed, list(models))
    for variant, proto in models.items():
        onnx.helper.set_model_props(proto, manifest_to_metadata(manifest, variant))
        with open(staging / VARIANT_FILES[variant], "wb") as handle:
            handle.write(proto.SerializeToString())
    if options.write_rdf:
        # bioimage.io's test input: the test image scored closest to the median (a typical image of the
        # training domain); without test images, a synthetic pattern
        sample = None if reference is None else test[int(np.argmin(np.abs(reference - np.median(reference))))]
        rdf.write_rdf(staging, manifest, sessions["fp32"], models["fp32"], sample)
    write_manifest(staging, manifest)
    return ExportReport(out=out, manifest=manifest, parity=parity, gates=gates, skipped=skipped, speed=speed)


def fit_statistics(images: np.ndarray | None, pixel_sizes_nm: np.ndarray | None = None) -> dict[str, Any]:
    """stedq.fit statistics of the training images that show structure (the near-0 classes, shuffled
    pixels and empty fields, have none: their ranges are what the verdict must flag); the pixel-size range
    spans `pixel_sizes_nm`, those of all the training images (None: not recorded, the nominal 20 nm)."""
    if images is None or not len(images):
        return {}
    from stedq.fit import neighbour_correlation, statistics

    structured = [image for image in images if neighbour_correlation(image) > STRUCTURE_FLOOR]
    return statistics(structured or list(images), pixel_sizes_nm).to_dict()


STRUCTURE_FLOOR = 0.05   # neighbour correlation of noise is ~0; every structured training image is above 0.15


def _manifest(checkpoint: dict[str, Any], options: ExportOptions, parity: dict[str, float],
              gates: dict[str, GateResult], attempts: dict[str, list[GateResult]], skipped: dict[str, str],
              speed: dict[str, float],
              variants: list[str]) -> Manifest:
    norm = checkpoint["normalization"]
    training: dict[str, Any] = {
        # the split's image names stay in the run folder: thousands of names would bloat every model file
        "data": _json_safe({k: v for k, v in (checkpoint.get("data") or {}).items() if k != "split"}),
        "config": _json_safe(checkpoint.get("config", {})),
        "epoch": checkpoint.get("epoch"),
        "checkpoint": Path(str(checkpoint.get("path", ""))).name,
        "trained_with_stedq": checkpoint.get("stedq_version", ""),
    }
    if checkpoint.get("ensemble"):   # how many members and their runs (`stedq ensemble`)
        training["ensemble"] = _json_safe(checkpoint["ensemble"])
    if checkpoint.get("placeholder"):
        training["placeholder"] = checkpoint["placeholder"]
    # the checkpoint's own metrics as `stedq evaluate` wrote them ("test", "test_per_bin", ...), then ours
    metrics: dict[str, Any] = {"test": {}, **_json_safe(checkpoint.get("metrics") or {}),
                               "parity_max_abs_diff": parity,
                               "variants": {v: g.as_dict() for v, g in gates.items()}}
    if len(attempts.get("int8", [])) > 1:
        metrics["int8_attempts"] = [g.as_dict() for g in attempts["int8"]]
    if skipped:
        metrics["not_written"] = skipped
    if speed:
        metrics["cpu_images_per_s_batch32"] = speed
    return Manifest(
        name=options.name, version=options.version,
        normalization=Normalization(mean=[float(norm["mean"])], std=[float(norm["std"])],
                                    transform=str(norm.get("transform", "linear"))),
        variants={v: VARIANT_FILES[v] for v in variants}, training=training, metrics=_json_safe(metrics),
        stedq_version=stedq.__version__, fit=fit_statistics(options.fit_images, options.fit_pixel_sizes_nm),
        created=datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"))
