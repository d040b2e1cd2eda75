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
