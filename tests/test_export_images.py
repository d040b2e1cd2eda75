"""Calibration and test images for `stedq export`: a labelled dataset with the checkpoint's split, or
plain image folders, with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from stedq.export.errors import ExportError
from stedq.export.images import load_images, pixel_sizes_nm


@pytest.fixture()
def labelled(tmp_path):
    """A labelled folder in the paper's naming (<name>-<score>.tiff), uint16 photon counts."""
    rng = np.random.default_rng(0)
    for index in range(6):
        image = (np.full((224, 224), index * 1000) + rng.integers(0, 100, (224, 224))).astype(np.uint16)
        tifffile.imwrite(tmp_path / f"img{index}-{index / 10:.1f}.tiff", image)
    return tmp_path


def test_labelled_dataset_split_by_name(labelled):
    images = load_images(labelled, "test", names=["img4-0.4", "img1-0.1"])
    assert images.shape == (2, 224, 224) and images.dtype == np.float32
    # selected by name, in the split's order, rescaled by the dtype range (uint16 / 65535)
    assert images[0].min() == pytest.approx(4000 / 65535) and images[1].min() == pytest.approx(1000 / 65535)
    assert len(load_images(labelled, "train")) == 6


def test_pixel_sizes_of_a_labelled_split(labelled):
    """The fit verdict's pixel-size range comes from labels.csv's pixel_nm, where the generator records it."""
    assert pixel_sizes_nm(labelled) is None   # no labels.csv: not recorded
    rows = "".join(f"img{i}-{i / 10:.1f}.tiff,img{i},{i / 10:.1f},{15 + 5 * i}\n" for i in range(6))
    (labelled / "labels.csv").write_text("file,name,score,pixel_nm\n" + rows)
    assert pixel_sizes_nm(labelled).tolist() == [15, 20, 25, 30, 35, 40]
    assert pixel_sizes_nm(labelled, ["img4-0.4", "img1-0.1"]).tolist() == [35, 20]
    (labelled / "labels.csv").write_text("file,name,score\n" + "".join(r.rsplit(",", 1)[0] + "\n" for r in rows.splitlines()))
    assert pixel_sizes_nm(labelled) is None   # a real folder's table without the column


def test_labelled_dataset_missing_split_names(labelled):
    with pytest.raises(ExportError, match=r"1 image\(s\) of the checkpoint's split are not in this dataset.*'gone'"):
        load_images(labelled, "test", names=["img1-0.1", "gone"])


def test_plain_folder_prefers_the_split_subfolder_and_limits(tmp_path):
    (tmp_path / "test").mkdir()
    for index in range(5):
        np.save(tmp_path / "test" / f"{index}.npy", np.full((224, 224), index * 50, np.uint8))
    np.save(tmp_path / "stack.npy", np.zeros((3, 224, 224), np.float32))   # not in test/: ignored
    images = load_images(tmp_path, "test")
    assert images.shape == (5, 224, 224)
    assert images[:, 0, 0].tolist() == pytest.approx([i * 50 / 65535 for i in range(5)])   # counts
    assert len(load_images(tmp_path, "test", limit=3)) == 3
    assert load_images(tmp_path, "train").shape == (8, 224, 224)   # no train/: every file, stacks too


@pytest.mark.parametrize("array, message", [
    (np.zeros((100, 100), np.uint8), "expected 224x224"),
    (np.full((224, 224), np.nan, np.float32), "NaN"),
    (np.full((224, 224), 2**40, np.int64), "fit none of"),
])
def test_bad_image_files_are_named(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ExportError, match=message) as info:
        load_images(tmp_path, "test")
    assert "bad.npy" in str(info.value)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(ExportError, match="no such folder"):
        load_images(tmp_path / "nope", "test")
    with pytest.raises(ExportError, match="no images"):
        load_images(tmp_path, "test")
