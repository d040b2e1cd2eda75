"""Client-side work that needs no server: array conversion, batch splitting, file reading, maps, retries."""

import random

import numpy as np
import pytest
import tifffile
from PIL import Image

from stedq.clients.channel import ChannelConfig, backoff_delays
from stedq.clients.images import (
    REQUEST_OVERHEAD_BYTES,
    as_image_list,
    from_message,
    split_by_size,
    to_message,
)
from stedq.clients.results import QualityMap
from stedq.files import ReadError, expand_paths, read_frames
from stedq.v1 import quality_pb2 as pb

RNG = np.random.default_rng(0)


# --- arrays -> messages


@pytest.mark.parametrize("dtype,code", [(np.uint8, pb.DTYPE_UINT8), (np.uint16, pb.DTYPE_UINT16),
                                        (np.float32, pb.DTYPE_FLOAT32)])
def test_each_wire_dtype_round_trips(dtype, code):
    image = (RNG.random((30, 40)) * (1 if dtype == np.float32 else np.iinfo(dtype).max)).astype(dtype)
    message = to_message(image)
    assert message.dtype == code and (message.height, message.width) == (30, 40)
    assert len(message.data) == image.nbytes
    np.testing.assert_array_equal(from_message(message), image)


def test_big_endian_and_non_contiguous_arrays_are_sent_little_endian():
    image = RNG.integers(0, 65535, (20, 30)).astype(">u2")
    message = to_message(image[:, ::2])
    assert np.frombuffer(message.data, "<u2").reshape(20, 15).tolist() == image[:, ::2].tolist()


def test_float64_in_unit_range_is_sent_as_float32():
    image = RNG.random((8, 8))
    message = to_message(image)
    assert message.dtype == pb.DTYPE_FLOAT32
    np.testing.assert_allclose(from_message(message), image, rtol=1e-6)


@pytest.mark.parametrize("image,error,words", [
    (np.full((8, 8), np.nan, np.float32), ValueError, "NaN"),
    (np.full((8, 8), 2**40, np.int64), ValueError, "fit none of uint8, uint16, int16, uint32, float32"),
    (np.full((8, 8), 1 + 2j), TypeError, "complex128"),
    (np.zeros((8, 8, 2), np.uint16), ValueError, "expected an H×W array"),
])
def test_unsendable_images_name_the_problem(image, error, words):
    with pytest.raises(error, match="image 3") as info:
        to_message(image, 3)
    assert words in str(info.value)


def test_shapes_accepted_as_batches():
    assert len(as_image_list(np.zeros((5, 6)))) == 1
    assert len(as_image_list(np.zeros((4, 5, 6)))) == 4
    assert [a.shape for a in as_image_list([np.zeros((5, 6)), np.zeros((7, 8))])] == [(5, 6), (7, 8)]
    with pytest.raises(ValueError, match="shape"):
        as_image_list(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="image 1"):
        as_image_list([np.zeros((5, 6)), np.zeros(3)])
    with pytest.raises(TypeError):
        as_image_list("image.tif")


def test_split_by_size_keeps_order_and_every_chunk_under_the_limit():
    messages = [to_message(np.full((100, 100), i, np.uint16)) for i in range(25)]  # 20 kB each
    limit = REQUEST_OVERHEAD_BYTES + 90_000
    chunks = list(split_by_size(messages, limit))
    assert len(chunks) > 1
    flat = [m for _, chunk in chunks for m in chunk]
    assert [from_message(m)[0, 0] for m in flat] == list(range(25))
    for start, chunk in chunks:
        assert from_message(chunk[0])[0, 0] == start
        assert pb.ScoreRequest(images=chunk, client_id="x").ByteSize() <= limit
    assert len(list(split_by_size(messages))) == 1  # the 64 MiB default fits them all


def test_an_image_over_the_limit_alone_is_an_error_naming_it():
    messages = [to_message(np.zeros((10, 10), np.uint8)), to_message(np.zeros((400, 400), np.float32))]
    with pytest.raises(ValueError, match=r"image 1 \(400×400"):
        list(split_by_size(messages, REQUEST_OVERHEAD_BYTES + 100_000))


# --- quality maps


def test_map_tiles_follow_the_servers_rule_with_the_last_tile_at_the_edge():
    # 600 px with tiles of 224 every 112: origins 0, 112, 224, 336 and 376 (flush with the edge)
    quality_map = QualityMap(scores=np.arange(20, dtype=np.float32).reshape(5, 4), tile_size=224, stride=112)
    boxes = quality_map.tile_boxes(600, 500)
    assert sorted({b[0] for b in boxes}) == [0, 112, 224, 336, 376]
    assert sorted({b[1] for b in boxes}) == [0, 112, 224, 276]
    per_pixel = quality_map.per_pixel(600, 500)
    assert per_pixel.shape == (600, 500) and not np.isnan(per_pixel).any()
    assert per_pixel[0, 0] == 0.0                       # only tile (0, 0) covers the corner
    assert per_pixel[599, 499] == 19.0                  # only the last tile covers the far corner
    assert per_pixel[150, 0] == pytest.approx((0 + 4) / 2)  # rows 0 and 1 overlap there


# --- files


def test_tiff_stacks_give_one_labelled_frame_per_page(tmp_path):
    stack = RNG.integers(0, 4000, (2, 3, 64, 64), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.ome.tif", stack, ome=True, metadata={"axes": "TZYX"})
    tifffile.imwrite(tmp_path / "pages.tif", stack[0], photometric="minisblack")
    frames = read_frames(tmp_path / "s.ome.tif")
    assert [f.frame for f in frames] == ["T=0,Z=0", "T=0,Z=1", "T=0,Z=2", "T=1,Z=0", "T=1,Z=1", "T=1,Z=2"]
    np.testing.assert_array_equal(frames[4].image, stack[1, 1])
    pages = read_frames(tmp_path / "pages.tif")
    assert [f.frame for f in pages] == ["page=0", "page=1", "page=2"]
    assert pages[2].image.dtype == np.uint16 and pages[2].name.endswith("pages.tif[page=2]")


def test_lzw_tiffs_as_fiji_saves_them(tmp_path):
    # LZW is Fiji's TIFF compression; tifffile needs imagecodecs (the client extra) to read it.
    counts = RNG.integers(0, 60000, (2, 64, 80), dtype=np.uint16)
    Image.fromarray(counts[0]).save(tmp_path / "pillow_lzw.tif", compression="tiff_lzw")
    tifffile.imwrite(tmp_path / "lzw_pages.tif", counts, photometric="minisblack", compression="lzw",
                     predictor=True)
    np.testing.assert_array_equal(read_frames(tmp_path / "pillow_lzw.tif")[0].image, counts[0])
    pages = read_frames(tmp_path / "lzw_pages.tif")
    assert len(pages) == 2 and np.array_equal(pages[1].image, counts[1])


def test_grey_saved_as_rgb_is_accepted_but_colour_is_refused(tmp_path):
    grey = RNG.integers(0, 255, (32, 32), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "grey.tif", np.stack([grey] * 3, -1), photometric="rgb")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "grey.png")
    colour = np.stack([grey, grey // 2, grey], -1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    np.testing.assert_array_equal(read_frames(tmp_path / "grey.tif")[0].image, grey)
    np.testing.assert_array_equal(read_frames(tmp_path / "grey.png")[0].image, grey)
    with pytest.raises(ReadError, match="colour.png: colour image"):
        read_frames(tmp_path / "colour.png")


def test_png_bit_depths_and_npy_types(tmp_path):
    counts = RNG.integers(0, 60000, (40, 50), dtype=np.uint16)
    Image.fromarray(counts).save(tmp_path / "c16.png")
    Image.fromarray((counts // 256).astype(np.uint8)).save(tmp_path / "c8.png")
    np.save(tmp_path / "stack.npy", counts[None].repeat(3, 0).astype(np.int64))  # photon counts as int64
    np.save(tmp_path / "unit.npy", counts / 65535.0)
    c16 = read_frames(tmp_path / "c16.png")[0].image
    assert c16.dtype == np.uint16 and np.array_equal(c16, counts)
    assert read_frames(tmp_path / "c8.png")[0].image.dtype == np.uint8
    stack = read_frames(tmp_path / "stack.npy")
    assert [f.frame for f in stack] == ["0", "1", "2"] and stack[0].image.dtype == np.uint16
    assert read_frames(tmp_path / "unit.npy")[0].image.dtype == np.float32


@pytest.mark.parametrize("name,content,words", [
    ("bad.tif", b"not a tiff at all", "cannot read it as TIF"),
    ("bad.png", b"\x89PNG but broken", "cannot read it as PNG"),
    ("bad.npy", b"\x93NUMPY broken", "cannot read it as NPY"),
    ("notes.txt", b"hello", "unsupported file type '.txt'"),
])
def test_unreadable_files_are_errors_naming_the_file(tmp_path, name, content, words):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ReadError) as info:
        read_frames(tmp_path / name)
    assert str(info.value).startswith(str(tmp_path / name)) and words in str(info.value)


@pytest.mark.parametrize("array,words", [
    (np.full((8, 8), np.nan), "NaN"),
    (np.full((8, 8), 2**40, np.int64), "fit none of"),
    (np.zeros(8, np.uint16), "expected an H×W image"),
])
def test_npy_content_that_cannot_be_scored(tmp_path, array, words):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(ReadError, match="x.npy") as info:
        read_frames(tmp_path / "x.npy")
    assert words in str(info.value)


def test_expand_paths_files_folders_globs_and_misses(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.tif", "b.png", "sub/c.npy", "sub/d.TIFF", "readme.md"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    files, errors = expand_paths([str(tmp_path), str(tmp_path / "*.png"), str(tmp_path / "a.tif"),
                                  str(tmp_path / "missing.tif"), str(tmp_path / "*.gif"), str(tmp_path / "empty")])
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a.tif", "b.png", "sub/c.npy", "sub/d.TIFF"]
    assert [(e.path, e.problem) for e in errors] == [
        (str(tmp_path / "missing.tif"), "no such file or folder"),
        (str(tmp_path / "*.gif"), "no files match this pattern"),
        (str(tmp_path / "empty"), "folder has no .tif/.tiff/.png/.npy files")]


# --- channel and retries


def test_backoff_grows_stays_bounded_and_jitters():
    delays = list(backoff_delays(6, 0.1, 1.0, random.Random(1)))
    assert len(delays) == 6
    for n, delay in enumerate(delays):
        cap = min(1.0, 0.1 * 2 ** n)
        assert cap / 2 <= delay <= cap
    assert delays != list(backoff_delays(6, 0.1, 1.0, random.Random(2)))


def test_channel_config_token_tls_and_limits(tmp_path):
    config = ChannelConfig("h:1", token="s3cret", max_message_bytes=1234)
    assert config.metadata() == (("authorization", "Bearer s3cret"),)
    assert ("grpc.max_send_message_length", 1234) in config.options()
    assert config.credentials() is None
    with pytest.raises(ValueError, match="missing.pem: cannot read it"):
        ChannelConfig("h:1", tls=tmp_path / "missing.pem").credentials()
    with pytest.raises(ValueError, match="need tls"):
        ChannelConfig("h:1", client_cert=b"x").credentials()
