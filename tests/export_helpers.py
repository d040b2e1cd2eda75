"""Test inputs for the export tests: structured synthetic images and a checkpoint whose scores spread.

Random weights score every image about the same (FACTS.md), which makes accuracy gates meaningless,
so `spread_checkpoint` sets the batch-norm statistics from real forward passes and rescales the last
layer until the scores cover most of [0, 1] on these images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import stedq
from stedq.training.model import INPUT_SIZE, QualityNet


def synthetic_images(n: int, seed: int = 0) -> np.ndarray:
    """float32 (n, 224, 224) in [0, 1]: filaments with varied blur, brightness and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:INPUT_SIZE, 0:INPUT_SIZE].astype(np.float32)
    images = np.empty((n, INPUT_SIZE, INPUT_SIZE), np.float32)
    for k in range(n):
        image = np.zeros((INPUT_SIZE, INPUT_SIZE), np.float32)
        width = rng.uniform(1.0, 6.0)              # sharp (good STED) to blurred (confocal-like)
        for _ in range(rng.integers(3, 12)):
            x0, y0, angle = rng.uniform(0, INPUT_SIZE), rng.uniform(0, INPUT_SIZE), rng.uniform(0, np.pi)
            distance = np.abs((xx - x0) * np.sin(angle) - (yy - y0) * np.cos(angle))
            image += np.exp(-0.5 * (distance / width) ** 2)
        image *= rng.uniform(0.1, 0.9) / max(float(image.max()), 1e-6)
        image += rng.poisson(rng.uniform(1, 30), image.shape) / 255.0
        images[k] = np.clip(image, 0, 1)
    return images


def spread_checkpoint(images: np.ndarray, seed: int = 0, metrics: dict | None = None) -> dict:
    """A stedq checkpoint dict (see stedq.training.checkpoint) whose scores vary across `images`."""
    torch.manual_seed(seed)
    mean, std = float(images.mean()), float(images.std())
    x = (torch.from_numpy(images[:, None]) - mean) / std
    net = QualityNet()
    for module in net.modules():           # batch norm: statistics of these images, not init values
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.momentum = None
    net.train()
    with torch.no_grad():
        net(x)
        net.eval()
        logits = net.head[:-1](net.features(x)).squeeze(1)
        last = net.head[-2]                # Linear(256, 1) before the sigmoid
        scale = 1.5 / float(logits.std())
        last.weight *= scale
        last.bias.copy_(last.bias * scale - float(logits.mean()) * scale)
    return {
        "model": net.state_dict(),
        "normalization": {"mean": mean, "std": std},
        "config": {"epochs": 0, "note": "test checkpoint: batch-norm statistics set, last layer rescaled"},
        "data": {"path": "", "hash": "test-hash-0123", "description": "synthetic test filaments",
                 "n_train": len(images), "n_val": 0, "n_test": 0},
        "metrics": metrics if metrics is not None else {"test": {"n": 9, "rmse": 0.123, "spearman": 0.456}},
        "epoch": 1,
        "stedq_version": stedq.__version__,
    }


def save(checkpoint: dict, path: Path) -> Path:
    torch.save(checkpoint, path)
    return path


def write_image_folder(folder: Path, images: np.ndarray) -> Path:
    """One uint16 .npy per image (as a microscope would save them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        np.save(folder / f"img{index:03d}.npy", np.round(image * 65535).astype(np.uint16))
    return folder


def export_with_factor(tmp_path: Path, flag: str, x: np.ndarray) -> tuple[object, dict, dict]:
    """A spread checkpoint with the rule factor `flag` (a TrainConfig field) exported by `stedq export
    --variants fp16`, and its FP32 graph and INT8 (placement `all`) scores of `x` (N, 1, H, W).
    Returns (manifest, scores by variant, checkpoint)."""
    import onnx
    import onnxruntime as ort

    from stedq.bundle import read_manifest
    from stedq.cli import main
    from stedq.export.variants import quantize_int8

    images = synthetic_images(16, seed=3)
    checkpoint = spread_checkpoint(images)
    checkpoint["config"][flag] = True
    save(checkpoint, tmp_path / "best.pt")
    for part, chunk in (("train", images[:8]), ("test", images[8:])):
        write_image_folder(tmp_path / "data" / part, chunk)
    out = tmp_path / "bundle"
    assert main(["export", str(tmp_path / "best.pt"), "--out", str(out), "--data", str(tmp_path / "data"),
                 "--variants", "fp16"]) == 0
    manifest = read_manifest(out)
    fp32 = onnx.load(out / manifest.variants["fp32"])
    scores = {}
    for variant, model in (("fp32", fp32), ("int8", quantize_int8(fp32, images, "all"))):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        scores[variant] = session.run(None, {session.get_inputs()[0].name: x})[0].squeeze(1)
    return manifest, scores, checkpoint
