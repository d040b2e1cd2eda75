"""The virtual expert's label scale (training data 2.0) on generated ladders of the same field: a good STED
image >= 0.6, its confocal <= 0.15, its pixels shuffled <= 0.05, an empty field ~0, and the label falls at
every step of fewer photons, lower resolution and more bleaching. Every value comes from the rule."""

from __future__ import annotations

import numpy as np
import pytest

from stedq.training.data import synth
from stedq.training.data.microscope import SimulatedMicroscope

GOOD = dict(dwell_time_us=40.0, p_ex_uw=15.0, p_sted_mw=60.0)
# (structure, seed, synthetic kind or None for the folder's own mix, pixel size nm): every structure of
# data 2.0 at the ends of the pixel-size range.
FIELDS = [("actin", 0, None, 20.0), ("actin", 2, None, 20.0), ("tubulin", 1, None, 20.0), ("tubulin", 3, None, 20.0),
          ("actin", 4, "rings", 35.0), ("actin", 5, "mesh", 15.0), ("actin", 6, "puncta", 20.0),
          ("actin", 7, "puncta", 35.0), ("actin", 8, "bundles", 15.0), ("actin", 9, "bundles", 30.0),
          ("actin", 10, "network", 15.0), ("actin", 11, "network", 30.0), ("actin", 12, "bundle-network", 20.0)]


def microscope(structure, seed, kind=None, pixel_nm=20.0, **options):
    return SimulatedMicroscope(structure, seed=seed, kind=kind, pixel_nm=pixel_nm, **options)


def label(structure, seed, kind=None, pixel_nm=20.0, photon_scale=1.0, **params):
    return microscope(structure, seed, kind, pixel_nm, photon_scale=photon_scale).acquire(**{**GOOD, **params})


@pytest.mark.parametrize("structure, seed, kind, pixel_nm", FIELDS)
def test_label_scale(structure, seed, kind, pixel_nm):
    image, info = label(structure, seed, kind, pixel_nm)
    assert info["label_clean"] >= 0.6, info
    assert label(structure, seed, kind, pixel_nm, p_sted_mw=0.0)[1]["label_clean"] <= 0.15
    scope = microscope(structure, seed, kind, pixel_nm)
    image, info = scope.acquire(**GOOD)
    shuffled = np.random.default_rng(seed).permutation(image.ravel()).reshape(image.shape)
    assert scope.label(shuffled, info)["label_clean"] <= 0.05
    clipped = np.minimum(image, int(0.2 * image.max()))   # flat tops: a saturated detector
    assert scope.label(clipped, info)["label_clean"] <= 0.15
    empty = microscope(structure, seed, kind, pixel_nm, empty=True).acquire(**GOOD)[1]
    assert empty["label_clean"] <= 0.05 and empty["structure_similarity"] == 0.0
    blurred = microscope(structure, seed, kind, pixel_nm, defocus_nm=synth.DEFOCUS_NM_RANGE[0]).acquire(**GOOD)[1]
    assert blurred["label_clean"] <= 0.15 and blurred["resolution_nm"] > 350, blurred


@pytest.mark.parametrize("defocus_nm", synth.DEFOCUS_NM_RANGE)
def test_out_of_focus_is_a_smooth_blur_of_the_same_photons(defocus_nm):
    """An out-of-focus image is the in-focus one seen through a wider PSF: the same photons, and around a
    smooth local mean nothing but Poisson noise (variance ~ mean), where an in-focus STED image has sharp
    structure (and the displaced-molecule images of data 2.0 until 2026-12-05 had sharp speckles, ~3x)."""
    from scipy.ndimage import gaussian_filter

    def excess_variance(image: np.ndarray) -> float:
        image = image.astype(np.float64)
        return float((image - gaussian_filter(image, 3.0)).var() / image.mean())

    sharp = microscope("actin", 0).acquire(**GOOD)[0]
    blurred, info = microscope("actin", 0, defocus_nm=defocus_nm).acquire(**GOOD)
    assert int(blurred.sum()) == int(sharp.sum())
    assert excess_variance(sharp) > 3.0 and excess_variance(blurred) < 1.2
    assert info["label_clean"] <= 0.15 and info["structure_similarity"] < 0.8


@pytest.mark.parametrize("structure, seed, kind, pixel_nm", FIELDS)
def test_label_falls_along_each_ladder(structure, seed, kind, pixel_nm):
    def clean(**params):
        return label(structure, seed, kind, pixel_nm, **params)[1]["label_clean"]
    # Fewer photons at the same settings (a dimmer label or a less efficient detector: what binomial
    # thinning of a real image is), then shorter dwell (fewer photons, and less bleaching).
    photons = [clean(photon_scale=s) for s in (2.0, 1.0, 0.5, 0.25, 0.1)]
    dwell = [clean(dwell_time_us=d) for d in (30.0, 12.0, 5.0, 2.0)]
    resolution = [clean(p_sted_mw=p) for p in (60.0, 20.0, 8.0, 3.0, 0.0)]
    scope, bleaching = microscope(structure, seed, kind, pixel_nm), []
    for _ in range(5):
        bleaching.append(scope.acquire(dwell_time_us=40.0, p_ex_uw=15.0, p_sted_mw=120.0)[1]["label_clean"])
    for ladder in (photons, dwell, resolution, bleaching):
        assert all(a > b for a, b in zip(ladder, ladder[1:], strict=False)), (photons, dwell, resolution, bleaching)


def test_every_class_appears_with_labels_from_the_rule():
    rng = np.random.default_rng(0)
    drawn = [synth.image_class(rng) for _ in range(2000)]
    for kind, share in synth.CLASSES.items():
        assert abs(drawn.count(kind) / len(drawn) - share) < 0.03, kind
    first = {}   # the first images of each class in a seeded dataset (the class draw is cheap)
    for index in range(600):
        kind = synth.image_class(np.random.default_rng(synth.image_seed(11, "actin", index)))
        if len(first.setdefault(kind, [])) < 3:
            first[kind].append(index)
    assert set(first) == set(synth.CLASSES)
    rows = {}
    for kind, indices in first.items():
        for index in indices:
            image, row = synth.simulate_one("actin", 11, index)
            assert row["class"] == kind and image.dtype == np.uint16
            rows.setdefault(kind, []).append(row["label_clean"])
    assert max(rows["shuffled"]) <= 0.05 and max(rows["empty"]) <= 0.05 and max(rows["confocal"]) <= 0.15
    assert max(rows["out_of_focus"]) <= 0.15 and max(rows["saturated"]) <= 0.35


def test_every_structure_and_pixel_size_appears_and_photons_cover_real_images():
    """A seeded draw of the training folder's mix: every synthetic kind and pysted map, every pixel size; and
    the photon range (5th-95th percentile of mean and peak counts of the STED images) covers the real
    images of validation/real-dev (mean 2.6-10, peak 63-158 counts)."""
    sources, pixels, means, peaks = set(), set(), [], []
    for index in range(60):
        image, row = synth.simulate_one("actin", 3, index)
        sources.add(row["source"])
        pixels.add(row["pixel_nm"])
        if row["class"] == "sted":
            means.append(image.mean())
            peaks.append(image.max())
    assert sources >= {"synthetic-rings", "synthetic-mesh", "synthetic-puncta", "synthetic-bundles", "pysted-factin"}
    assert pixels == set(synth.PIXEL_SIZE_WEIGHTS)
    assert np.percentile(means, 5) < 2.6 and np.percentile(means, 95) > 10, np.percentile(means, [5, 95])
    assert np.percentile(peaks, 5) < 63 and np.percentile(peaks, 95) > 158, np.percentile(peaks, [5, 95])


@pytest.mark.parametrize("structure, seed, kind, pixel_nm", FIELDS[::3])
def test_thinned_label_without_the_ideal_matches_the_simulator(structure, seed, kind, pixel_nm):
    """`stedq train --thin-share` labels a thinned copy from the image and labels.csv alone; the simulator,
    which knows the sample's ideal image, must give the same label to the same thinned counts."""
    from stedq.training.data.label import LABEL_INPUTS, quality_after

    scope = microscope(structure, seed, kind, pixel_nm)
    image, info = scope.acquire(**GOOD)
    rng = np.random.default_rng(seed)
    assert quality_after(image, image, 1.0, *[info[c] for c in LABEL_INPUTS]) == pytest.approx(
        info["label_clean"], abs=1e-9)
    previous = info["label_clean"]
    for fraction in (0.5, 0.25, 0.1):
        thinned = rng.binomial(image, fraction)
        estimated = quality_after(image, thinned, fraction, *[info[c] for c in LABEL_INPUTS])
        truth = scope.label(thinned, info)
        assert estimated == pytest.approx(truth["label_clean"], abs=0.02), (fraction, estimated, truth)
        assert estimated < previous
        previous = estimated


@pytest.mark.parametrize("structure, seed, kind, pixel_nm", FIELDS[::3])
def test_blurred_label_without_the_ideal_matches_the_simulator(structure, seed, kind, pixel_nm):
    """`stedq train --blur-share` labels a blurred copy (the same photons through a wider PSF) from the image
    and labels.csv alone: resolution widened in quadrature, SNR measured anew, the structure shown kept.
    The simulator, which knows the sample's ideal image, must give the same counts the same label, and the
    label falls with every step of blur."""
    from stedq.training.data.label import LABEL_INPUTS, blurred_copy, blurred_resolution_nm, quality_after

    scope = microscope(structure, seed, kind, pixel_nm)
    image, info = scope.acquire(**GOOD)
    rng = np.random.default_rng(seed)
    previous = info["label_clean"]
    for sigma_px in (1.0, 2.5, 5.0):
        blurred = blurred_copy(image, sigma_px, rng)
        assert abs(int(blurred.sum()) - int(image.sum())) < 5 * np.sqrt(image.sum())   # same photon budget
        resolution = blurred_resolution_nm(info["resolution_nm"], sigma_px, pixel_nm)
        resolution_nm, loss, similarity, saturation = (info[c] for c in LABEL_INPUTS)
        estimated = quality_after(blurred, blurred, 1.0, resolution, loss, similarity, saturation)
        truth = scope.label(blurred, {**info, "resolution_nm": resolution})
        assert estimated == pytest.approx(truth["label_clean"], abs=0.02), (sigma_px, estimated, truth)
        assert estimated < previous
        previous = estimated


def test_blurred_resolution_is_the_blurred_psf_width():
    """Widths add in quadrature: a Gaussian PSF blurred by a Gaussian is measured as wide as the rule says."""
    from scipy.ndimage import gaussian_filter

    from stedq.training.data.label import blurred_resolution_nm, fwhm_nm

    y, x = np.mgrid[-40:41, -40:41]
    psf = np.exp(-(x ** 2 + y ** 2) / (2 * 2.0 ** 2))      # sigma 2 px at 20 nm: FWHM ~94 nm
    width = fwhm_nm(psf, 20.0)
    for sigma_px in (1.0, 3.0, 5.0):
        assert fwhm_nm(gaussian_filter(psf, sigma_px), 20.0) == pytest.approx(
            blurred_resolution_nm(width, sigma_px, 20.0), rel=0.02)
