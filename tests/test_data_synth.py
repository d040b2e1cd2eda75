"""`stedq data synth` and `preview` end to end on a few images: files like a microscope's export, same
seed gives the same bytes, an interrupted run resumes, and the loader reads the result."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from stedq.cli import main
from stedq.training.data import load_labelled_folder
from stedq.training.data.synth import CSV_FIELDS, generate
from tests.conftest import REPO_ROOT


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".rows" not in p.parts and p.name != "DONE"}


def test_synth_writes_a_labelled_dataset_and_is_reproducible(tmp_path):
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--actin", "3", "--tubulin", "2", "--seed", "7",
                 "--workers", "1", "--no-progress"]) == 0
    done = json.loads((out / "DONE").read_text())
    assert done["counts"] == {"actin": 3, "tubulin": 2} and done["simulated_images"] == 5

    actin = load_labelled_folder(out / "actin")
    assert len(actin) == 3 and actin.structures == ["actin"] * 3
    assert all(0 <= label <= 1 for label in actin.labels)
    raw = tifffile.imread(actin.paths[0])
    assert raw.dtype == np.uint16 and raw.shape == (224, 224) and 0 < raw.max() < 20000
    # File names carry the label, as the paper's code expects.
    for path, label in zip(actin.paths, actin.labels, strict=True):
        assert path.name.endswith(f"-{label:.4f}.tiff")
    with open(out / "tubulin" / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == CSV_FIELDS and len(rows) == 2
    assert {row["structure"] for row in rows} == {"tubulin"}
    manifest = json.loads((out / "tubulin" / "manifest.json").read_text())
    assert manifest["content_hash"] == load_labelled_folder(out / "tubulin").content_hash
    assert manifest["images"] == 2

    # Same seed, other folder, two workers: the same bytes. Another seed: different images.
    again = tmp_path / "again"
    generate(again, {"actin": 3, "tubulin": 2}, seed=7, workers=2, progress=False)
    assert _files(again) == _files(out)
    other = tmp_path / "other"
    generate(other, {"actin": 1}, seed=8, workers=1, progress=False)
    first = next((out / "actin").glob("actin00000-*.tiff")).read_bytes()
    assert next((other / "actin").glob("actin00000-*.tiff")).read_bytes() != first

    # Interrupted run: a missing image (and a half-written one) are redone, the rest kept.
    victim = next((out / "actin").glob("actin00001-*.tiff"))
    victim.unlink()
    (out / "actin" / "actin00002-0.1234.tiff.part").write_bytes(b"half")
    (out / "DONE").unlink()
    kept = next((out / "actin").glob("actin00000-*.tiff")).stat().st_mtime_ns
    generate(out, {"actin": 3, "tubulin": 2}, seed=7, workers=1, progress=False)
    assert json.loads((out / "DONE").read_text())["simulated_images"] == 1
    assert next((out / "actin").glob("actin00000-*.tiff")).stat().st_mtime_ns == kept
    assert _files(out) == _files(again)

    # Resuming with other settings, or with fewer images than are there, would mix datasets: refused.
    with pytest.raises(SystemExit, match="was generated with"):
        generate(out, {"actin": 3, "tubulin": 2}, seed=8, workers=1, progress=False)
    with pytest.raises(SystemExit, match="holds 1 images beyond the 2 asked for"):
        generate(out, {"actin": 2}, seed=7, workers=1, progress=False)

    # `stedq train` reads what --thin-share needs from labels.csv, row by row in the loader's order.
    from stedq.training.cli import load_dataset
    from stedq.training.data.label import LABEL_INPUTS
    dataset = load_dataset(out / "tubulin")
    by_file = {row["file"]: row for row in rows}
    expected = [[float(by_file[name + ".tiff"][c]) for c in LABEL_INPUTS] for name in dataset.names]
    assert np.array_equal(dataset.label_components, expected)
    assert np.array_equal(dataset.labels_clean, [float(by_file[name + ".tiff"]["label_clean"]) for name in dataset.names])

    # Preview: a contact sheet, a histogram and the label factors per structure, photon counts beside the
    # real images, one sheet per source and class.
    real = REPO_ROOT / "validation" / "real-dev"
    assert main(["data", "preview", str(out), "--out", str(tmp_path / "png"), "--per-bin", "2",
                 "--real", str(real)]) == 0
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert pngs == ["actin-contact_sheet.png", "actin-counts_vs_real.png", "actin-label_factors.png",
                    "actin-label_histogram.png", "class_sheet.png", "tubulin-contact_sheet.png",
                    "tubulin-counts_vs_real.png", "tubulin-label_factors.png", "tubulin-label_histogram.png"]
    for name in pngs:
        data = (tmp_path / "png" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

    # Calibration plots from the generated labels.csv (the label map is slow: docs only).
    from stedq.training.data.calibration import components_plot, resolution_plot
    for png in (components_plot(out / "actin" / "labels.csv", tmp_path / "c.png"),
                resolution_plot(tmp_path / "r.png")):
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_balanced_mode_spreads_labels(tmp_path):
    generate(tmp_path, {"actin": 4}, seed=1, workers=1, balanced=True, progress=False)
    labels = load_labelled_folder(tmp_path / "actin").labels
    # Images 0-3 aim at the four lowest of ten bins (0.05, 0.15, 0.25, 0.35).
    assert labels.max() < 0.6 and labels.min() < 0.2, labels


def test_a_fixed_pixel_size_changes_the_pixel_size_only(tmp_path):
    """--pixel-nm: the same seed's classes and acquisition parameters, every image at one pixel size (the
    pair of sets that measures what the varied pixel size costs a model)."""
    generate(tmp_path / "drawn", {"actin": 3}, seed=7, workers=1, progress=False)
    assert main(["data", "synth", "--out", str(tmp_path / "fixed"), "--actin", "3", "--tubulin", "0",
                 "--seed", "7", "--pixel-nm", "30", "--workers", "1", "--no-progress"]) == 0

    def rows(folder):
        with open(folder / "actin" / "labels.csv", newline="") as handle:
            return list(csv.DictReader(handle))
    drawn, fixed = rows(tmp_path / "drawn"), rows(tmp_path / "fixed")
    assert {row["pixel_nm"] for row in fixed} == {"30"} and {row["pixel_nm"] for row in drawn} != {"30"}
    for key in ("class", "source", "dwell_time_us", "p_ex_uw", "p_sted_mw", "acquisition"):
        assert [row[key] for row in fixed] == [row[key] for row in drawn], key
    assert json.loads((tmp_path / "fixed" / "DONE").read_text())["pixel_nm"] == 30.0
    with pytest.raises(SystemExit, match="was generated with"):
        generate(tmp_path / "fixed", {"actin": 3}, seed=7, workers=1, progress=False, pixel_nm=25.0)
    with pytest.raises(SystemExit, match="outside 5-100 nm"):
        main(["data", "synth", "--out", str(tmp_path / "bad"), "--pixel-nm", "0"])
