"""`stedq score` and the Node.js client, run as users run them, against a real server on 127.0.0.1."""

import csv
import hashlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from stedq.clients import QualityClient
from tests.conftest import IN_CI, REPO_ROOT, require_tool
from tests.server_support import ThreadedServer, free_port, model_bundle, random_images, server_settings

NODE_DIR = REPO_ROOT / "clients" / "node"


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(server_settings(model_bundle())) as running:
        yield running


@pytest.fixture(scope="module")
def images():
    counts = np.round(random_images(6, seed=21) * 65535).astype(np.uint16)
    large = np.round(random_images(1, seed=22, size=(300, 450))[0] * 65535).astype(np.uint16)
    return counts, large


@pytest.fixture(scope="module")
def folder(tmp_path_factory, images):
    counts, large = images
    root = tmp_path_factory.mktemp("scans")
    tifffile.imwrite(root / "stack.ome.tif", counts[:3], ome=True, metadata={"axes": "ZYX"})
    Image.fromarray(counts[3]).save(root / "single.png")
    np.save(root / "pair.npy", counts[4:6])
    tifffile.imwrite(root / "field.tif", large)
    (root / "broken.tif").write_bytes(b"this is not a TIFF")
    np.save(root / "tiny.npy", np.zeros((63, 63), np.uint16))
    return root


def stedq(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stedq", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def test_score_files_of_each_format_with_outputs_and_maps(server, folder, images, tmp_path):
    counts, large = images
    with QualityClient(server.address) as client:
        expected = client.score(list(counts) + [large])
    result = stedq("score", str(folder), "--server", server.address, "--csv", str(tmp_path / "s.csv"),
                   "--json", str(tmp_path / "s.json"), "--map", str(tmp_path / "maps"))
    assert result.returncode == 1, result.stderr            # two inputs are bad, the others are scored
    assert "broken.tif: cannot read it as TIF" in result.stderr
    assert "tiny.npy: image is 63x63, smaller than the minimum 64x64" in result.stderr
    assert "2 of 9 inputs could not be scored" in result.stderr

    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    scored = {(r["file"].rsplit("/", 1)[-1], r["frame"]): r for r in rows if not r["error"]}
    order = [("stack.ome.tif", "Z=0"), ("stack.ome.tif", "Z=1"), ("stack.ome.tif", "Z=2"),
             ("single.png", ""), ("pair.npy", "0"), ("pair.npy", "1"), ("field.tif", "")]
    assert sorted(scored) == sorted(order)
    np.testing.assert_allclose([float(scored[key]["score"]) for key in order], expected, atol=1e-6)
    field = scored[("field.tif", "")]
    assert field["tiles"] == "2x4" and (field["height"], field["width"]) == ("300", "450")

    report = json.loads((tmp_path / "s.json").read_text())
    assert report["server"] == server.address and report["model"]["name"] == "quality"
    assert len(report["results"]) == 9 and sum(bool(r["error"]) for r in report["results"]) == 2

    with Image.open(field["map_png"]) as png:   # the overlay is a real picture
        assert png.format == "PNG" and png.width > 600 and png.height > 300
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["field.tif.map.png"]
    table = result.stdout.splitlines()
    assert table[0].split() == ["file", "frame", "size", "score", "fit", "tiles"] and len(table) == 8
    assert any(line.split()[-1] == "2x4" and "field.tif" in line for line in table)


def test_score_json_to_stdout_and_all_good_exit_zero(server, folder):
    result = stedq("score", str(folder / "*.png"), str(folder / "pair.npy"), "--server", server.address,
                   "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["frame"] for r in report["results"]] == ["", "0", "1"]
    assert all(0.0 <= r["score"] <= 1.0 for r in report["results"])


def test_the_readme_command_scores_the_shipped_samples(server):
    samples = REPO_ROOT / "samples"
    expected = sorted(p.name for p in samples.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    assert expected, "samples/ has no TIFFs"
    result = stedq("score", "samples/", "--server", server.address, "--csv", "-")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted(r["file"].rsplit("/", 1)[-1] for r in rows) == expected
    assert all(0.0 <= float(r["score"]) <= 1.0 and not r["error"] for r in rows)


def test_score_unreachable_server_says_so_and_exits_3(folder):
    result = stedq("score", str(folder / "single.png"), str(folder / "missing.tif"),
                   "--server", f"127.0.0.1:{free_port()}", "--timeout-s", "3", "--retries", "1")
    assert result.returncode == 3
    assert "cannot reach the stedq server" in result.stderr and "--server HOST:PORT" in result.stderr
    assert "missing.tif: no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr


def node_client() -> str:
    node = require_tool("node")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        message = "clients/node has no node_modules: run `npm ci` there (scripts/test does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return node


def test_node_client_scores_like_the_python_client(server, folder, images, tmp_path):
    node = node_client()
    counts, large = images
    np.save(tmp_path / "large.npy", large)
    (tmp_path / "raw.u16").write_bytes(counts[:2].astype("<u2").tobytes())
    env = {**os.environ, "STEDQ_SERVER": server.address}
    result = subprocess.run([node, "score.js", str(folder / "pair.npy"), str(tmp_path / "large.npy"),
                             str(tmp_path / "raw.u16"), "--height", "224", "--width", "224", "--json"],
                            cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    with QualityClient(server.address) as client:
        expected = client.score([counts[4], counts[5], large, counts[0], counts[1]])
    np.testing.assert_allclose([r["score"] for r in report["results"]], expected, atol=1e-6)
    assert [r["tiles"] for r in report["results"]] == ["", "", "2x4", "", ""]


def test_node_client_errors_and_unreachable_server(server, folder):
    node = node_client()
    bad = subprocess.run([node, "score.js", str(folder / "tiny.npy"), str(folder / "single.png"),
                          "--server", server.address], cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "tiny.npy: INVALID_ARGUMENT" in bad.stderr and "smaller than the minimum 64x64" in bad.stderr
    assert "single.png: not a .npy or .tif file" in bad.stderr
    down = subprocess.run([node, "score.js", str(folder / "pair.npy"), "--server", f"127.0.0.1:{free_port()}",
                           "--timeout-s", "3"], cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
    assert down.returncode == 3 and "cannot reach the stedq server" in down.stderr


def test_node_readers_unit_tests():
    node = node_client()
    result = subprocess.run([node, "--test", "test/"], cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout and "# pass 7" in result.stdout


def test_node_client_reads_tiff_layouts_like_tifffile(server, tmp_path):
    """LZW, deflate, predictor, tiles, pages, big-endian, BigTIFF, float32 and uint8 TIFFs (and the
    shipped samples): the Node client sends the same pixels as the Python client, so the same scores."""
    node = node_client()
    rng = np.random.default_rng(41)
    counts = rng.integers(0, 60000, (3, 224, 240), dtype=np.uint16)
    variants = {
        "plain.tif": dict(data=counts[0]),
        "deflate.tif": dict(data=counts[1], compression="zlib", predictor=True),
        "pages.tif": dict(data=counts, photometric="minisblack", compression="zlib"),
        "big_endian.tif": dict(data=counts[2], byteorder=">"),
        "tiles.tif": dict(data=counts[0], tile=(64, 64), compression="zlib"),
        "bigtiff.tif": dict(data=counts[1], bigtiff=True),
        "float.tif": dict(data=counts[2].astype(np.float32) / 65535),
        "bytes.tif": dict(data=(counts[0] // 256).astype(np.uint8), compression="zlib", predictor=True),
        "lzw_pages.tif": dict(data=counts, photometric="minisblack", compression="lzw"),
        "lzw_predictor.tif": dict(data=counts[1], compression="lzw", predictor=True),
    }
    files = []
    for name, options in variants.items():
        tifffile.imwrite(tmp_path / name, options.pop("data"), **options)
        files.append(tmp_path / name)
    Image.fromarray(counts[2]).save(tmp_path / "pillow_lzw.tif", compression="tiff_lzw")  # as Fiji writes
    files += [tmp_path / "pillow_lzw.tif", *sorted((REPO_ROOT / "samples").glob("*.tiff"))[:3]]
    result = subprocess.run([node, "score.js", *map(str, files), "--server", server.address, "--json"],
                            cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    from stedq.files import read_frames

    frames = [frame.image for path in files for frame in read_frames(path)]
    with QualityClient(server.address) as client:
        expected = client.score(frames)
    got = [r["score"] for r in json.loads(result.stdout)["results"]]
    assert len(got) == len(frames) == 18
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # and pixel for pixel: the bytes the Node reader would send are the little-endian pixels
    dump = ("const {readImageFile} = require('./stedq_client'); const crypto = require('crypto');"
            "for (const f of process.argv.slice(1)) for (const im of readImageFile(f))"
            " console.log(im.dtype, crypto.createHash('sha256').update(im.data).digest('hex'));")
    hashes = subprocess.run([node, "-e", dump, *map(str, files)], cwd=NODE_DIR, capture_output=True, text=True,
                            timeout=60, check=True).stdout.split("\n")[:-1]
    assert hashes == [f"{image.dtype} {hashlib.sha256(image.astype(image.dtype.newbyteorder('<')).tobytes()).hexdigest()}"
                      for image in frames]
