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
- saturation: of the bright pixels (at least half the image's maximum count), the share that sit at the
  maximum: a clipped detector or file flattens the structure's tops into plateaus. A plateau of fewer
  than 20 pixels is a tie of Poisson counts, not clipping (0).
- structure: how much of the sample's true structure the image shows: the correlation between the
  image and the noiseless, ideally resolved image of the same datamap (both lightly smoothed). The
  simulator knows the sample, so a shuffled, empty or structureless image gets a low label from this
  rule, never from a hard-coded value.

Each is mapped to [0, 1] and combined; a human-like labeller noise (sd 0.03) is added. docs/data.md shows
the calibration plots.
"""

from __future__ import annotations

import numpy as np

# Calibration (see docs/data.md): resolution of the confocal-like end and of the best STED images here.
RES_WORST_NM = 170.0
RES_BEST_NM = 45.0
SNR_WORST = 1.5     # below: structure hardly visible in the noise
# Photons keep paying, less and less: q_snr = x / (x + SNR_HALF) with x = snr - SNR_WORST. Anchored on the
# Rose criterion (an object is seen reliably from SNR ~5): q_snr(5) = 0.82; published STED images (peak
# 40-300 counts over a background of a few) sit at SNR 4-10, which an expert rates good, not middling, and
# the slow tail keeps rewarding photons in bright images (q_snr(10) = 0.92, q_snr(20) = 0.96).
SNR_HALF = 0.75
LOSS_WORST = 0.6    # fraction of the structure gone that takes the full bleaching penalty
LOSS_WEIGHT = 0.3   # share of the quality a fully faded structure loses
RES_FLOOR = 0.15    # a well-exposed confocal-like image still shows the structure
CORR_NONE = 0.05    # image/ideal correlation of an image that shows none of the structure
CORR_GOOD = 0.45    # and of one that shows it as well as a good STED acquisition does
SAT_MIN_PLATEAU = 20   # pixels at the maximum below which it is not a plateau
SAT_OK = 0.1       # plateau share of the bright pixels an image carries without a penalty
SAT_BAD = 0.3      # and from which it takes the full one
SAT_WEIGHT = 0.85  # share of the quality a saturated image loses (a clipped image is hardly usable)
IDEAL_SIGMA_PX = 1.0   # the smoothing of both images before correlating (about 45 nm FWHM at 20 nm pixels)
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


def image_saturation(image: np.ndarray) -> float:
    """Share of the bright pixels (>= half the maximum) at the maximum: flat, clipped tops."""
    image = np.asarray(image)
    peak = image.max()
    plateau = int((image == peak).sum())
    if peak <= 0 or plateau < SAT_MIN_PLATEAU:
        return 0.0
    return plateau / int((image >= 0.5 * peak).sum())


def smoothed(image: np.ndarray) -> np.ndarray:
    """An image (or datamap) smoothed as the rule smooths before comparing structure (IDEAL_SIGMA_PX)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(image, np.float64), IDEAL_SIGMA_PX)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays; 0 when either is flat."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def ideal_image(datamap: np.ndarray) -> np.ndarray:
    """The noiseless, ideally resolved image of a datamap (molecule counts), smoothed as images are."""
    return smoothed(datamap)


def structure_similarity(image: np.ndarray, ideal: np.ndarray) -> float:
    """Correlation (>= 0) of the lightly smoothed image with the sample's ideal image; 0 when either is flat."""
    return max(_correlation(smoothed(image), ideal), 0.0)


def score_components(resolution_nm: float, snr: float, structure_loss: float,
                     structure: float = CORR_GOOD, saturation: float = 0.0) -> dict[str, float]:
    """Each component mapped to [0, 1] (1 = what an expert wants)."""
    q_res = np.clip((RES_WORST_NM - resolution_nm) / (RES_WORST_NM - RES_BEST_NM), 0.0, 1.0)
    excess = max(snr - SNR_WORST, 0.0)
    q_snr = excess / (excess + SNR_HALF)
    q_bleach = 1.0 - np.clip(structure_loss / LOSS_WORST, 0.0, 1.0)
    q_structure = np.clip((structure - CORR_NONE) / (CORR_GOOD - CORR_NONE), 0.0, 1.0)
    q_saturation = 1.0 - np.clip((saturation - SAT_OK) / (SAT_BAD - SAT_OK), 0.0, 1.0)
    return {"q_resolution": float(q_res), "q_snr": float(q_snr), "q_bleaching": float(q_bleach),
            "q_structure": float(q_structure), "q_saturation": float(q_saturation)}


def fading_factor(structure_loss):
    """The share of the quality a structure keeps that has lost `structure_loss` of its fluorophores
    (a float or an array): the label's bleaching factor."""
    return 1 - LOSS_WEIGHT + LOSS_WEIGHT * (1.0 - np.clip(structure_loss / LOSS_WORST, 0.0, 1.0))


def expert_quality(resolution_nm: float, snr: float, structure_loss: float, structure: float = CORR_GOOD,
                   saturation: float = 0.0) -> float:
    """Noise-free virtual-expert quality in [0, 1].

    Resolution sets the ceiling (a confocal-like image is at best mediocre), noise multiplies it down (a
    sharp image lost in noise is bad), a faded structure takes a share off, and an image that does not
    show the sample's structure (shuffled, empty, noise) is worth nothing whatever its photons; a
    saturated one keeps little.
    """
    q = score_components(resolution_nm, snr, structure_loss, structure, saturation)
    value = (RES_FLOOR + (1 - RES_FLOOR) * q["q_resolution"]) * q["q_snr"] ** 0.7 \
        * fading_factor(structure_loss) * np.sqrt(q["q_structure"]) \
        * (1 - SAT_WEIGHT + SAT_WEIGHT * q["q_saturation"])
    return float(np.clip(value, 0.0, 1.0))


def noisy_label(clean: float, rng: np.random.Generator) -> float:
    """The expert's rating: the clean quality plus a small human-like disagreement, kept in [0, 1]."""
    return float(np.clip(clean + rng.normal(0.0, LABEL_NOISE_SD), 0.0, 1.0))


# --- photon variants: the same acquisition with fewer photons or a background floor, labelled by the rule

LABEL_INPUTS = ("resolution_nm", "structure_loss", "structure_similarity", "saturation")


def structure_similarity_after(original: np.ndarray, changed: np.ndarray, similarity: float,
                               signal_kept: float = 1.0) -> float:
    """`structure_similarity` of `changed` (photon counts) without the sample's ideal image, when `changed`
    is `original` binomially thinned to `signal_kept` and/or plus photons independent of the sample (a
    background floor or haze).

    The sample's part of the image keeps `signal_kept` of its expected counts and the rest is noise
    unrelated to the ideal image, so the covariance of the smoothed image with the ideal one scales by
    `signal_kept` while its spread is measured on `changed` itself:
    corr' = corr * signal_kept * sd(smooth(original)) / sd(smooth(changed)).
    """
    spread, spread_changed = float(smoothed(original).std()), float(smoothed(changed).std())
    if spread_changed == 0:
        return 0.0
    return float(np.clip(similarity * signal_kept * spread / spread_changed, 0.0, 1.0))


def similarity_after_change(original: np.ndarray, changed: np.ndarray, similarity: float) -> float:
    """`structure_similarity` of `changed`, an image derived from `original` (counts) by a change that
    reshapes the structure (a heavy blur, clipped tops), without the sample's ideal image: the original's
    similarity times the correlation of the two (both smoothed as the rule smooths). Against the
    simulator's exact value (tests): within ~0.03 for clipping, 0.03-0.09 high for an out-of-focus blur."""
    return float(np.clip(similarity * _correlation(smoothed(original), smoothed(changed)), 0.0, 1.0))


def quality_after(original: np.ndarray, changed: np.ndarray, signal_kept: float, resolution_nm: float,
                  structure_loss: float, structure_similarity: float, saturation: float) -> float:
    """Noise-free quality of `changed` (see structure_similarity_after): resolution and bleaching are the
    acquisition's and stay; SNR and structure are measured anew."""
    return expert_quality(resolution_nm, image_snr(changed)[0], structure_loss,
                          structure_similarity_after(original, changed, structure_similarity, signal_kept),
                          saturation)


# --- blurred copies: the same photons through a wider PSF, as a lower-resolution acquisition would record them

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def blurred_resolution_nm(resolution_nm: float, sigma_px: float, pixel_nm: float) -> float:
    """Resolution of an image blurred by a Gaussian of `sigma_px` pixels: Gaussian widths add in quadrature
    (as the simulator's defocus does); what the effective PSF's FWHM becomes."""
    return float(np.hypot(resolution_nm, FWHM_PER_SIGMA * sigma_px * pixel_nm))


def blurred_copy(counts: np.ndarray, sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """`counts` through a Gaussian blur of `sigma_px`, detected anew (Poisson) with the same photon budget:
    what the real-image check's blur copies are, and what a wider PSF would have recorded."""
    from scipy.ndimage import gaussian_filter

    return rng.poisson(np.clip(gaussian_filter(np.asarray(counts, np.float64), sigma_px), 0.0, None))
