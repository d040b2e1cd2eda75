"""Parity gate: the exported FP32 graph must reproduce PyTorch's eval outputs at several batch sizes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from stedq.export.errors import ExportError
from stedq.training.model import INPUT_SIZE

PARITY_BATCH_SIZES = (1, 7, 32, 64)
PARITY_TOLERANCE = 1e-5


def check_parity(model: torch.nn.Module, session: ort.InferenceSession,
                 batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES, tolerance: float = PARITY_TOLERANCE,
                 images: np.ndarray | None = None, seed: int = 0) -> dict[str, float]:
    """Max |ONNX - PyTorch| per batch size (random images in [0, 1], or `images` when given).

    Raises ExportError naming the batch size when a difference exceeds `tolerance` (or is NaN).
    """
    rng = np.random.default_rng(seed)
    name = session.get_inputs()[0].name
    diffs: dict[str, float] = {}
    for n in batch_sizes:
        if images is not None and len(images) >= n:
            batch = np.asarray(images[rng.choice(len(images), n, replace=False)], np.float32).reshape(n, 1, INPUT_SIZE, INPUT_SIZE)
        else:
            batch = rng.random((n, 1, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
        with torch.no_grad():
            expected = model.eval()(torch.from_numpy(batch)).numpy()
        (got,) = session.run(None, {name: batch})
        if got.shape != expected.shape:
            raise ExportError(f"parity: batch {n}: ONNX output shape {got.shape} != PyTorch {expected.shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        diffs[str(n)] = diff
        if not diff <= tolerance:  # also catches NaN
            raise ExportError(f"parity gate failed: batch {n}: max |ONNX - PyTorch| = {diff:.3g} "
                              f"> {tolerance:g}; the exported graph does not reproduce the checkpoint")
    return diffs
