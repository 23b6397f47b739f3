"""Image safety: content sniffing, header size caps, path containment."""

from __future__ import annotations

import numpy as np
import pytest

from facekeys.data.images import ImageLimits, ImageProblem, decode_image, header_size, load_image
from tests.conftest import jpeg_bytes, png_bytes


def test_header_size_png_and_jpeg():
    assert header_size(png_bytes(31, 17)) == ("png", 31, 17)
    assert header_size(jpeg_bytes(40, 23)) == ("jpeg", 40, 23)


def test_format_is_detected_by_content_not_extension(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(png_bytes(20, 10, 4))  # a PNG named .jpg
    image = load_image(tmp_path, "photo.jpg")
    assert image.shape == (10, 20, 4)


def test_limits_apply_before_decoding():
    limits = ImageLimits(max_side=64, max_pixels=10_000)
    with pytest.raises(ImageProblem, match="claims 100x100") as info:
        decode_image(png_bytes(100, 100), limits)
    assert info.value.code == "image_too_large"
    with pytest.raises(ImageProblem) as info:
        decode_image(png_bytes(60, 60, 1), ImageLimits(max_pixels=1000))
    assert info.value.code == "image_too_large"


def test_file_byte_cap(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(50, 50))
    with pytest.raises(ImageProblem) as info:
        load_image(tmp_path, "a.png", ImageLimits(max_bytes=100))
    assert info.value.code == "image_too_large"


def test_truncated_jpeg_is_corrupt():
    with pytest.raises(ImageProblem) as info:
        decode_image(jpeg_bytes()[:40], ImageLimits())
    assert info.value.code == "image_corrupt"


def test_decodes_16_bit():
    image = decode_image(png_bytes(8, 8, 1, depth=16), ImageLimits())
    assert image.dtype == np.uint16 and image.shape == (8, 8)


def test_directory_is_not_an_image(tmp_path):
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ImageProblem) as info:
        load_image(tmp_path, "d.png")
    assert info.value.code == "image_not_a_file"
