"""stedq evaluate on a tiny real run: regression metrics, the simulated user study vs the random baseline,
unseen data, human records, the report files, and the monotonicity check on the simulated microscope."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stedq.training.checkpoint import load_checkpoint
from stedq.training.evaluate import EvalOptions, EvaluationError, evaluate
from stedq.training.metrics import groups_markdown, per_bin_metrics, per_group_metrics, regression_metrics
from stedq.training.train import Dataset, train
from stedq.training.userstudy import TesterRecord, read_records_csv, write_records_csv
from tests.test_data_ceiling import write_labels
from tests.test_training_train import PNG, config, tiny_dataset


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun")
    train(tiny_dataset(n=20), out, config(epochs=1))
    return out


def test_regression_metrics_by_hand():
    m = regression_metrics([0.1, 0.5, 0.7, 0.9], [0.0, 0.4, 0.8, 1.0])
    assert m["rmse"] == pytest.approx(0.1) and m["mae"] == pytest.approx(0.1)
    assert m["spearman"] == pytest.approx(1.0) and m["n"] == 4
    assert regression_metrics([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])["spearman"] is None  # constant: undefined
    bins = per_bin_metrics([0.1, 0.5, 0.7, 0.9], [0.0, 0.4, 0.8, 1.0])
    assert [b["n"] for b in bins] == [1, 0, 1, 0, 2] and bins[1]["rmse"] is None
    with pytest.raises(ValueError, match="3 predictions for 2 targets"):
        regression_metrics([0.1, 0.2, 0.3], [0.1, 0.2])
    rows = per_group_metrics([0.5, 0.2, 0.3, 0.1], [0.1, 0.2, 0.3, 0.0], ["sat", "sted", "sted", "sat"])
    assert [r["group"] for r in rows] == ["sat", "sted"]   # largest first, ties by name
    assert rows[0]["n"] == 2 and rows[0]["bias"] == pytest.approx(0.25) and rows[0]["mae"] == pytest.approx(0.25)
    assert rows[1]["bias"] == pytest.approx(0.0) and rows[1]["mean_target"] == pytest.approx(0.25)
    table = groups_markdown({"test": rows[:1], "train": rows})
    assert "| sat | 2 | 0.050 | +0.250 | 0.250 | 2 | 0.050 | +0.250 | 0.250 |" in table
    assert "| sted | – | – | – | – | 2 | 0.250 | +0.000 | 0.000 |" in table


def test_evaluate_writes_the_paper_report(run_dir, tmp_path):
    ds = tiny_dataset(n=20)
    ds.labels_clean = np.clip(ds.labels + 0.01, 0, 1)
    ds.path = str(tmp_path / "data")   # its labels.csv records the label's inputs, as synthetic data does
    write_labels(tmp_path / "data", ds.names, [20.0, 30.0], classes=["sted", "sted", "saturated"])
    unseen = tiny_dataset(n=8, seed=5)
    unseen.path = "other"
    human = tmp_path / "human.csv"
    write_records_csv([TesterRecord("ann", "img000", "network", 0.3, 0.35, "equal"),
                       TesterRecord("ann", "img001", "random", 0.3, 0.9, "target")], human)
    results = evaluate(run_dir, ds, {"unseen-set": unseen},
                       EvalOptions(testers=3, monotonic_samples=0, records=[human]), out=tmp_path / "ev")
    out = tmp_path / "ev"
    for png in ("scatter.png", "study_tpe.png", "human_study_tpe.png"):
        assert (out / png).read_bytes()[:8] == PNG, png
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["metrics"]["n"] == 2 and metrics["unseen"]["unseen-set"]["metrics"]["n"] == 8
    assert metrics["simulated_study"]["true_quality"] == "noise-free virtual-expert quality"
    assert set(metrics["simulated_study"]["tables"]) == {"network", "random"}
    records = read_records_csv(out / "study_records.csv")
    assert len(records) == 3 * 2 * 2                      # testers x systems x test images
    assert {r.target for r in records} <= {float(f"{t:.6g}") for t in ds.labels}
    report = (out / "report.md").read_text()
    for heading in ("## Test split (held out)", "## Unseen: unseen-set", "## User study with simulated testers",
                    "## User study: human tester records", "| confusion C |"):
        assert heading in report
    assert "Monotonicity" not in report
    assert metrics["test"]["ceiling"]["n"] == 2 and "unseen-set" in metrics["unseen"]
    assert metrics["unseen"]["unseen-set"]["ceiling"] is None   # no labels.csv: nothing to say
    assert report.count("the pixel-size-blind oracle reaches Spearman") == 1
    per_class = metrics["per_class"]   # test and training split, against the noise-free quality
    assert sum(r["n"] for r in per_class["test"]) == 2
    assert sum(r["n"] for r in per_class["train"]) == len(load_checkpoint(run_dir)["data"]["split"]["train"])
    assert {r["group"] for r in per_class["train"]} == {"sted", "saturated"}
    assert "### Per acquisition class" in report and "| saturated |" in report
    thinning = metrics["thinning"]   # the test split's images with label >= 0.1, two steps each
    assert thinning["images"] == int((ds.labels[select_test(run_dir, ds)] >= 0.1).sum())
    assert thinning["steps"] == 2 * thinning["images"] and 0 <= thinning["falls"] <= thinning["steps"]
    if thinning["steps"]:
        assert f"{thinning['falls']} of {thinning['steps']} steps" in report
    assert metrics["floor"]["images"] == thinning["images"] and metrics["floor"]["mean_label"] is None
    assert metrics["blur"]["images"] == thinning["images"] and metrics["blur"]["steps"] == 3 * thinning["images"]
    # the checkpoint now carries the test metrics (what the exported bundle reports)
    assert load_checkpoint(run_dir)["metrics"]["test"] == results["test"]["metrics"]


def select_test(run_dir, ds):
    names = load_checkpoint(run_dir)["data"]["split"]["test"]
    return [ds.names.index(name) for name in names]


def test_thinning_check_counts_the_steps_where_the_score_falls():
    """A judge that follows the photons falls at every step, one that prefers dim images at none; images
    the expert sees nothing in (label < 0.1) are left out."""
    from stedq.training.evaluate import thinning_check

    rng = np.random.default_rng(0)
    images = (rng.poisson(50, (5, 224, 224)) / 65535).astype(np.float32)
    labels = np.array([0.5, 0.9, 0.05, 0.3, 0.7])
    brighter_is_better = thinning_check(lambda x: x.mean(axis=(1, 2)), images, labels, seed=0)
    assert brighter_is_better == {**brighter_is_better, "images": 4, "steps": 8, "falls": 8, "share": 1.0}
    assert brighter_is_better["mean_score"][0] > brighter_is_better["mean_score"][1] > brighter_is_better["mean_score"][2]
    dimmer_is_better = thinning_check(lambda x: -x.mean(axis=(1, 2)), images, labels, seed=0)
    assert dimmer_is_better["falls"] == 0 and dimmer_is_better["share"] == 0.0


def test_floor_check_sets_the_score_beside_the_rules_label():
    """Simulated STED images over a flat floor: the label the rule gives the floored counts (the base is
    the clean label), and the score of a judge that follows the SNR falls with the floor."""
    from stedq.training.data.label import LABEL_INPUTS, image_snr
    from stedq.training.data.microscope import SimulatedMicroscope
    from stedq.training.evaluate import floor_check

    images, infos = [], []
    for seed in range(3):
        image, info = SimulatedMicroscope("actin", seed=seed).acquire(dwell_time_us=10.0, p_ex_uw=10.0, p_sted_mw=60.0)
        images.append(image / 65535), infos.append(info)
    labels = np.array([info["label_clean"] for info in infos])
    components = np.array([[info[c] for c in LABEL_INPUTS] for info in infos])

    def snr_judge(batch):
        return np.array([image_snr(np.rint(x * 65535))[0] for x in batch])
    result = floor_check(snr_judge, np.array(images, np.float32), labels, 0, components)
    assert result["images"] == 3 and result["floor_counts"] == [0.0, 2.0, 5.0]
    assert result["mean_label"][0] == pytest.approx(labels.mean(), abs=1e-4)   # rounded to 4 places
    assert result["mean_label"][0] > result["mean_label"][1] > result["mean_label"][2]
    assert result["mean_score"][0] > result["mean_score"][1] > result["mean_score"][2]


def test_evaluate_refuses_other_data(run_dir, tmp_path):
    other = Dataset(np.zeros((12, 224, 224), np.float32), np.zeros(12, np.float32),
                    [f"x{i}" for i in range(12)], path="other")
    with pytest.raises(EvaluationError, match="not in the dataset.*--data"):
        evaluate(run_dir, other, {}, EvalOptions(monotonic_samples=0), out=tmp_path)


def test_monotonicity_series_on_the_simulated_microscope():
    from stedq.training.monotonicity import check_monotonicity, monotonicity_markdown

    # a stand-in scorer that is not the network: mean photon count / 10 (falls with dwell; rises without
    # depletion, since the donut no longer quenches the fluorescence)
    result = check_monotonicity(lambda images: images.reshape(len(images), -1).mean(axis=1) / 10.0,
                                samples=1, progress=False, depletion_mw=(40.0, 0.0), dwell_us=(60.0, 6.0),
                                repeats=1)
    assert set(result) == {"depletion", "dwell", "bleaching"}
    for axis in result.values():
        assert axis["mean_label_clean"][0] > axis["mean_label_clean"][-1]   # the virtual expert agrees
        assert len(axis["mean_score"]) == len(axis["levels"]) == 2
    assert result["dwell"]["mean_decreasing"] is True
    assert result["depletion"]["mean_decreasing"] is False
    assert "| dwell | 60 µs → 6 µs |" in monotonicity_markdown(result)
    # without bleaching the image shows the whole label; a bleaching scan's fading is partly invisible
    for axis in ("depletion", "dwell"):
        assert result[axis]["mean_label_image"] == pytest.approx(result[axis]["mean_label_clean"], abs=1e-4)
    fading = result["bleaching"]
    assert fading["mean_label_image"][0] == pytest.approx(fading["mean_label_clean"][0], abs=1e-4)
    assert fading["mean_label_image"][1] > fading["mean_label_clean"][1] + 0.01
    assert "the part the image shows" in monotonicity_markdown(result)


def test_blur_check_sets_the_score_beside_the_rules_label():
    """Simulated STED images blurred 1.5 / 3 / 5 px with the same photons: a judge of sharpness (pixel-to-pixel
    contrast of the smoothed image) falls at every step and halves by 5 px, one that prefers smooth images
    never falls; the rule's label falls from the clean label at every step."""
    from scipy.ndimage import gaussian_filter

    from stedq.training.data.label import LABEL_INPUTS
    from stedq.training.data.microscope import SimulatedMicroscope
    from stedq.training.evaluate import blur_check

    images, infos = [], []
    for seed in range(3):
        image, info = SimulatedMicroscope("actin", seed=seed).acquire(dwell_time_us=40.0, p_ex_uw=15.0, p_sted_mw=60.0)
        images.append(image / 65535), infos.append(info)
    images, labels = np.array(images, np.float32), np.array([info["label_clean"] for info in infos])
    components = np.array([[info[c] for c in LABEL_INPUTS] for info in infos])
    pixel_nm = np.array([info["pixel_nm"] for info in infos])

    def sharpness(batch):
        smooth = gaussian_filter(batch.astype(np.float64), (0, 1, 1))
        return np.abs(np.diff(smooth, axis=2)).mean(axis=(1, 2)) / smooth.mean(axis=(1, 2))
    sharp = blur_check(sharpness, images, labels, 0, components, pixel_nm)
    assert sharp == {**sharp, "images": 3, "steps": 9, "falls": 9, "share": 1.0, "confocal_half": 3}
    assert sharp["mean_label"][0] == pytest.approx(labels.mean(), abs=1e-3)
    assert all(np.diff(sharp["mean_label"]) < 0)
    smooth_is_better = blur_check(lambda x: -sharpness(x), images, labels, 0)
    assert smooth_is_better["falls"] == 0 and smooth_is_better["mean_label"] is None
