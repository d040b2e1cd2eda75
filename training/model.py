"""QualityNet: the paper's quality network, as its original code builds it (the one place it is written).

Six 3x3 conv blocks (32, 64, 128, 192, 256, 320 channels; batch norm on all but the first; ELU;
2x2 max-pool, stride 2, ceil mode: 224 -> 112 -> 56 -> 28 -> 14 -> 7 -> 4), then fully connected
5120 -> 512 -> 256 -> 1 with batch norm, ELU and dropout 0.2, and a sigmoid: a score in [0, 1].

With `saturation=True` (`stedq train --saturation-factor`) the score is the network's output times the
virtual expert's saturation factor measured on the image itself (`saturation_factor`): clipping is a rule
on pixel values the network does not learn (clipped copies scored 0.50 against the rule's 0.09,
docs/training.md), so it is applied exactly, in training and inside the exported graph. With
`structure=True` (`--structure-factor`) the score is likewise multiplied by `structure_factor`: 0 for an
image whose pixels are as unrelated to their neighbours as noise (a shuffled or empty field), which the
network scores a few hundredths above 0 even on its training images.

The network takes images already transformed (`transform_input`) and normalized by the training set's
mean/std; `NormalizedQualityNet` puts both in front so an exported graph takes images rescaled to [0, 1]
(counts / 65535, stedq.pixels).
"""

from __future__ import annotations

import torch
from torch import nn

from stedq.pixels import MODEL_COUNTS_PER_UNIT
from stedq.training.config import ACTIVATIONS, INPUT_TRANSFORMS
from stedq.training.data.label import SAT_BAD, SAT_MIN_PLATEAU, SAT_OK, SAT_WEIGHT

INPUT_SIZE = 224
CONV_CHANNELS = (32, 64, 128, 192, 256, 320)
FC_FEATURES = (512, 256)
DROPOUT = 0.2
# The paper's ELU; ReLU only where a measured reason needs it: it folds into an INT8 convolution, ELU
# has no INT8 kernel (scripts/int8_ceiling.py, docs/benchmarks.md).
ACTIVATION_MODULES = dict(zip(ACTIVATIONS, (nn.ELU, nn.ReLU), strict=True))


def _conv_block(in_channels: int, out_channels: int, batch_norm: bool, activation: str) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers += [ACTIVATION_MODULES[activation](), nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)]
    return nn.Sequential(*layers)


class QualityNet(nn.Module):
    def __init__(self, in_channels: int = 1, activation: str = "elu", saturation: bool = False,
                 structure: bool = False):
        super().__init__()
        # callers multiply by rule_factor(self, raw image): the factors need the counts, not the normalized input
        self.saturation, self.structure = saturation, structure
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        blocks, channels = [], in_channels
        for index, out_channels in enumerate(CONV_CHANNELS):
            blocks.append(_conv_block(channels, out_channels, batch_norm=index > 0, activation=activation))
            channels = out_channels
        self.features = nn.Sequential(*blocks)
        side = INPUT_SIZE
        for _ in CONV_CHANNELS:
            side = -(-side // 2)  # ceil mode
        flat = channels * side * side  # 320 * 4 * 4 = 5120
        fc: list[nn.Module] = [nn.Flatten()]
        for out_features in FC_FEATURES:
            fc += [nn.Linear(flat, out_features), nn.BatchNorm1d(out_features), ACTIVATION_MODULES[activation](), nn.Dropout(DROPOUT)]
            flat = out_features
        fc += [nn.Linear(flat, 1), nn.Sigmoid()]
        self.head = nn.Sequential(*fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 224, 224) normalized images -> (N, 1) scores in [0, 1]."""
        return self.head(self.features(x))


class QualityNetEnsemble(nn.Module):
    """QualityNets trained alike on the same data and split (`stedq ensemble`), on the same normalized
    input: the score is the mean of theirs. Seeds alone move single images' scores by a few hundredths
    (docs/training.md); the mean holds less of that noise, for members x the inference work."""

    def __init__(self, members: list[QualityNet]):
        super().__init__()
        if len(members) < 2 or len({(m.saturation, m.structure) for m in members}) != 1:
            raise ValueError("an ensemble needs two or more QualityNets, all with the same rule factors")
        self.members = nn.ModuleList(members)
        # the factors are the image's: they multiply the mean
        self.saturation, self.structure = members[0].saturation, members[0].structure

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


def saturation_factor(images: torch.Tensor) -> torch.Tensor:
    """(N, ...) raw images (counts on any scale) -> (N, 1): the virtual expert's saturation factor,
    training/data/label.py's rule: of the bright pixels (>= half the maximum) the share at the maximum, 0
    for a plateau under SAT_MIN_PLATEAU pixels (a tie of Poisson counts), mapped to a factor from 1 (share
    <= SAT_OK) down to 1 - SAT_WEIGHT (share >= SAT_BAD). Equality and halving are exact in float32, so
    counts / 65535 give the factor of the counts."""
    flat = images.flatten(1)
    peak = flat.amax(dim=1, keepdim=True)
    plateau = (flat == peak).sum(dim=1, keepdim=True).to(torch.float32)
    bright = (flat >= 0.5 * peak).sum(dim=1, keepdim=True).to(torch.float32)
    share = torch.where((peak > 0) & (plateau >= SAT_MIN_PLATEAU), plateau / bright.clamp(min=1.0),
                        torch.zeros_like(plateau))
    q_saturation = 1.0 - ((share - SAT_OK) / (SAT_BAD - SAT_OK)).clamp(0.0, 1.0)
    return 1.0 - SAT_WEIGHT + SAT_WEIGHT * q_saturation


# Neighbour correlation r (below) at and under which an image shows no structure, and from which it is
# fully scored: shuffled and empty images of the default set have |r| <= 0.009 (224 x 224), every image
# labelled above 0 has r >= 0.155 (plans/twenty-third-run-v28.txt).
STRUCTURE_NONE = 0.02
STRUCTURE_FULL = 0.10


def neighbour_correlation(images: torch.Tensor) -> torch.Tensor:
    """(N, ..., H, W) raw images (any scale) -> (N, 1): the mean of the horizontal and vertical lag-1
    correlations of the pixels: ~0 for noise and shuffled pixels, high where the point-spread function
    spreads structure over neighbouring pixels (stedq.fit's `no_structure` reads the same statistic on a
    subsample of rows). 0 for a flat image."""
    x = images.reshape(images.shape[0], images.shape[-2], images.shape[-1]).to(torch.float32)
    mean = x.mean(dim=(1, 2), keepdim=True)
    centred = x - mean
    variance = (centred * centred).mean(dim=(1, 2))
    across = (centred[:, :, 1:] * centred[:, :, :-1]).mean(dim=(1, 2))
    down = (centred[:, 1:, :] * centred[:, :-1, :]).mean(dim=(1, 2))
    # flat: no variance beyond float32 rounding of the mean (counts vary by whole photons, far above it)
    flat = variance <= 1e-8 * mean.squeeze(2).squeeze(1) ** 2 + 1e-30
    r = torch.where(flat, torch.zeros_like(variance), (across + down) / (2.0 * variance.clamp(min=1e-30)))
    return r.unsqueeze(1)


def structure_factor(images: torch.Tensor) -> torch.Tensor:
    """(N, ..., H, W) raw images -> (N, 1): 0 at or under STRUCTURE_NONE neighbour correlation (no
    structure, the virtual expert's structure term is 0), 1 from STRUCTURE_FULL, linear between."""
    r = neighbour_correlation(images)
    return ((r - STRUCTURE_NONE) / (STRUCTURE_FULL - STRUCTURE_NONE)).clamp(0.0, 1.0)


def rule_factor(net: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
    """The product of the rule factors `net` carries (saturation, structure) for raw images, or None when
    it carries none: what its output is multiplied by, in training, evaluation and the exported graph."""
    factors = [f(images) for flag, f in ((getattr(net, "saturation", False), saturation_factor),
                                          (getattr(net, "structure", False), structure_factor)) if flag]
    if not factors:
        return None
    return factors[0] if len(factors) == 1 else factors[0] * factors[1]


def transform_input(image: torch.Tensor, transform: str) -> torch.Tensor:
    """Images on the model's scale (counts / 65535) -> what the network's mean/std apply to.

    "linear" is the paper's: the image as it is. "log" is log(1 + counts): photon counts span three orders
    of magnitude between images (3 to 8000 at the brightest pixel in data 2.0), and a logarithm brings
    them within a few times of each other, so one INT8 scale per activation tensor serves dim and bright
    images alike (docs/benchmarks.md); the lowest counts stay apart (0, 1, 2 -> 0, 0.69, 1.10).
    """
    _check_transform(transform)
    if transform == "log":
        return torch.log1p(torch.clamp(image, min=0.0) * MODEL_COUNTS_PER_UNIT)
    return image


def _check_transform(transform: str) -> None:
    if transform not in INPUT_TRANSFORMS:
        raise ValueError(f"unknown input transform {transform!r}; choose one of {', '.join(INPUT_TRANSFORMS)}")


class NormalizedQualityNet(nn.Module):
    """QualityNet with the input transform and the training set's normalization inside: input is the
    image rescaled to [0, 1]."""

    def __init__(self, net: QualityNet | QualityNetEnsemble, mean: float, std: float, transform: str = "linear"):
        super().__init__()
        _check_transform(transform)
        self.net = net
        self.transform = transform
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(float(std), dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        score = self.net((transform_input(image, self.transform) - self.mean) / self.std)
        factor = rule_factor(self.net, image)
        return score if factor is None else score * factor


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
