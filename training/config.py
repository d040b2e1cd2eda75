"""Training hyperparameters (no torch here: the CLI builds its flags from this without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

PAIR_LOSSES = ("mse", "hinge", "mse+hinge")   # --pair-loss choices (augment.pair_loss)
ACTIVATIONS = ("elu", "relu")                 # --activation choices (model.QualityNet)
INPUT_TRANSFORMS = ("linear", "log")          # --input-transform choices (model.transform_input)
SCORE_LOSSES = ("mse", "bce")                 # --loss choices (augment.score_loss)


@dataclass
class TrainConfig:
    """Every hyperparameter; the defaults are the paper's. Each one is a `stedq train` flag."""

    seed: int = 0                  # weights, epoch order, augmentation, dropout
    split_seed: int = 0            # the train/val/test split (kept fixed across training seeds)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    epochs: int = 200              # upper bound; early stopping usually ends training first
    patience: int = 10             # epochs without a better validation loss before stopping
    batch_size: int = 100
    lr: float = 0.01
    lr_schedule: str = "constant"  # constant (the paper) | cosine (lr falls to 0 over --epochs)
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: bool = True           # each epoch adds one flipped/rotated copy of every training image
    balanced: bool = False         # sample training images evenly over the target bins
    crop_share: float = 0.25       # share of training items replaced by a 64-223 px crop padded as the server pads
    thin_share: float = 0.0        # share of training items replaced by a photon-thinned copy, labelled by the rule
    floor_share: float = 0.0       # share of training items given a background floor (haze), labelled by the rule
    blur_share: float = 0.0        # share of training items replaced by a blurred copy (same photons), labelled by the rule
    defocus_share: float = 0.0     # share of training items blurred to an out-of-focus resolution, labelled by the rule
    clip_share: float = 0.0        # share of training items clipped at 10-30 % of their peak (saturated), labelled by the rule
    loss: str = "mse"              # mse (the paper) | bce (cross-entropy on the soft label: no vanishing push near 0 and 1)
    pair_share: float = 0.0        # per batch, this share of its size again as (original, changed copy) pairs
    pair_weight: float = 1.0       # weight of the pairs' score-difference loss against the plain loss (--loss)
    pair_loss: str = "mse"         # mse (difference fitted to the label's) | hinge (drop at least the label's) | mse+hinge
    activation: str = "elu"        # elu (the paper) | relu (folds into INT8 convolutions)
    saturation_factor: bool = False  # score = network x the rule's saturation factor measured on the image
    structure_factor: bool = False   # score = network x 0..1 by the image's neighbour correlation (0: no structure)
    input_transform: str = "linear"  # linear (the paper: counts / 65535) | log (log(1 + counts): a narrower range for INT8)
    precise_bn: int = 0            # training items whose batch-norm statistics replace the running ones each epoch
    device: str = "auto"           # auto | cpu | cuda
    precision: str = "auto"        # auto (bf16 where native) | bf16 | fp32
    channels_last: bool = True     # faster convolutions on CPU
    threads: int = 0               # torch intra-op threads (0 = torch's default)
    max_minutes: float = 0.0       # stop before starting an epoch that would end past this (0 = no limit)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
