"""Running QualityNet on arrays of images in PyTorch (training validation and evaluation share this)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from stedq.training.model import rule_factor, transform_input


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this PyTorch build or machine has no CUDA device (use auto or cpu)")
    return torch.device(device)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # the CPU needs native bfloat16 (AVX-512 BF16 / AMX) to be faster, not slower
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 autocast where the hardware has native bfloat16, else fp32."""
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_batch(images: np.ndarray, mean: float, std: float, device: torch.device,
             channels_last: bool, transform: str = "linear") -> torch.Tensor:
    """(N, H, W) images in [0, 1] -> transformed, normalized (N, 1, H, W) float32 tensor on the device."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    x = ((transform_input(x, transform) - mean) / std).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_scores(model: torch.nn.Module, images: np.ndarray, mean: float, std: float,
                   device: torch.device, precision: str = "fp32", batch_size: int = 100,
                   channels_last: bool = True, progress: str | None = None,
                   transform: str = "linear") -> np.ndarray:
    """Scores in [0, 1] for (N, H, W) images in [0, 1], model in eval mode."""
    from tqdm import tqdm

    model.eval()
    scores = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=progress, unit="batch", disable=progress is None, leave=False):
        chunk = images[start:start + batch_size]
        x = to_batch(chunk, mean, std, device, channels_last, transform)
        with autocast(device, precision):
            score = model(x).float()
        factor = rule_factor(model, torch.from_numpy(np.asarray(chunk, np.float32)))
        if factor is not None:
            score = score * factor.to(score.device)
        scores.append(score.squeeze(1).cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
