"""The labelled-folder loader and `stedq data check` on real files: round trips, dtype rescaling, and
every bad case rejected with a message naming the file."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from stedq.cli import main
from stedq.training.data import DatasetError, check_labelled_folder, load_labelled_folder, read_image


def _image(dtype=np.uint16, seed=0, size=224):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.random((size, size)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (size, size), endpoint=True).astype(dtype)


def _write(folder, name, image, **kwargs):
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / name, image, **kwargs)
    return folder / name


def test_round_trip_named_files(tmp_path):
    images = {f"img{i}-{score}.tiff": _image(seed=i) for i, score in enumerate(["0.25", "0.9", "0"])}
    for name, image in images.items():
        _write(tmp_path, name, image)
    _write(tmp_path, "extra-1.tif", _image(seed=7))   # .tif works too
    (tmp_path / "._img0-0.25.tiff").write_bytes(b"macOS resource fork")   # hidden files are skipped
    ds = load_labelled_folder(tmp_path)
    assert ds.names == ["extra-1", "img0-0.25", "img1-0.9", "img2-0"]
    np.testing.assert_allclose(ds.labels, [1.0, 0.25, 0.9, 0.0])
    assert ds.images.dtype == np.float32 and ds.images.shape == (4, 224, 224)
    np.testing.assert_allclose(ds.images[1], images["img0-0.25.tiff"] / 65535.0, atol=1e-7)
    assert ds.structures is None
    assert [p.name for p in ds.paths][0] == "extra-1.tif"
    # The hash depends on content only: the same files elsewhere give the same hash; a changed label not.
    copy = tmp_path / "copy"
    for path in ds.paths:
        _write(copy, path.name, tifffile.imread(path))
    assert load_labelled_folder(copy).content_hash == ds.content_hash
    (copy / "img1-0.9.tiff").rename(copy / "img1-0.8.tiff")
    assert load_labelled_folder(copy).content_hash != ds.content_hash


def test_labels_csv_with_structures(tmp_path):
    _write(tmp_path, "a.tiff", _image(seed=1))
    _write(tmp_path, "b.tiff", _image(seed=2))
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "score", "structure"])
        writer.writerow(["b.tiff", "0.75", "tubulin"])
        writer.writerow(["a.tiff", "0.5", "actin"])
    ds = load_labelled_folder(tmp_path)
    assert ds.names == ["b", "a"]
    np.testing.assert_allclose(ds.labels, [0.75, 0.5])
    assert ds.structures == ["tubulin", "actin"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32])
def test_integer_files_are_photon_counts_whatever_the_dtype(tmp_path, dtype):
    counts = np.random.default_rng(1).integers(0, 200, (224, 224))
    path = _write(tmp_path, f"c-{np.dtype(dtype).name}-0.5.tiff", counts.astype(dtype))
    image = read_image(path)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, (counts / np.float32(65535)).astype(np.float32))
    # by the contract, not the image's own range: a dim acquisition stays dim
    assert image.max() < 0.004


def test_float_files_on_the_model_scale_or_as_counts(tmp_path):
    unit = np.random.default_rng(2).random((224, 224)).astype(np.float32)
    np.testing.assert_array_equal(read_image(_write(tmp_path, "unit-0.5.tiff", unit)), unit)
    counts = np.full((224, 224), 3.0, np.float32)   # values above 1 cannot be on the model scale: counts
    np.testing.assert_allclose(read_image(_write(tmp_path, "hot-0.5.tiff", counts)), 3.0 / 65535)
    nan = unit.copy()
    nan[3, 3] = np.nan
    _write(tmp_path / "bad", "nan-0.5.tiff", nan)
    with pytest.raises(DatasetError, match=r"nan-0\.5\.tiff: .*NaN"):
        load_labelled_folder(tmp_path / "bad")


def test_single_page_stack_accepted_multi_page_rejected(tmp_path):
    _write(tmp_path, "one-0.5.tiff", _image()[None])
    assert load_labelled_folder(tmp_path).images.shape == (1, 224, 224)
    _write(tmp_path, "stack-0.5.tiff", np.stack([_image(seed=1), _image(seed=2), _image(seed=3)]),
           photometric="minisblack")
    with pytest.raises(DatasetError, match=r"stack-0\.5\.tiff: multi-page TIFF with 3 pages"):
        load_labelled_folder(tmp_path)


@pytest.mark.parametrize("setup, message", [
    (lambda d: (d / "broken-0.5.tiff").write_bytes(b"not a tiff at all"), r"broken-0\.5\.tiff: cannot read TIFF"),
    (lambda d: _write(d, "nolabel.tiff", _image()), r"nolabel\.tiff: missing label"),
    (lambda d: _write(d, "over-1.5.tiff", _image()), r"over-1\.5\.tiff: label 1\.5 is outside \[0, 1\]"),
    (lambda d: _write(d, "small-0.5.tiff", _image(size=100)),
     r"small-0\.5\.tiff: image is 100x100, expected 224x224"),
    (lambda d: _write(d, "rgb-0.5.tiff", np.arange(224 * 224 * 3, dtype=np.uint8).reshape(224, 224, 3)),
     r"rgb-0\.5\.tiff: .*colour image"),
    (lambda d: d.mkdir(exist_ok=True), r"empty: no \.tif/\.tiff images"),
])
def test_each_bad_case_names_the_file(tmp_path, setup, message):
    folder = tmp_path / "set"
    folder.mkdir()
    setup(folder)
    with pytest.raises(DatasetError, match=message):
        load_labelled_folder(folder)


def test_csv_problems(tmp_path):
    _write(tmp_path, "a.tiff", _image())
    _write(tmp_path, "unlisted.tiff", _image())
    (tmp_path / "labels.csv").write_text("file,score\na.tiff,-0.1\nmissing.tiff,0.5\n")
    problems = check_labelled_folder(tmp_path).problems
    assert any("a.tiff" in p and "outside [0, 1]" in p for p in problems)
    assert any("'missing.tiff' does not exist" in p for p in problems)
    assert any("unlisted.tiff: image has no row in labels.csv" in p for p in problems)
    (tmp_path / "labels.csv").write_text("name,value\na.tiff,0.5\n")
    with pytest.raises(DatasetError, match="needs a file column"):
        load_labelled_folder(tmp_path)


def test_synth_output_root_points_to_its_subfolders(tmp_path):
    _write(tmp_path / "actin", "a-0.5.tiff", _image())
    (tmp_path / "tubulin").mkdir()
    with pytest.raises(DatasetError, match="sub-folders actin, tubulin: pass one of them"):
        load_labelled_folder(tmp_path)


def test_check_reports_all_problems_at_once(tmp_path, capsys):
    _write(tmp_path, "good-0.5.tiff", _image())
    _write(tmp_path, "over-2.tiff", _image())
    _write(tmp_path, "small-0.1.tiff", _image(size=64))
    (tmp_path / "broken-0.3.tiff").write_bytes(b"\x00" * 10)
    report = check_labelled_folder(tmp_path)
    assert len(report.problems) == 3 and len(report.entries) == 1
    with pytest.raises(DatasetError) as raised:
        load_labelled_folder(tmp_path)
    assert len(raised.value.problems) == 3 and "3 problems" in str(raised.value)

    assert main(["data", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    for name in ("over-2.tiff", "small-0.1.tiff", "broken-0.3.tiff"):
        assert name in err
    assert "3 problem(s)" in err

    for bad in ("over-2.tiff", "small-0.1.tiff", "broken-0.3.tiff"):
        (tmp_path / bad).unlink()
    assert main(["data", "check", str(tmp_path)]) == 0
    assert "1 readable labelled images (1 uint16)" in capsys.readouterr().out


def test_committed_samples_load(repo_root):
    ds = load_labelled_folder(repo_root / "samples")
    assert len(ds) == 12 and sorted(set(ds.structures)) == ["actin", "tubulin"]
    assert ds.labels.min() < 0.2 and ds.labels.max() > 0.8      # across qualities
    assert all(name.rsplit("-", 1)[1] == f"{label:.4f}" for name, label in zip(ds.names, ds.labels, strict=True))
