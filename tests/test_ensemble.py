"""stedq ensemble: two tiny real runs (seeds 0 and 1) combined; evaluation and the exported graph score
the mean of the members' scores, the saturation factor included; runs that cannot combine are refused."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from stedq.bundle import read_manifest
from stedq.cli import main
from stedq.training.checkpoint import CheckpointError, build_model, load_checkpoint
from stedq.training.ensemble import combine
from stedq.training.evaluate import EvalOptions, Scorer, evaluate
from stedq.training.metrics import regression_metrics
from stedq.training.model import QualityNetEnsemble
from stedq.training.train import train
from tests.test_saturation_factor import COUNTS, clipped_images
from tests.test_training_train import config, tiny_dataset


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    ds = tiny_dataset(n=20)
    for seed in (0, 1):
        train(ds, root / f"seed{seed}", config(epochs=1, seed=seed, saturation_factor=True))
    return root, ds


def _scores(checkpoint: dict, images: np.ndarray) -> np.ndarray:
    return Scorer(checkpoint, device="cpu", precision="fp32")(images)


def test_the_ensemble_scores_the_mean_of_its_runs_in_evaluation_and_in_the_bundle(runs, capsys):
    root, ds = runs
    assert main(["ensemble", str(root / "seed0"), str(root / "seed1"), "--out", str(root / "ens")]) == 0
    assert "the mean of 2 runs (seeds 0, 1" in capsys.readouterr().out
    members = [load_checkpoint(root / f"seed{seed}") for seed in (0, 1)]
    ensemble = load_checkpoint(root / "ens")
    assert isinstance(build_model(ensemble), QualityNetEnsemble)
    assert ensemble["ensemble"]["members"] == 2 and ensemble["epoch"] == [1, 1]
    assert ensemble["config"]["seed"] == [0, 1]     # what the members differ in is a list ...
    assert ensemble["config"]["lr"] == members[0]["config"]["lr"]    # ... what they share is kept as it is
    assert ensemble["data"]["split"] == members[0]["data"]["split"]

    # clipped images: the saturation factor < 1 applies to the mean as to each member's score
    images = np.concatenate([ds.images[:4], (clipped_images(1) / COUNTS).astype(np.float32)])
    each = np.stack([_scores(m, images) for m in members])
    assert np.abs(each[0] - each[1]).max() > 1e-4    # the seeds do differ, so the mean is a real test
    mean = each.mean(axis=0)
    assert _scores(ensemble, images) == pytest.approx(mean, abs=1e-6)

    bundle = root / "bundle"
    assert main(["export", str(root / "ens"), "--out", str(bundle), "--variants", "none", "--no-rdf"]) == 0
    manifest = read_manifest(bundle)
    assert manifest.training["ensemble"]["members"] == 2 and manifest.training["epoch"] == [1, 1]
    session = ort.InferenceSession(str(bundle / manifest.variants["fp32"]), providers=["CPUExecutionProvider"])
    onnx_scores = session.run(None, {session.get_inputs()[0].name: images[:, None]})[0].squeeze(1)
    assert onnx_scores == pytest.approx(mean, abs=1e-5)

    results = evaluate(root / "ens", ds, {}, EvalOptions(monotonic_samples=0), out=root / "ens-eval")
    test_idx = [ds.names.index(n) for n in ensemble["data"]["split"]["test"]]
    assert "(epochs 1, 1)" in (root / "ens-eval" / "report.md").read_text().splitlines()[0]
    want = regression_metrics(_scores(ensemble, ds.images[test_idx]), np.asarray(ds.labels)[test_idx])
    assert results["test"]["metrics"]["rmse"] == pytest.approx(want["rmse"], abs=1e-6)


def test_runs_that_do_not_share_data_split_or_options_are_refused(runs, tmp_path):
    root, _ = runs
    a, b = load_checkpoint(root / "seed0"), load_checkpoint(root / "seed1")
    with pytest.raises(CheckpointError, match="splits differ"):
        split = {**b["data"]["split"], "test": b["data"]["split"]["train"][:2]}
        combine([a, {**b, "data": {**b["data"], "split": split}}])
    with pytest.raises(CheckpointError, match="different data"):
        combine([a, {**b, "data": {**b["data"], "hash": "other"}}])
    with pytest.raises(CheckpointError, match="saturation factor"):
        combine([a, {**b, "config": {**b["config"], "saturation_factor": False}}])
    with pytest.raises(CheckpointError, match="structure factor"):
        combine([a, {**b, "config": {**b["config"], "structure_factor": True}}])
    with pytest.raises(CheckpointError, match="normalizations differ"):
        combine([a, {**b, "normalization": {**b["normalization"], "std": 2 * b["normalization"]["std"]}}])
    with pytest.raises(CheckpointError, match="two or more"):
        combine([a])
    with pytest.raises(SystemExit, match="given twice"):
        main(["ensemble", str(root / "seed0"), str(root / "seed0" / "best.pt"), "--out", str(tmp_path / "e")])
    ensemble = combine([a, b])
    with pytest.raises(CheckpointError, match="already an ensemble"):
        combine([{**ensemble, "path": "ens/best.pt"}, a])
    # a damaged member count is named, not a shape error
    with pytest.raises(CheckpointError, match="'ensemble' must say how many members"):
        build_model({**ensemble, "ensemble": {"members": 1}, "path": "ens/best.pt"})
    with pytest.raises(CheckpointError, match="do not fit QualityNetEnsemble"):
        three = {**ensemble, "ensemble": {**ensemble["ensemble"], "members": 3}, "path": "ens/best.pt"}
        build_model(three)
    assert torch.equal(ensemble["model"]["members.1.head.9.weight"], b["model"]["head.9.weight"])
