"""The simulated microscope: the virtual-expert label responds to the acquisition parameters the way an
expert's does, bleaching accumulates, seeds reproduce bytes, and the vectorized scan agrees with pysted's."""

from __future__ import annotations

import numpy as np
import pytest

from stedq.training.data import label as expert
from stedq.training.data.microscope import PARAMETER_RANGES, SimulatedMicroscope, resolution_nm


def _clean_label(structure, seed, **params):
    _, info = SimulatedMicroscope(structure, seed=seed).acquire(**params)
    return info["label_clean"], info


def test_resolution_improves_with_depletion_power():
    widths = [resolution_nm(10.0, p) for p in (0.0, 5.0, 20.0, 60.0, 150.0)]
    assert all(a > b for a, b in zip(widths, widths[1:], strict=False))
    assert 150 < widths[0] < 200      # confocal-like
    assert widths[-1] < 50            # full STED


@pytest.mark.parametrize("structure, seed", [("actin", 3), ("tubulin", 4)])
def test_label_rises_with_depletion_power(structure, seed):
    labels = [_clean_label(structure, seed, dwell_time_us=30, p_ex_uw=10, p_sted_mw=p)[0]
              for p in (0.0, 5.0, 15.0, 40.0)]
    assert all(a < b for a, b in zip(labels, labels[1:], strict=False)), labels


@pytest.mark.parametrize("structure, seed", [("actin", 5), ("tubulin", 6)])
def test_label_rises_with_dwell_time(structure, seed):
    labels = [_clean_label(structure, seed, dwell_time_us=d, p_ex_uw=8, p_sted_mw=40)[0]
              for d in (3.0, 10.0, 30.0)]
    assert all(a < b for a, b in zip(labels, labels[1:], strict=False)), labels
    _, info = _clean_label(structure, seed, dwell_time_us=3.0, p_ex_uw=8, p_sted_mw=40)
    _, longer = _clean_label(structure, seed, dwell_time_us=30.0, p_ex_uw=8, p_sted_mw=40)
    assert longer["snr"] > info["snr"]


def test_the_optimum_within_a_bleaching_budget_lies_inside_the_ranges():
    # The acquisition loop maximizes the score within a bleaching budget (clients/loop.py, default 0.15),
    # as the paper's does. The minimum settings give a noisy confocal-like image; the maximum gives a
    # sharp one but bleaches far beyond any budget; good settings inside the ranges do well within it.
    high = {name: hi for name, (lo, hi) in PARAMETER_RANGES.items()}
    low = {name: lo for name, (lo, hi) in PARAMETER_RANGES.items()}
    good = {"dwell_time_us": 30.0, "p_ex_uw": 10.0, "p_sted_mw": 50.0}
    info = {name: _clean_label("actin", 11, **params)[1] for name, params in
            (("high", high), ("low", low), ("good", good))}
    assert info["good"]["label_clean"] > info["low"]["label_clean"] + 0.4, info
    assert info["good"]["bleaching"] < 0.15 < 0.3 < info["high"]["bleaching"]


def test_repeated_acquisitions_bleach_the_same_sample():
    scope = SimulatedMicroscope("actin", seed=2)
    infos = [scope.acquire(dwell_time_us=40, p_ex_uw=15, p_sted_mw=80)[1] for _ in range(3)]
    fractions = [info["bleached_fraction"] for info in infos]
    assert 0 < fractions[0] < fractions[1] < fractions[2] < 1
    assert infos[2]["molecules"] < infos[0]["molecules"]
    assert infos[2]["signal_counts"] < infos[0]["signal_counts"]
    image, info = SimulatedMicroscope("actin", seed=2).acquire(40, 15, 80, bleach=False)
    assert info["bleaching"] == 0 and info["bleached_fraction"] == 0 and info["structure_loss"] == 0


def test_a_faded_structure_lowers_the_label_scan_after_scan():
    # The label's bleaching term is what the image shows: the structure already lost when it is taken
    # (earlier scans, half of this one), so re-scans of one field rate lower and lower.
    scope = SimulatedMicroscope("actin", seed=10_000)
    infos = [scope.acquire(dwell_time_us=80, p_ex_uw=10, p_sted_mw=100)[1] for _ in range(4)]
    losses = [info["structure_loss"] for info in infos]
    assert 0 < losses[0] < losses[1] < losses[2] < losses[3] < 1
    assert abs(losses[0] - infos[0]["bleaching"] / 2) < 1e-9   # first scan: half its own bleaching
    labels = [info["label_clean"] for info in infos]
    assert all(a - b > 0.03 for a, b in zip(labels, labels[1:], strict=False)), labels


def test_longer_dwell_still_rates_higher_despite_its_own_bleaching():
    # The bleaching a scan causes after a pixel is recorded is not in the image: doubling the dwell at
    # good settings must not rate lower (the old per-scan term made 80 us worse than 40 us).
    labels = [_clean_label("actin", 10_000, dwell_time_us=d, p_ex_uw=10, p_sted_mw=60)[0] for d in (20, 40, 80)]
    assert labels[0] < labels[1] < labels[2], labels


def test_acquire_output_and_determinism():
    a, info_a = SimulatedMicroscope("tubulin", seed=9).acquire(dwell_time_us=20, p_ex_uw=10, p_sted_mw=30)
    b, info_b = SimulatedMicroscope("tubulin", seed=9).acquire(dwell_time_us=20, p_ex_uw=10, p_sted_mw=30)
    c, _ = SimulatedMicroscope("tubulin", seed=10).acquire(dwell_time_us=20, p_ex_uw=10, p_sted_mw=30)
    assert a.dtype == np.uint16 and a.shape == (224, 224)
    assert a.tobytes() == b.tobytes() and info_a == info_b
    assert a.tobytes() != c.tobytes()
    assert 0 < a.max() < 5000          # photon counts, not stretched to the uint16 range
    for key in ("dwell_time_us", "p_ex_uw", "p_sted_mw", "bleached_fraction", "label", "resolution_nm",
                "snr", "bleaching", "label_clean"):
        assert key in info_a
    assert 0.0 <= info_a["label"] <= 1.0
    assert abs(info_a["label"] - info_a["label_clean"]) < 5 * expert.LABEL_NOISE_SD


def test_bad_parameters_are_rejected_clearly():
    scope = SimulatedMicroscope("actin", seed=0)
    with pytest.raises(ValueError, match="p_sted_mw=5000.0 is far outside"):
        scope.acquire(dwell_time_us=10, p_ex_uw=10, p_sted_mw=5000)
    with pytest.raises(ValueError, match="dwell_time_us must be a finite number"):
        scope.acquire(dwell_time_us=float("nan"), p_ex_uw=10, p_sted_mw=10)
    with pytest.raises(ValueError, match="unknown structure 'myosin'"):
        SimulatedMicroscope("myosin")


def test_vectorized_scan_matches_pysted():
    """Our line-by-line scan against pysted's per-pixel scan on a small field (pysted is slow)."""
    from pysted import base

    from stedq.training.data import scan
    from stedq.training.data.microscope import _pysted_microscope

    scope = _pysted_microscope()
    rng = np.random.default_rng(0)
    field = np.zeros((64, 64), np.int64)
    field[rng.integers(0, 64, 400), rng.integers(0, 64, 400)] += rng.integers(1, 6, 400)
    pad = scope.cache(20e-9)[0].shape[0] // 2
    dwell, p_ex, p_sted = 60e-6, 20e-6, 120e-3

    datamap = base.Datamap(field, 20e-9)
    datamap.set_roi(scope.cache(20e-9)[0], "max")
    _, _, reference = scope.get_signal_and_bleach(datamap, 20e-9, dwell, p_ex, p_sted, bleach=False,
                                                  update=False, seed=1)
    ours, _ = scan.raster_scan(scope, np.pad(field, pad), 20e-9, dwell, p_ex, p_sted, False, rng)
    np.testing.assert_allclose(ours, reference["intensity"], rtol=1e-9, atol=1e-12 * ours.max())

    # With bleaching both are random: compare the bleached fraction with its exact expectation.
    _, k_bleach = scan.optics(scope, 20e-9, p_ex, p_sted)
    from scipy.signal import fftconvolve
    dose = fftconvolve(np.ones((64, 64)), k_bleach * dwell, mode="full")
    expected = 1 - (np.pad(field, pad) * np.exp(-dose)).sum() / field.sum()
    assert 0.05 < expected < 0.95
    _, left = scan.raster_scan(scope, np.pad(field, pad), 20e-9, dwell, p_ex, p_sted, True, rng)
    bleached = scope.get_signal_and_bleach(datamap, 20e-9, dwell, p_ex, p_sted, bleach=True,
                                           update=False, seed=3)[1]["base"]
    assert 1 - left.sum() / field.sum() == pytest.approx(expected, abs=0.05)
    assert 1 - bleached.sum() / field.sum() == pytest.approx(expected, abs=0.05)
