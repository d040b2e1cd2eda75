"""Big and bad files never stop a `stedq score` run: through the CLI against a real server, a folder with a
5800×5800 image (over the 64 MiB message limit and the per-request queue), a truncated TIFF, a text file
renamed .tif and two normal images."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from stedq.clients import QualityClient
from stedq.clients.large import Limits, plan_bands
from stedq.tiling import tile_origins
from tests.conftest import REPO_ROOT
from tests.server_support import ThreadedServer, model_bundle, server_settings

BIG = 5800


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(server_settings(model_bundle(), max_queue_size=256)) as running:
        yield running


def stedq(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stedq", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


@pytest.mark.slow
def test_a_folder_with_a_huge_a_truncated_and_a_fake_tiff(server, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(5)
    big = rng.poisson(8, (BIG, BIG)).astype(np.uint16)          # 64.2 MiB of pixels
    tifffile.imwrite(folder / "a_big.tif", big)
    normal = [rng.poisson(20, (224, 300)).astype(np.uint16) for _ in range(2)]
    tifffile.imwrite(folder / "b_normal.tif", normal[0])
    tifffile.imwrite(folder / "c_normal.tif", normal[1])
    whole = (folder / "c_normal.tif").read_bytes()
    (folder / "d_truncated.tif").write_bytes(whole[:len(whole) // 2])
    (folder / "e_text.tif").write_text("this is a text file, not an image\n")

    # a deadline for a slow (shared) machine: this checks the answers, not their speed
    done = stedq("score", str(folder), "--server", server.address, "--csv", str(tmp_path / "s.csv"),
                 "--json", str(tmp_path / "s.json"), "--timeout-s", "180")
    assert done.returncode == 1, done.stderr             # two files could not be scored
    assert "Traceback" not in done.stderr
    rows = {row["file"].rsplit("/", 1)[-1]: row for row in json.loads((tmp_path / "s.json").read_text())["results"]}
    assert sorted(rows) == ["a_big.tif", "b_normal.tif", "c_normal.tif", "d_truncated.tif", "e_text.tif"]
    assert "cannot read it" in rows["d_truncated.tif"]["error"] and rows["d_truncated.tif"]["score"] is None
    assert "not a TIFF" in rows["e_text.tif"]["error"]
    version = json.loads((tmp_path / "s.json").read_text())["model"]["version"]

    big_row = rows["a_big.tif"]
    n = len(tile_origins(BIG, 224, 112))
    assert not big_row["error"] and big_row["tiles"] == f"{n}x{n}" and big_row["model_version"] == version
    tiles = np.array(big_row["tile_scores"])
    assert tiles.shape == (n, n) and big_row["score"] == pytest.approx(tiles.mean(), abs=1e-6)
    # the bands reassemble the map the server gives for parts of the image: check two tile rows directly
    with QualityClient(server.address) as client:
        for row in (0, n - 1):
            top = tile_origins(BIG, 224, 112)[row]
            [part] = client.score_images([big[top:top + 224]])
            np.testing.assert_allclose(part.map.scores[0], tiles[row], atol=1e-5)
        expected = client.score(normal)
    np.testing.assert_allclose([rows["b_normal.tif"]["score"], rows["c_normal.tif"]["score"]], expected, atol=1e-6)

    table = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(table) == 5 and {"tile_scores", "model_version", "pixel_size_nm"} <= set(table[0])
    by_name = {r["file"].rsplit("/", 1)[-1]: r for r in table}
    assert np.array(json.loads(by_name["a_big.tif"]["tile_scores"])).shape == (n, n)


def test_bands_start_at_tile_origins_and_respect_both_limits():
    limits = Limits(max_message_bytes=4 << 20, max_inputs=120, tile=224, stride=112)
    bands = plan_bands((BIG, BIG), 2, limits)
    origins = tile_origins(BIG, 224, 112)
    assert bands[0][0] == 0 and bands[-1][1] == BIG
    assert all(top in origins for top, _ in bands)
    for (_top, bottom), (next_top, _) in zip(bands, bands[1:], strict=False):
        assert next_top == origins[origins.index(bottom - 224) + 1]   # the next band starts at the next origin
    cols = len(origins)
    assert all(len(tile_origins(b - t, 224, 112)) * cols <= 120 and (b - t) * BIG * 2 <= 4 << 20
               for t, b in bands)
    with pytest.raises(ValueError, match="one row of tiles"):
        plan_bands((300, 100_000), 2, Limits(max_message_bytes=4 << 20, max_inputs=120))


def test_deadline_unreachable_and_refusal_are_told_apart(server, tmp_path):
    image = tmp_path / "one.tif"
    tifffile.imwrite(image, np.zeros((224, 224), np.uint16))
    late = stedq("score", str(image), "--server", server.address, "--timeout-s", "0.001",
                 "--json", str(tmp_path / "late.json"))
    assert late.returncode == 3
    assert "did not answer within 0.001 s (DEADLINE_EXCEEDED)" in late.stderr and "--timeout-s" in late.stderr
    assert json.loads((tmp_path / "late.json").read_text())["results"] == []     # written even so
    down = stedq("score", str(image), "--server", "127.0.0.1:1", "--retries", "0")
    assert down.returncode == 3 and "cannot reach the stedq server at 127.0.0.1:1" in down.stderr
    tiny = tmp_path / "tiny.npy"
    np.save(tiny, np.zeros((8, 8), np.uint16))
    refused = stedq("score", str(tiny), "--server", server.address)
    assert refused.returncode == 1 and "image is 8x8, smaller than the minimum 64x64" in refused.stderr
