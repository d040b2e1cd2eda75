"""The pixel contract (stedq.pixels) and quality-map tiling (stedq.tiling.tile_origins)."""

import numpy as np
import pytest

from stedq.pixels import (
    MODEL_COUNTS_PER_UNIT,
    Intensity,
    InvalidInput,
    check_fits,
    decode_image,
    demo_image,
    parse_dtype,
    parse_intensity,
    to_model_input,
    to_wire_array,
)
from stedq.tiling import tile_origins


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "uint32"])
def test_integer_pixels_are_photon_counts_whatever_the_dtype(dtype):
    counts = np.array([[0, 7], [120, 255]])
    pixels = counts.astype(np.dtype(dtype).newbyteorder("<"))
    image = decode_image(pixels.tobytes(), dtype, 2, 2, field="img", min_size=2)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, (counts / np.float32(MODEL_COUNTS_PER_UNIT)).astype(np.float32))
    assert MODEL_COUNTS_PER_UNIT == 65535.0   # what the model was trained on: uint16 counts / 65535


def test_float32_counts_when_told_and_negative_counts_read_as_zero():
    counts = np.array([[0.0, 7.0], [120.0, 1000.5]], "<f4")
    image = decode_image(counts.tobytes(), "float32", 2, 2, field="img", intensity="counts", min_size=2)
    np.testing.assert_allclose(image, counts / 65535.0, rtol=1e-6)
    negative = np.array([[-5, 3]], np.int16)
    np.testing.assert_array_equal(to_model_input(negative), np.array([[0, 3 / 65535]], np.float32))


def test_intensity_spellings_and_refusals():
    assert parse_intensity(None, "uint8", field="x") is Intensity.COUNTS
    assert parse_intensity(0, "float32", field="x") is Intensity.MODEL_SCALE
    assert parse_intensity("INTENSITY_COUNTS", "float32", field="x") is Intensity.COUNTS
    assert parse_intensity(2, "float32", field="x") is Intensity.MODEL_SCALE
    with pytest.raises(InvalidInput, match="x: uint16 pixels are photon counts; intensity model_scale applies"):
        to_model_input(np.zeros((2, 2), np.uint16), "model_scale", field="x")
    with pytest.raises(InvalidInput, match="x: unknown intensity 'photons'"):
        parse_intensity("photons", "uint16", field="x")


def test_float32_is_taken_as_is_and_little_endian():
    pixels = np.linspace(0, 1, 224 * 230, dtype="<f4").reshape(224, 230)
    image = decode_image(pixels.tobytes(), "DTYPE_FLOAT32", 224, 230, field="images[0]")
    np.testing.assert_array_equal(image, pixels)
    big_endian = pixels.astype(">f4").tobytes()  # the wrong byte order decodes to garbage, never silently ok
    with pytest.raises(InvalidInput):
        decode_image(big_endian, "float32", 224, 230, field="images[0]")


@pytest.mark.parametrize("dtype, height, width, data, expected", [
    ("uint8", 224, 224, b"\0" * (224 * 224 - 1), "images[3]: data has 50175 bytes but a 224x224 uint8 image needs 50176"),
    ("uint16", 224, 224, b"\0" * (224 * 224), "needs 100352 (224*224*2)"),
    ("int32", 224, 224, b"\0" * (224 * 224 * 4), "images[3]: unknown dtype 'int32'"),
    ("int16", 224, 224, b"\0" * 10, "needs 100352 (224*224*2)"),
    (9, 224, 224, b"", "images[3]: unknown dtype 9"),
    (0, 224, 224, b"", "images[3]: dtype is not set"),
    ("uint8", 63, 300, b"\0" * 18900, "images[3]: image is 63x300, smaller than the minimum 64x64"),
    ("uint8", 0, 224, b"", "images[3]: height and width must be positive (got 0x224)"),
])
def test_bad_images_name_the_field_and_the_problem(dtype, height, width, data, expected):
    with pytest.raises(InvalidInput) as error:
        decode_image(data, dtype, height, width, field="images[3]")
    assert expected in str(error.value)


@pytest.mark.parametrize("value, expected", [
    (np.nan, "1 NaN/Inf pixel(s)"), (np.inf, "1 NaN/Inf pixel(s)"),
    (1.5, "float32 values on the model scale must be in [0, 1] (got min 0, max 1.5)"),
    (-0.25, "(got min -0.25, max 0)"),
])
def test_float_pixels_must_be_finite_and_in_unit_range(value, expected):
    pixels = np.zeros((224, 224), "<f4")
    pixels[5, 7] = value
    with pytest.raises(InvalidInput) as error:
        decode_image(pixels.tobytes(), "float32", 224, 224, field="images[0]")
    assert str(error.value).startswith("images[0]: ") and expected in str(error.value)


def test_typed_values_are_checked_against_the_dtype_range():
    assert check_fits(np.array([0, 255]), "uint8", field="x").dtype == np.uint8
    with pytest.raises(InvalidInput, match="x: values outside the uint8 range 0..255"):
        check_fits(np.array([0, 256]), "uint8", field="x")
    with pytest.raises(InvalidInput, match="x: values outside the int16 range -32768..32767"):
        check_fits(np.array([-40000, 1]), "int16", field="x")
    assert parse_dtype("FP32", field="x") == "float32" and parse_dtype(4, field="x") == "int16"


@pytest.mark.parametrize("array, expected", [
    (np.array([[0, 300]], np.int64), np.uint16), (np.array([[-3, 300]], np.int64), np.int16),
    (np.array([[0, 70000]], np.int32), np.uint32), (np.array([[True, False]]), np.uint8),
    (np.array([[0.5, 1.0]], np.float64), np.float32), (np.array([[1, 2]], np.int8), np.uint16),
])
def test_wire_arrays_keep_the_numbers(array, expected):
    wire = to_wire_array(array)
    assert wire.dtype == np.dtype(expected).newbyteorder("<") and wire.flags.c_contiguous
    np.testing.assert_array_equal(wire, array)


def test_wire_array_refusals():
    with pytest.raises(ValueError, match="fit none of"):
        to_wire_array(np.array([[-1, 2**40]], np.int64))
    with pytest.raises(TypeError, match="not an image type"):
        to_wire_array(np.array([["a", "b"]]))


def test_demo_image_is_a_valid_input():
    image = demo_image()
    assert image.shape == (224, 224) and image.dtype == np.float32
    # photon counts of a uint16 export rescaled by 65535: as dim as the training data
    assert 0.0 <= image.min() and 0.0 < image.max() < 0.01 and image.std() > 1e-5


@pytest.mark.parametrize("length, stride, expected", [
    (224, 112, [0]),
    (448, 112, [0, 112, 224]),
    (500, 112, [0, 112, 224, 276]),      # last tile flush with the edge
    (300, 224, [0, 76]),
    (225, 500, [0, 1]),
])
def test_tiles_cover_the_image_with_the_last_one_at_the_edge(length, stride, expected):
    origins = tile_origins(length, 224, stride)
    assert origins == expected
    assert origins[0] == 0 and origins[-1] + 224 == length
    covered = np.zeros(length, bool)
    for origin in origins:
        covered[origin:origin + 224] = True
    assert covered.all()


@pytest.mark.parametrize(("dtype", "intensity"), [("uint8", None), ("uint16", None), ("int16", None),
                                                  ("float32", "counts"), ("float32", "model_scale")])
def test_decoding_into_a_buffer_gives_the_same_values(dtype, intensity):
    """`out=`: the value written is the one returned without it, bit for bit, for every wire dtype."""
    rng = np.random.default_rng(3)
    values = rng.integers(-3 if dtype == "int16" else 0, 250, (5, 6)).astype(dtype)
    if intensity == "model_scale":
        values = (values / np.float32(255)).astype(np.float32)
    buffer = np.full((2, 5, 6), np.nan, np.float32)
    written = to_model_input(values, intensity, out=buffer[1])
    assert written is buffer[1] or np.shares_memory(written, buffer[1])
    np.testing.assert_array_equal(buffer[1], to_model_input(values, intensity))
    assert np.isnan(buffer[0]).all()


def test_a_request_of_one_shape_reaches_the_model_without_another_copy():
    """The servicer decodes a request's images of one shape into one (N, H, W) buffer and the scorer hands
    that buffer itself to the batcher as (N, 1, H, W); mixed shapes, or images that are not one buffer's
    rows in order, are stacked (a copy) as before."""
    from stedq.server.scoring import _stack
    from stedq.server.servicer import decode_images
    from stedq.v1 import quality_pb2 as pb

    rng = np.random.default_rng(4)
    pixels = [rng.integers(0, 400, (224, 224)).astype("<u2") for _ in range(3)]
    images = [pb.Image(data=p.tobytes(), dtype=pb.DTYPE_UINT16, height=224, width=224) for p in pixels]
    inputs, _ = decode_images(images)
    batch = _stack(inputs)
    assert batch.shape == (3, 1, 224, 224) and all(np.shares_memory(batch, image) for image in inputs)
    for i, p in enumerate(pixels):
        np.testing.assert_array_equal(batch[i, 0], to_model_input(p))
    reordered = _stack(inputs[::-1])
    assert not np.shares_memory(reordered, inputs[0])
    np.testing.assert_array_equal(reordered[0, 0], inputs[2])
    mixed = images[:2] + [pb.Image(data=pixels[2][:100].tobytes(), dtype=pb.DTYPE_UINT16, height=100, width=224)]
    inputs, _ = decode_images(mixed)
    assert not np.shares_memory(inputs[0], inputs[1])
