"""Image decoding (stedq.pixels) and quality-map tiling (stedq.tiling.tile_origins)."""

import numpy as np
import pytest

from stedq.pixels import DType, InvalidInput, decode_image, demo_image, parse_dtype, to_unit_range
from stedq.tiling import tile_origins


def test_uint_images_are_rescaled_by_their_dtype_range():
    pixels = np.array([[0, 255], [51, 102]], np.uint8)
    image = decode_image(pixels.tobytes(), "uint8", 2, 2, field="img", min_height=2, min_width=2)
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-7)

    wide = np.array([[0, 65535], [1000, 30000]], "<u2")
    image = decode_image(wide.tobytes(), 2, 2, 2, field="img", min_height=2, min_width=2)  # proto enum 2
    np.testing.assert_allclose(image, wide / 65535.0, atol=1e-7)


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
    (9, 224, 224, b"", "images[3]: unknown dtype 9"),
    (0, 224, 224, b"", "images[3]: dtype is not set"),
    ("uint8", 100, 300, b"\0" * 30000, "images[3]: image is 100x300, smaller than the model input 224x224"),
    ("uint8", 0, 224, b"", "images[3]: height and width must be positive (got 0x224)"),
])
def test_bad_images_name_the_field_and_the_problem(dtype, height, width, data, expected):
    with pytest.raises(InvalidInput) as error:
        decode_image(data, dtype, height, width, field="images[3]")
    assert expected in str(error.value)


@pytest.mark.parametrize("value, expected", [
    (np.nan, "1 NaN/Inf pixel(s)"), (np.inf, "1 NaN/Inf pixel(s)"),
    (1.5, "float32 values must be in [0, 1] (got min 0, max 1.5)"), (-0.25, "(got min -0.25, max 0)"),
])
def test_float_pixels_must_be_finite_and_in_unit_range(value, expected):
    pixels = np.zeros((224, 224), "<f4")
    pixels[5, 7] = value
    with pytest.raises(InvalidInput) as error:
        decode_image(pixels.tobytes(), "float32", 224, 224, field="images[0]")
    assert str(error.value).startswith("images[0]: ") and expected in str(error.value)


def test_typed_values_are_checked_against_the_dtype_range():
    np.testing.assert_allclose(to_unit_range(np.array([0, 255]), "UINT8", field="x"), [0, 1])
    with pytest.raises(InvalidInput, match="x: values outside the uint8 range 0..255"):
        to_unit_range(np.array([0, 256]), "UINT8", field="x")
    assert parse_dtype("FP32", field="x") is DType.FLOAT32


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
