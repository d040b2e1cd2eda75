"""A simulated STED microscope over one randomized sample: the only place stedq imports pysted.

    scope = SimulatedMicroscope(structure="actin", seed=0)
    image, info = scope.acquire(dwell_time_us=40, p_ex_uw=10, p_sted_mw=40)

Repeated `acquire` calls image the same sample, which keeps the bleaching of earlier acquisitions.
The optics, fluorophore, bleaching and detector are pysted's; the raster scan is `scan.py` (pysted's, one
line at a time: ~30x faster). pysted pitfalls handled here: its detector re-seeds numpy's global
generator (so every call gets its own seed and nothing of ours uses the global generator), powers must be
floats, and its optics are computed once per process.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np

from stedq.training.data import label as expert
from stedq.training.data import scan
from stedq.training.data.structures import PIXEL_NM, random_datamap

# Documented acquisition ranges (docs/data.md). Depletion 0 is a confocal image.
PARAMETER_RANGES: dict[str, tuple[float, float]] = {
    "dwell_time_us": (2.0, 100.0),
    "p_ex_uw": (1.0, 40.0),
    "p_sted_mw": (0.0, 150.0),
}

# EGFP-like fluorophore of pysted's own data generator (exp_data_gen.py), with two changes checked by eye
# and by PSF width: a smaller stimulated-emission cross-section, so resolution improves over tens of mW
# (not saturating at 3 mW), and the Oracz photobleaching constant k1 = 5e-14, so that high depletion
# power and long dwell times bleach visibly (~10 % in one 50 us / 80 mW scan at 10 uW).
FLUOROPHORE = {
    "lambda_": 535e-9, "qy": 0.6,
    "sigma_abs": {488: 1.15e-20, 575: 6e-21},
    "sigma_ste": {560: 1.2e-21, 575: 7.0e-22, 580: 6.0e-22},
    "sigma_tri": 1e-21, "tau": 3e-09, "tau_vib": 1.0e-12, "tau_tri": 5e-6,
    "phy_react": {488: 0.25e-7, 575: 25.0e-11}, "k_isc": 0.26e+6,
    "k1": 5e-14, "b": 1.4,
}
DETECTION_EFFICIENCY = 0.3   # photon collection (pysted default 0.1): counts like a modern STED detector
ZERO_RESIDUAL = 0.01   # a real donut is not perfectly dark at its centre: limits signal loss at high power


@functools.lru_cache(maxsize=1)
def _pysted_microscope():
    """pysted's microscope with its optics computed (about 2 s, once per process)."""
    from pysted import base

    microscope = base.Microscope(
        base.GaussianBeam(488e-9),
        base.DonutBeam(575e-9, zero_residual=ZERO_RESIDUAL, anti_stoke=False),
        base.Detector(noise=True, background=0.0, pcef=DETECTION_EFFICIENCY),
        base.Objective(),
        base.Fluorescence(**FLUOROPHORE))
    microscope.cache(PIXEL_NM * 1e-9)
    return microscope


@functools.lru_cache(maxsize=4096)
def resolution_nm(p_ex_uw: float, p_sted_mw: float) -> float:
    """FWHM of the effective PSF (excitation, depletion and detection together) at these powers."""
    psf = _pysted_microscope().get_effective(PIXEL_NM * 1e-9, p_ex_uw * 1e-6, float(p_sted_mw) * 1e-3)
    return expert.fwhm_nm(psf, PIXEL_NM)


def _blur_photons(counts: np.ndarray, sd_px: float, rng: np.random.Generator) -> np.ndarray:
    """Each detected photon moved by a Gaussian step of `sd_px` (what a PSF widened by that Gaussian
    records; a Poisson image stays one), reflected back at the field's edge: they stand in for those
    that would come in from the unseen surroundings."""
    rows, cols = np.nonzero(counts)
    points = np.repeat(np.stack([rows, cols], axis=1), counts[rows, cols], axis=0)
    points = points + rng.uniform(0, 1, points.shape) + rng.normal(0, sd_px, points.shape)
    size = np.array(counts.shape, np.float64)
    points = np.abs(points)
    points = np.where(points > size, 2 * size - points, points)
    grid, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=counts.shape,
                                range=[[0, counts.shape[0]], [0, counts.shape[1]]])
    return grid.astype(np.int64)


def _check_parameter(name: str, value: float) -> float:
    low, high = PARAMETER_RANGES[name]
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if not low * 0.5 <= value <= high * 2 and not (name == "p_sted_mw" and value == 0):
        raise ValueError(f"{name}={value} is far outside the simulated range {low}-{high}")
    return value


class SimulatedMicroscope:
    """One randomized sample of `structure` ("actin" or "tubulin") under a simulated STED microscope."""

    parameter_ranges = PARAMETER_RANGES

    def __init__(self, structure: str = "actin", seed: int = 0, background_cps: float | None = None,
                 empty: bool = False, pixel_nm: float = PIXEL_NM, photon_scale: float = 1.0,
                 defocus_nm: float = 0.0, kind: str | None = None, dense: tuple[str, ...] = ()):
        """`pixel_nm`: the scan's pixel size; `photon_scale`: brightness of the label and detector
        (multiplies the detection efficiency); `defocus_nm`: an out-of-focus acquisition, every molecule
        seen through a PSF widened by a Gaussian of this sd; `kind`: force one synthetic structure;
        `dense`: the mix's kinds drawn as dense fields ("axons", "bundles"; structures.DENSE_FIELDS)."""
        self.structure = structure
        self.seed = int(seed)
        self.pixel_nm = float(pixel_nm)
        self.detection_efficiency = min(DETECTION_EFFICIENCY * float(photon_scale), 1.0)
        # Our own generator (never numpy's global one, which pysted re-seeds on every call).
        self.rng = np.random.default_rng([self.seed, zlib.crc32(structure.encode())])
        # An empty field draws (and discards) the sparse kinds' datamap, so that its background draw, and its
        # bytes, do not depend on `dense` (the dense kinds take other draws from the generator).
        molecules, self.source = random_datamap(structure, self.rng, self.pixel_nm, kind, () if empty else dense)
        if empty:   # an empty field: no labelled structure, only the detector's background
            molecules, self.source = np.zeros_like(molecules), "empty"
        self.ideal = expert.ideal_image(molecules)   # what a perfect acquisition would show
        self.molecules_initial = int(molecules.sum())
        # Out of focus: the ideal stays the in-focus sample and the scope sees it blurred (acquire). Each
        # *photon* is displaced, not each molecule: displaced molecules imaged through the sharp STED PSF
        # showed as sharp speckles under a confocal-or-worse label (data 2.0 until 2026-12-05).
        self.defocus_nm = float(defocus_nm)
        # Detector background (counts/s before gating): some samples have more autofluorescence.
        self.background_cps = float(self.rng.uniform(1e4, 8e4) if background_cps is None else background_cps)
        i_ex, _, _ = _pysted_microscope().cache(self.pixel_nm * 1e-9)
        self._pad = i_ex.shape[0] // 2   # molecules outside the field still see the PSF's edge: zeros
        self.molecules = np.pad(molecules, self._pad)
        self.acquisitions = 0

    def _resolution_nm(self, p_ex_uw: float, p_sted_mw: float) -> float:
        """The PSF's FWHM, widened by the defocus blur (Gaussian widths add in quadrature)."""
        fwhm = resolution_nm(round(p_ex_uw, 6), round(p_sted_mw, 6))
        return float(np.hypot(fwhm, 2.355 * self.defocus_nm))

    @property
    def molecules_left(self) -> int:
        return int(self.molecules.sum())

    def acquire(self, dwell_time_us: float, p_ex_uw: float, p_sted_mw: float,
                bleach: bool = True) -> tuple[np.ndarray, dict]:
        """Image the sample once: (uint16 photon counts (224, 224), info with label and components)."""
        dwell_time_us = _check_parameter("dwell_time_us", dwell_time_us)
        p_ex_uw = _check_parameter("p_ex_uw", p_ex_uw)
        p_sted_mw = _check_parameter("p_sted_mw", p_sted_mw)
        scope = _pysted_microscope()
        scope.detector.background = self.background_cps
        scope.detector.pcef = self.detection_efficiency
        call_seed = (self.seed * 7919 + self.acquisitions * 104729 + zlib.crc32(self.structure.encode())) % 2**31
        before = self.molecules_left
        intensity, left = scan.raster_scan(
            scope, self.molecules, self.pixel_nm * 1e-9, dwell_time_us * 1e-6, p_ex_uw * 1e-6,
            float(p_sted_mw) * 1e-3, bleach, self.rng)
        counts = scan.detect(scope, intensity, dwell_time_us * 1e-6, call_seed)
        if self.defocus_nm > 0:   # a PSF widened by a Gaussian of sd defocus_nm: a Poisson image stays one
            counts = _blur_photons(np.asarray(counts, np.int64), self.defocus_nm / self.pixel_nm, self.rng)
        if bleach:
            self.molecules = left
        self.acquisitions += 1
        after = self.molecules_left
        image = np.clip(counts, 0, np.iinfo(np.uint16).max).astype(np.uint16)

        bleaching = 1.0 - after / before if before else 0.0
        info = {
            "structure": self.structure, "source": self.source, "seed": self.seed,
            "acquisition": self.acquisitions, "dwell_time_us": dwell_time_us, "p_ex_uw": p_ex_uw,
            "p_sted_mw": p_sted_mw, "resolution_nm": self._resolution_nm(p_ex_uw, p_sted_mw),
            "bleaching": bleaching,
            "bleached_fraction": 1.0 - after / self.molecules_initial if self.molecules_initial else 0.0,
            # What the image shows: the structure as it was halfway through this scan.
            "structure_loss": 1.0 - 0.5 * (before + after) / self.molecules_initial if self.molecules_initial else 0.0,
            "molecules": before, "background_cps": self.background_cps, "pixel_nm": self.pixel_nm,
            "detection_efficiency": self.detection_efficiency, "defocus_nm": self.defocus_nm,
        }
        return image, self.label(image, info)

    def label(self, image: np.ndarray, info: dict) -> dict:
        """`info` completed with the virtual expert's view of `image` (an acquisition of this sample, or
        an image derived from one, e.g. its pixels shuffled): SNR, structure shown, components, label."""
        snr, signal, background = expert.image_snr(image)
        structure = expert.structure_similarity(image, self.ideal)
        saturation = expert.image_saturation(image)
        resolution, loss = info["resolution_nm"], info["structure_loss"]
        clean = expert.expert_quality(resolution, snr, loss, structure, saturation)
        return {**info, "snr": snr, "signal_counts": signal, "background_counts": background,
                "structure_similarity": structure, "saturation": saturation,
                **expert.score_components(resolution, snr, loss, structure, saturation),
                "label_clean": clean, "label": expert.noisy_label(clean, self.rng)}
