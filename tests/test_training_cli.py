"""`stedq train` and `stedq evaluate` from the command line on a folder of real uint16 TIFFs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from stedq.cli import main


def write_folder(folder, n=12, seed=0, size=224):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = rng.uniform(0, 1)
        counts = rng.poisson(5 + 200 * label, (size, size)).astype(np.uint16)
        tifffile.imwrite(folder / f"cell{i:03d}-{label:.4f}.tiff", counts)
    return folder


def test_train_then_evaluate_from_the_cli(tmp_path, capsys):
    data = write_folder(tmp_path / "actin")
    unseen = write_folder(tmp_path / "tubulin", n=6, seed=1)
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--epochs", "1", "--batch-size", "8",
                 "--precision", "fp32", "--no-augment", "--seed", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["run"] == str(run) and printed["epochs_run"] == 1
    from stedq.training.checkpoint import load_checkpoint
    checkpoint = load_checkpoint(run)
    assert checkpoint["config"]["seed"] == 3 and checkpoint["config"]["augment"] is False
    assert checkpoint["data"]["path"] == str(data) and len(checkpoint["data"]["hash"]) == 64
    # evaluate finds the data through the path recorded in the checkpoint
    assert main(["evaluate", str(run), "--unseen", str(unseen), "--monotonic-samples", "0",
                 "--testers", "2"]) == 0
    brief = json.loads(capsys.readouterr().out)
    assert brief["test"]["n"] == 1 and brief["unseen"]["tubulin"]["n"] == 6
    assert (run / "evaluation" / "report.md").is_file()
    # two unseen folders of the same name are both reported, each named with its parent
    other = write_folder(tmp_path / "other" / "tubulin", n=4, seed=2)
    assert main(["evaluate", str(run), "--unseen", str(unseen), "--unseen", str(other), "--monotonic-samples",
                 "0", "--testers", "2"]) == 0
    brief = json.loads(capsys.readouterr().out)
    assert {name: m["n"] for name, m in brief["unseen"].items()} == {f"{tmp_path.name}/tubulin": 6,
                                                                     "other/tubulin": 4}


def test_bad_folders_get_errors_naming_the_file(tmp_path):
    bad = write_folder(tmp_path / "bad")
    tifffile.imwrite(bad / "odd-1.3000.tiff", np.zeros((224, 224), np.uint16))
    tifffile.imwrite(bad / "small-0.5000.tiff", np.zeros((100, 100), np.uint16))
    with pytest.raises(SystemExit) as error:
        main(["train", str(bad), "--out", str(tmp_path / "run")])
    message = str(error.value)
    assert "odd-1.3000.tiff" in message and "outside [0, 1]" in message
    assert "small-0.5000.tiff" in message and "100x100" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="empty"):
        main(["train", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match="no such checkpoint"):
        main(["evaluate", str(tmp_path / "nothing")])
