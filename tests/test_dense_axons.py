"""`stedq data synth --dense-axons`: axon networks drawn as dense, smooth, diffusely labelled fields (the
scale and background real axonal F-actin shows), every other image of the set unchanged."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from stedq.cli import main
from stedq.training.data.field_statistics import autocorrelation_half_width, background_share
from stedq.training.data.microscope import SimulatedMicroscope
from stedq.training.data.synth import generate


def _good_acquisitions(kind: str, seeds: range) -> list[np.ndarray]:
    return [SimulatedMicroscope("actin", seed=seed, kind=kind).acquire(20.0, 10.0, 50.0)[0] for seed in seeds]


def test_dense_fields_are_smoother_and_more_evenly_labelled_than_lattices():
    """At 20 nm and good settings the lattices' autocorrelation falls to half within ~4 px and their median
    pixel is ~6 % of the bright signal; the dense fields' ~10 px and ~15 % (docs/training.md)."""
    lattice, dense = _good_acquisitions("network", range(8)), _good_acquisitions("dense-network", range(8))
    lattice_width = np.median([autocorrelation_half_width(image) for image in lattice])
    dense_width = np.median([autocorrelation_half_width(image) for image in dense])
    assert lattice_width <= 6 and 8 <= dense_width <= 16, (lattice_width, dense_width)
    lattice_floor = np.median([background_share(image) for image in lattice])
    dense_floor = np.median([background_share(image) for image in dense])
    assert lattice_floor < 0.09 and 0.10 <= dense_floor <= 0.25, (lattice_floor, dense_floor)
    # About as many molecules (pysted's cost and the photon budget stay those of the lattices).
    molecules = [SimulatedMicroscope("actin", seed=s, kind=k).molecules_initial
                 for k in ("network", "dense-network") for s in range(8)]
    assert 0.5 < np.median(molecules[8:]) / np.median(molecules[:8]) < 2.0, molecules


def test_statistics_read_a_known_scale():
    """A field of Gaussian blobs of sd s: its autocorrelation (sd s*sqrt(2)) is at half height ~2.4 s wide."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    field = gaussian_filter(rng.poisson(0.01, (224, 224)).astype(float), 3.0)
    assert 5 <= autocorrelation_half_width(field) <= 9
    assert background_share(np.zeros((8, 8))) != background_share(np.zeros((8, 8)))   # nan: no signal
    assert background_share(np.r_[np.ones(50), np.full(50, 10.0)]) == pytest.approx(5.5 / 10)


def test_dense_axons_change_the_axon_networks_only(tmp_path):
    """Seed 0's images 2 and 4 are axon networks: they change; images 0, 1, 3 are the same bytes."""
    generate(tmp_path / "lattice", {"actin": 5}, seed=0, workers=1, progress=False)
    assert main(["data", "synth", "--out", str(tmp_path / "dense"), "--actin", "5", "--tubulin", "0",
                 "--seed", "0", "--dense-axons", "--workers", "1", "--no-progress"]) == 0

    def rows(folder):
        with open(folder / "actin" / "labels.csv", newline="") as handle:
            return list(csv.DictReader(handle))
    lattice, dense = rows(tmp_path / "lattice"), rows(tmp_path / "dense")
    assert [row["source"] for row in lattice][2::2] == ["synthetic-network"] * 2
    assert [row["source"] for row in dense][2::2] == ["synthetic-dense-network"] * 2
    for i in (0, 1, 3):
        assert lattice[i] == dense[i]
        assert (tmp_path / "lattice" / "actin" / lattice[i]["file"]).read_bytes() == \
            (tmp_path / "dense" / "actin" / dense[i]["file"]).read_bytes()
    assert json.loads((tmp_path / "dense" / "DONE").read_text())["dense_axons"] is True
    with pytest.raises(SystemExit, match="was generated with"):   # resuming must not mix the two sets
        generate(tmp_path / "dense", {"actin": 5}, seed=0, workers=1, progress=False)
