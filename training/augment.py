"""Training-time augmentation: what a batch's items become before the network sees them. Padded crops
(small images as the server pads them), photon variants labelled by the virtual expert's own rule
(blurred, thinned, over a floor), (item, changed copy) pairs and their loss, flips and rotations."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stedq.training.config import PAIR_LOSSES, SCORE_LOSSES


def padded_crops(images: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """`images` with a `share` of them replaced by a random 64-223 px crop of themselves, padded back to
    the model input by mirroring (stedq.tiling.pad_to: what the server does to a small image). The
    label stays the full image's: a crop should rank as its image does."""
    from stedq.pixels import MIN_IMAGE_SIZE
    from stedq.tiling import pad_to

    chosen = np.flatnonzero(rng.random(len(images)) < share)
    if not len(chosen):
        return images
    out = images.copy()
    height, width = images.shape[1:]
    for i in chosen:
        size = int(rng.integers(MIN_IMAGE_SIZE, min(height, width)))
        top, left = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
        out[i] = pad_to(images[i, top:top + size, left:left + size], height, width)
    return out


THIN_FRACTIONS = (0.1, 0.8)   # photons kept, drawn log-uniformly: real thinning steps are 50/25/10 %
FLOOR_FRACTIONS = (0.02, 0.35)   # background floor, as a share of the image's signal (its brightest 2 %)
HAZE_SIGMA_PX = 32.0             # the floor varies smoothly, as out-of-focus light does
BLUR_SIGMA_PX = (0.7, 6.0)       # blurred copies, drawn log-uniformly: 1-2 px is a slightly soft image, 5 px confocal
DEFOCUS_FWHM_NM = (370.0, 940.0)  # out-of-focus copies: the span of the generator's out-of-focus class (data 2.0)


def background_haze(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth non-negative field of mean ~1: where out-of-focus light and STED re-excitation put a floor."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), HAZE_SIGMA_PX)
    return np.clip(1.0 + 0.5 * field / max(float(field.std()), 1e-12), 0.0, None)


def photon_variants(images: np.ndarray, labels: np.ndarray, clean: np.ndarray, components: np.ndarray,
                    thin_share: float, floor_share: float, rng: np.random.Generator, blur_share: float = 0.0,
                    pixel_nm: np.ndarray | None = None, defocus_share: float = 0.0,
                    clip_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) with items replaced by the same acquisition through a wider PSF (a `blur_share` of
    them: Gaussian blur of 0.7-6 px, detected anew with the same photons; needs `pixel_nm`), with fewer
    photons (a `thin_share`: binomial thinning to 10-80 %) and/or over a background floor (a
    `floor_share`: Poisson photons of a smooth haze at 2-35 % of the image's signal), drawn independently,
    labelled by the virtual expert's own rule: resolution widened in quadrature by the blur, SNR and
    structure measured on the new counts (stedq.training.data.label), the item's labeller noise kept.
    Saturated images are left alone (each would change the plateau the label penalises).

    Two rarer acquisition faults, drawn after those (the network underfits the generator's few examples of
    each, docs/training.md): a `defocus_share` of items blurred to an out-of-focus resolution (370-940 nm
    FWHM, same photons), and a `clip_share` clipped at 10-30 % of their peak, as the generator's saturated
    class is; the structure shown and the saturation are measured on the new image
    (label.similarity_after_change, label.image_saturation). With both shares 0 the draws are the same as
    before they existed.

    Each structure meets its dimmer, hazier and blurrier self with the label the rule gives them: the mix
    of separate acquisitions alone taught neither that fewer photons score lower, nor that a floor costs
    only the SNR it takes, nor that a smooth image of the same photons is a worse one (docs/training.md)."""
    from stedq.pixels import MODEL_COUNTS_PER_UNIT
    from stedq.training.data.label import (
        FWHM_PER_SIGMA,
        blurred_copy,
        blurred_resolution_nm,
        expert_quality,
        image_saturation,
        image_snr,
        quality_after,
        similarity_after_change,
        structure_similarity_after,
    )
    from stedq.training.data.synth import SATURATION_CEILING

    if (blur_share or defocus_share) and pixel_nm is None:
        raise ValueError("--blur-share and --defocus-share need each image's pixel size (labels.csv column pixel_nm)")
    unsaturated = components[:, 3] == 0
    blur = (rng.random(len(images)) < blur_share) & unsaturated
    thin = (rng.random(len(images)) < thin_share) & unsaturated
    floor = (rng.random(len(images)) < floor_share) & unsaturated
    none = np.zeros(len(images), bool)
    defocus = (rng.random(len(images)) < defocus_share) & unsaturated & ~blur if defocus_share else none
    clip = (rng.random(len(images)) < clip_share) & unsaturated if clip_share else none
    if not (blur.any() or thin.any() or floor.any() or defocus.any() or clip.any()):
        return images, labels
    images, labels = images.copy(), labels.copy()
    low, high = np.log(THIN_FRACTIONS[0]), np.log(THIN_FRACTIONS[1])
    for i in np.flatnonzero(blur | thin | floor | defocus | clip):
        counts = np.rint(images[i].astype(np.float64) * MODEL_COUNTS_PER_UNIT).astype(np.int64)
        resolution_nm, loss, similarity, saturation = components[i]
        if blur[i]:   # the structure shown stays the sample's (the simulator's confocal images keep ~0.9)
            sigma_px = float(np.exp(rng.uniform(*np.log(BLUR_SIGMA_PX))))
            counts = blurred_copy(counts, sigma_px, rng)
            resolution_nm = blurred_resolution_nm(resolution_nm, sigma_px, float(pixel_nm[i]))
        if defocus[i]:   # so wide a blur shows less of the structure
            fwhm_nm = float(rng.uniform(*DEFOCUS_FWHM_NM))
            sigma_px = np.sqrt(max(fwhm_nm ** 2 - resolution_nm ** 2, 0.0)) / (FWHM_PER_SIGMA * float(pixel_nm[i]))
            blurred = blurred_copy(counts, sigma_px, rng)
            similarity = similarity_after_change(counts, blurred, similarity)
            counts, resolution_nm = blurred, blurred_resolution_nm(resolution_nm, sigma_px, float(pixel_nm[i]))
        changed, kept = counts, 1.0
        if thin[i]:
            kept = float(np.exp(rng.uniform(low, high)))
            changed = rng.binomial(counts, kept)
        if floor[i]:
            level = rng.uniform(*FLOOR_FRACTIONS) * image_snr(changed)[1]
            changed = changed + rng.poisson(level * background_haze(counts.shape, rng))
        if clip[i]:   # a detector clips whatever reaches it: last
            shown = structure_similarity_after(counts, changed, similarity, kept)
            clipped = np.minimum(changed, max(2, int(rng.uniform(*SATURATION_CEILING) * changed.max())))
            quality = expert_quality(resolution_nm, image_snr(clipped)[0], loss,
                                     similarity_after_change(changed, clipped, shown), image_saturation(clipped))
            changed = clipped
        else:
            quality = quality_after(counts, changed, kept, resolution_nm, loss, similarity, saturation)
        labels[i] = np.clip(quality + (labels[i] - clean[i]), 0.0, 1.0)
        images[i] = np.minimum(changed, MODEL_COUNTS_PER_UNIT) / MODEL_COUNTS_PER_UNIT
    return images, labels


PAIR_THIN_SHARE = 0.6   # --pair-share: a pair's changed copy is thinned (else blurred; a floor as --floor-share)


def score_loss(pred: torch.Tensor, targets: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """The loss of scores (after the sigmoid) against their labels. Both kinds are least at the label.
    "bce" treats the label as a soft target: its gradient with respect to the logit is (p - y) / n, where
    the squared error's is 2 (p - y) p (1 - p) / n, which fades for scores near 0 or 1 (a shuffled image
    scored 0.07 instead of 0 gets 1/0.13 of the push the error deserves)."""
    if kind == "bce":
        return nn.functional.binary_cross_entropy(pred, targets)
    if kind != "mse":
        raise ValueError(f"score loss {kind!r}: expected one of {', '.join(SCORE_LOSSES)}")
    return nn.functional.mse_loss(pred, targets)


def pair_loss(pred: torch.Tensor, targets: torch.Tensor, pairs: int, kind: str = "mse") -> torch.Tensor:
    """Loss of the batch's last `pairs` (original, changed copy) pairs' score differences against their
    label differences. A copy keeps its original's labeller noise, so the label difference is the rule's
    own, noise-free: how much fewer photons or a wider PSF cost, which the plain loss sees only through
    noise of sd 0.03 (a bright image halved loses ~0.01).

    kind "mse": squared error of the differences (the large blur drops dominate it). kind "hinge": the
    mean shortfall of the score's drop below the label's, max(0, label drop - score drop): a copy that
    loses less than the rule says (or gains) is penalized linearly, however small its drop; losing more
    is left to the plain loss. kind "mse+hinge": both, the hinge ordering each pair and the squared error
    keeping the size of each drop."""
    n = len(targets) - 2 * pairs
    originals, changed = slice(n, n + pairs), slice(n + pairs, None)
    score_drop = pred[originals] - pred[changed]
    label_drop = targets[originals] - targets[changed]
    if kind not in PAIR_LOSSES:
        raise ValueError(f"pair loss {kind!r}: expected one of {', '.join(PAIR_LOSSES)}")
    hinge = torch.relu(label_drop - score_drop).mean()
    if kind == "hinge":
        return hinge
    squared = nn.functional.mse_loss(score_drop, label_drop)
    return squared if kind == "mse" else squared + hinge


def dihedral(x: torch.Tensor, transforms: np.ndarray) -> torch.Tensor:
    """Apply one of the 8 flips/rotations per image (0 = identity) to a (B, 1, H, W) batch."""
    out = x.clone()
    for k in np.unique(transforms):
        if k == 0:
            continue
        idx = torch.from_numpy(np.flatnonzero(transforms == k))
        part = x[idx]
        if k >= 4:
            part = part.flip(-1)
        out[idx] = torch.rot90(part, int(k % 4), dims=(-2, -1))
    return out
