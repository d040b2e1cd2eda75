"""The virtual expert: a documented quality function of what an expert judges in a STED image.

An expert rates (Robitaille et al. 2018) how well the structure is resolved, how noisy the image is,
and whether it shows bleaching or other artefacts. The components are measured, not guessed:

- resolution_nm: FWHM of the microscope's effective point-spread function at the acquisition's powers
  (pysted's `get_effective`: excitation x depletion x detection); ~170 nm confocal, ~40 nm at full STED.
- snr: from the image itself: (signal - background) / sqrt(signal), with signal the mean photon count
  of the brightest 2 % of (lightly smoothed) pixels and background the median count; Poisson-limited.
- structure_loss: fraction of the fresh sample's fluorophores already gone while this image is taken
  (earlier scans of the region plus half of this scan's own bleaching): what an expert sees as a faded,
  patchy structure. Only what the image shows counts; bleaching that happens after a pixel was
  recorded is the acquisition's cost (the control loop's business), not a flaw of the image.

Each is mapped to [0, 1] and combined; a human-like labeller noise (sd 0.03) is added. docs/data.md shows
the calibration plots.
"""

from __future__ import annotations

import numpy as np

# Calibration (see docs/data.md): resolution of the confocal-like end and of the best STED images here.
RES_WORST_NM = 170.0
RES_BEST_NM = 45.0
SNR_WORST = 1.5     # below: structure hardly visible in the noise
SNR_BEST = 12.0     # above: no visible improvement to an expert (about the brightest 3 % of images)
LOSS_WORST = 0.6    # fraction of the structure gone that takes the full bleaching penalty
LOSS_WEIGHT = 0.3   # share of the quality a fully faded structure loses
RES_FLOOR = 0.15    # a well-exposed confocal-like image still shows the structure
LABEL_NOISE_SD = 0.03


def fwhm_nm(psf: np.ndarray, pixel_nm: float) -> float:
    """Full width at half maximum of a centred 2D PSF (mean of row and column profiles), in nm."""
    def width(profile: np.ndarray) -> float:
        profile = profile / profile.max()
        above = np.flatnonzero(profile >= 0.5)
        left, right = above[0], above[-1]
        # Linear interpolation at both half-maximum crossings, so widths below a pixel still change.
        lx = left - (profile[left] - 0.5) / max(profile[left] - profile[left - 1], 1e-12)
        rx = right + (profile[right] - 0.5) / max(profile[right] - profile[right + 1], 1e-12)
        return float(rx - lx)
    r, c = np.unravel_index(int(np.argmax(psf)), psf.shape)
    return 0.5 * (width(psf[r, :]) + width(psf[:, c])) * pixel_nm


def image_snr(image: np.ndarray) -> tuple[float, float, float]:
    """(snr, signal, background) of a photon-count image, as described in the module docstring."""
    from scipy.ndimage import uniform_filter

    counts = image.astype(np.float64)
    smooth = uniform_filter(counts, size=3)
    bright = smooth >= np.quantile(smooth, 0.98)
    signal = float(counts[bright].mean())
    background = float(np.median(counts))
    snr = (signal - background) / np.sqrt(max(signal, 1.0))
    return float(max(snr, 0.0)), signal, background


def score_components(resolution_nm: float, snr: float, structure_loss: float) -> dict[str, float]:
    """Each component mapped to [0, 1] (1 = what an expert wants)."""
    q_res = np.clip((RES_WORST_NM - resolution_nm) / (RES_WORST_NM - RES_BEST_NM), 0.0, 1.0)
    q_snr = np.clip(np.log(max(snr, 1e-6) / SNR_WORST) / np.log(SNR_BEST / SNR_WORST), 0.0, 1.0)
    q_bleach = 1.0 - np.clip(structure_loss / LOSS_WORST, 0.0, 1.0)
    return {"q_resolution": float(q_res), "q_snr": float(q_snr), "q_bleaching": float(q_bleach)}


def expert_quality(resolution_nm: float, snr: float, structure_loss: float) -> float:
    """Noise-free virtual-expert quality in [0, 1].

    Resolution sets the ceiling (a confocal-like image is at best mediocre), noise multiplies it down (a
    sharp image lost in noise is bad) and a faded structure takes a share off.
    """
    q = score_components(resolution_nm, snr, structure_loss)
    value = (RES_FLOOR + (1 - RES_FLOOR) * q["q_resolution"]) * q["q_snr"] ** 0.7 \
        * (1 - LOSS_WEIGHT + LOSS_WEIGHT * q["q_bleaching"])
    return float(np.clip(value, 0.0, 1.0))


def noisy_label(clean: float, rng: np.random.Generator) -> float:
    """The expert's rating: the clean quality plus a small human-like disagreement, kept in [0, 1]."""
    return float(np.clip(clean + rng.normal(0.0, LABEL_NOISE_SD), 0.0, 1.0))
