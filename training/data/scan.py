"""pysted's raster scan with bleaching, vectorized one scan line at a time.

pysted's `Microscope.get_signal_and_bleach` visits the 50,176 pixels one by one and, for each, allocates
an array the size of the whole datamap: 1-3 s per 224x224 image on this hardware, too slow for a dataset
and for an acquisition loop. This module does the same physics with pysted's own optics (effective PSF,
Oracz bleaching rates, photon conversion and detector model) but per scan line:

- signal of pixel (r, c): sum over the PSF window of effective[dy, dx] * molecules[r+dy, c+dx], where a
  molecule's chance of having survived the pixels already visited *on the same line* is folded into the
  kernel (exp(-dwell * sum of bleaching rates of the pixels to its left), exact in expectation because
  parameters are uniform over the scan);
- after each line, every molecule in reach survives the whole line with probability
  exp(-dwell * sum of the line's bleaching rates at its position) and survivors are drawn binomially, as
  pysted does per pixel.

`tests/test_data_microscope.py` checks it against pysted's own scan (signal and bleached fraction).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve


def optics(scope, pixel_m: float, p_ex_w: float, p_sted_w: float) -> tuple[np.ndarray, np.ndarray]:
    """(effective PSF in W per molecule, bleaching rate per molecule in 1/s), both PSF-window shaped."""
    i_ex, i_sted, _ = scope.cache(pixel_m)
    effective = scope.get_effective(pixel_m, p_ex_w, p_sted_w)
    photons_ex = scope.fluo.get_photons(i_ex * p_ex_w, scope.excitation.lambda_)
    duty_cycle = scope.sted.tau * scope.sted.rate
    photons_sted = scope.fluo.get_photons(i_sted * p_sted_w * duty_cycle, scope.sted.lambda_)
    return effective, scope.fluo.get_k_bleach(
        scope.excitation.lambda_, scope.sted.lambda_, photons_ex, photons_sted, scope.sted.tau,
        1 / scope.sted.rate, 0.0)


def raster_scan(scope, molecules: np.ndarray, pixel_m: float, dwell_s: float, p_ex_w: float,
                p_sted_w: float, bleach: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scan `molecules` (padded by half a PSF window on each side) line by line.

    Returns (acquired intensity (W), molecules left); pass the intensity to `detect`.
    """
    effective, k_bleach = optics(scope, pixel_m, p_ex_w, p_sted_w)
    h, w = effective.shape
    rows, cols = molecules.shape[0] - (h - 1), molecules.shape[1] - (w - 1)
    molecules = molecules.astype(np.int64, copy=True)
    intensity = np.zeros((rows, cols))
    dose = k_bleach * dwell_s if bleach else np.zeros_like(k_bleach)
    if not bleach or not dose.any():
        # No bleaching: one correlation of the whole map with the PSF.
        intensity[:] = fftconvolve(molecules.astype(np.float64), effective[::-1, ::-1], mode="valid")
        return intensity, molecules
    # Dose a molecule at window offset (dy, dx) got from pixels left of the current one on this line:
    # the sum of dose[dy, j] for j > dx (those pixels saw it at larger offsets).
    before = np.cumsum(dose[:, ::-1], axis=1)[:, ::-1] - dose
    line_kernel = effective * np.exp(-before)
    # Dose over the whole line at each (dy, column) of the window band: sum over the line's pixels.
    line_dose = fftconvolve(dose, np.ones((1, cols)), mode="full")       # (h, cols + w - 1)
    line_survival = np.exp(-line_dose)
    offsets = np.arange(w)
    for r in range(rows):
        band = molecules[r:r + h]
        dy, x = np.nonzero(band)          # molecules are sparse: work on them, not on the window
        if dy.size == 0:
            continue
        n = band[dy, x]
        # Molecule at padded column x is seen by pixel c = x - dx with kernel weight line_kernel[dy, dx].
        pixel = (x[:, None] - offsets[None, :]).ravel()
        weight = (n[:, None] * line_kernel[dy]).ravel()
        valid = (pixel >= 0) & (pixel < cols)
        intensity[r] = np.bincount(pixel[valid], weights=weight[valid], minlength=cols)
        band[dy, x] = rng.binomial(n, line_survival[dy, x])
    return intensity, molecules


def detect(scope, intensity: np.ndarray, dwell_s: float, seed: int) -> np.ndarray:
    """Photon counts from the acquired intensity with pysted's detector (binomial collection, Poisson
    noise, background). pysted re-seeds numpy's global generator here; callers never rely on it."""
    photons = scope.fluo.get_photons(np.clip(intensity, 0, None))
    return scope.detector.get_signal(photons, dwell_s, scope.sted.rate, seed=seed)
