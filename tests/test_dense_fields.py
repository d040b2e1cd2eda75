"""`stedq data synth --dense-axons / --dense-bundles`: axon networks and tubulin bundles drawn as dense,
diffusely labelled fields (the scale and background real axonal F-actin and tubulin show), every other
image of the set unchanged."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from stedq.cli import main
from stedq.training.data.field_statistics import autocorrelation_half_width, background_share
from stedq.training.data.microscope import SimulatedMicroscope
from stedq.training.data.synth import generate, simulate_one


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


def test_dense_tubulin_fields_carry_a_strong_uneven_label():
    """Tubulin bundles lie on a dark field (median pixel 0); the dense fields' median is ~20 % of the
    bright signal, at about the bundles' scale."""
    sparse, dense = _good_acquisitions("bundles", range(6)), _good_acquisitions("dense-bundle-network", range(6))
    assert np.median([background_share(image) for image in sparse]) < 0.03
    assert 0.12 <= np.median([background_share(image) for image in dense]) <= 0.35
    assert 8 <= np.median([autocorrelation_half_width(image) for image in dense]) <= 18


def test_statistics_read_a_known_scale():
    """A field of Gaussian blobs of sd s: its autocorrelation (sd s*sqrt(2)) is at half height ~2.4 s wide."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    field = gaussian_filter(rng.poisson(0.01, (224, 224)).astype(float), 3.0)
    assert 5 <= autocorrelation_half_width(field) <= 9
    assert background_share(np.zeros((8, 8))) != background_share(np.zeros((8, 8)))   # nan: no signal
    assert background_share(np.r_[np.ones(50), np.full(50, 10.0)]) == pytest.approx(5.5 / 10)


def test_dense_fields_change_their_kinds_only(tmp_path):
    """Seed 0's first six images: 0, 1, 3 tubulin bundles, 2 and 4 axon networks, 5 puncta. Dense axons
    change the networks only, dense bundles the bundles only; the puncta stay the same bytes. Both are the
    default (data 2.1); --no-dense-* gives data 2.0's kinds back."""
    generate(tmp_path / "lattice", {"actin": 6}, seed=0, workers=1, progress=False, dense=())
    assert main(["data", "synth", "--out", str(tmp_path / "axons"), "--actin", "6", "--tubulin", "0",
                 "--seed", "0", "--no-dense-bundles", "--workers", "1", "--no-progress"]) == 0
    assert main(["data", "synth", "--out", str(tmp_path / "both"), "--actin", "6", "--tubulin", "0",
                 "--seed", "0", "--workers", "1", "--no-progress"]) == 0

    def rows(folder):
        with open(tmp_path / folder / "actin" / "labels.csv", newline="") as handle:
            return list(csv.DictReader(handle))

    def same(i, a, b):
        return rows(a)[i] == rows(b)[i] and (tmp_path / a / "actin" / rows(a)[i]["file"]).read_bytes() == \
            (tmp_path / b / "actin" / rows(b)[i]["file"]).read_bytes()
    sources = {folder: [row["source"][len("synthetic-"):] for row in rows(folder)]
               for folder in ("lattice", "axons", "both")}
    assert sources == {"lattice": ["bundles", "bundles", "network", "bundles", "network", "puncta"],
                       "axons": ["bundles", "bundles", "dense-network", "bundles", "dense-network", "puncta"],
                       "both": ["dense-bundle-network"] * 2 + ["dense-network", "dense-bundle-network",
                                                               "dense-network", "puncta"]}
    assert [same(i, "lattice", "axons") for i in range(6)] == [True, True, False, True, False, True]
    assert [same(i, "axons", "both") for i in range(6)] == [False, False, True, False, True, True]
    done = json.loads((tmp_path / "both" / "DONE").read_text())
    assert done["dense_axons"] is True and done["dense_bundles"] is True
    with pytest.raises(SystemExit, match="was generated with"):   # resuming must not mix two sets
        generate(tmp_path / "both", {"actin": 6}, seed=0, workers=1, progress=False, dense=("axons",))
    with pytest.raises(SystemExit, match="was generated with"):   # a data 2.0 folder is not resumed as 2.1
        generate(tmp_path / "lattice", {"actin": 6}, seed=0, workers=1, progress=False)


def test_empty_fields_do_not_depend_on_the_dense_kinds():
    """Seed 0's image 18 is an empty field drawn over a dense kind: the same bytes and background in data 2.0
    and 2.1 (a copied data 2.0 folder re-simulated for the dense kinds only is then the same set)."""
    sparse, sparse_row = simulate_one("actin", 0, 18, dense=())
    dense, dense_row = simulate_one("actin", 0, 18, dense=("axons", "bundles"))
    assert sparse_row["class"] == "empty" and sparse_row["source"] == "empty"
    assert sparse_row["background_cps"] == dense_row["background_cps"]
    assert np.array_equal(sparse, dense) and sparse.any()
