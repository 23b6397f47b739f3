"""Image safety: content sniffing of the photo formats, header size caps, path containment."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from facekeys.data.images import ImageLimits, ImageProblem, decode_image, header_size, load_image
from tests.conftest import jpeg_bytes, png_bytes
from tests.photo_bytes import LONG, SHORT, encode, tiff_block, tiff_with_orientation


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


# The photo formats OpenCV decodes, as OpenCV writes them: (format, extension, parameters).
FORMATS = [
    ("png", ".png", ()),
    ("jpeg", ".jpg", ()),
    ("webp", ".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),  # lossless: VP8L
    ("webp", ".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),  # lossy: VP8 (VP8X with alpha)
    ("bmp", ".bmp", ()),
    ("tiff", ".tiff", ()),
]
LOSSLESS = {".png", ".bmp", ".tiff"}


def picture(width: int, height: int, channels: int) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return (np.arange(np.prod(shape)) * 7 % 251).astype(np.uint8).reshape(shape)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize(("kind", "ext", "params"), FORMATS)
def test_every_photo_format_decodes_with_its_header_size(kind, ext, params, channels):
    image = picture(13, 10, channels)
    data = encode(ext, image, *params)
    assert header_size(data) == (kind, 13, 10)
    decoded = decode_image(data, ImageLimits())
    assert decoded.shape[:2] == (10, 13)
    # Lossless WebP is exact for colour; it stores gray as colour and may change what is fully
    # transparent.
    if ext in LOSSLESS or (params == (cv2.IMWRITE_WEBP_QUALITY, 101) and channels == 3):
        assert np.array_equal(decoded, image)


def test_bmp_stored_top_down_has_a_negative_height():
    image = picture(12, 7, 3)
    data = bytearray(encode(".bmp", image))  # rows stored bottom-up
    assert struct.unpack_from("<i", data, 22)[0] == 7
    struct.pack_into("<i", data, 22, -7)  # the same rows, now declared top-down: upside down
    assert header_size(bytes(data)) == ("bmp", 12, 7)
    assert np.array_equal(decode_image(bytes(data), ImageLimits()), image[::-1])


def test_bmp_with_an_os2_core_header_is_refused():
    """OpenCV decodes these with IMREAD_UNCHANGED as one gray channel of the wrong bytes."""
    image = picture(8, 5, 3)  # 24 bytes a row: no padding
    core = struct.pack("<IHHHH", 12, 8, 5, 1, 24)  # size, width, height, planes, bits
    data = b"BM" + struct.pack("<IHHI", 26 + image.size, 0, 0, 26) + core + image.tobytes()
    with pytest.raises(ImageProblem, match=r"OS/2 1\.x core header") as info:
        decode_image(data, ImageLimits())
    assert info.value.code == "image_unsupported_format"


@pytest.mark.parametrize("order", ["<", ">"])
def test_tiff_sizes_as_long_in_either_byte_order(order):
    image = picture(21, 9, 1)
    data = tiff_with_orientation(image, 1, order)
    assert header_size(data) == ("tiff", 21, 9)
    assert np.array_equal(decode_image(data, ImageLimits()), image)


def huge_headers() -> dict[str, bytes]:
    """Headers alone (no pixel data follows) claiming far more than the caps."""
    png = bytearray(png_bytes(8, 8)[:33])
    struct.pack_into(">II", png, 16, 100_000, 100_000)
    jpeg = bytearray(jpeg_bytes(8, 8))
    sof = jpeg.index(b"\xff\xc0")
    struct.pack_into(">HH", jpeg, sof + 5, 65_535, 65_535)  # 16-bit sizes: JPEG's largest
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (99_999).to_bytes(3, "little") * 2
    vp8l = b"VP8L" + struct.pack("<IBI", 5, 0x2F, 0x0FFFFFFF)  # 14-bit sizes: 16384 x 16384
    bmp = bytearray(encode(".bmp", picture(4, 4, 3))[:54])
    struct.pack_into("<ii", bmp, 18, 100_000, -100_000)
    tiff = tiff_block([(256, LONG, 100_000), (257, LONG, 100_000)])
    return {
        "png": bytes(png[:33]),
        "jpeg": bytes(jpeg[: sof + 9]),
        "webp VP8X": b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x,
        "webp VP8L": b"RIFF" + struct.pack("<I", 4 + len(vp8l)) + b"WEBP" + vp8l,
        "bmp": bytes(bmp),
        "tiff": tiff,
    }


@pytest.mark.parametrize("name", list(huge_headers()))
def test_a_header_claiming_too_many_pixels_is_refused_before_decoding(name):
    """There is nothing to decode after these headers: decoding would report image_corrupt."""
    with pytest.raises(
        ImageProblem, match=r"header claims (100000x100000|65535x65535|16384x16384)"
    ) as info:
        decode_image(huge_headers()[name], ImageLimits())
    assert info.value.code == "image_too_large"


@pytest.mark.parametrize(("kind", "ext", "params"), FORMATS)
def test_truncated_headers_are_corrupt(kind, ext, params):
    data = encode(ext, picture(13, 10, 3), *params)
    for cut in range(1, min(41, len(data))):
        with pytest.raises(ImageProblem) as info:
            decode_image(data[:cut], ImageLimits())
        # Shorter than its magic bytes, content is no known format; longer, a broken one.
        expected = "image_corrupt" if cut >= 12 else {"image_corrupt", "image_unsupported_format"}
        assert info.value.code in expected, (cut, info.value)


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"RIFF\x10\x00\x00\x00WEBPVP8 \x04\x00\x00\x00", "VP8 frame header is truncated"),
        (b"RIFF\x10\x00\x00\x00WEBPALPH\x04\x00\x00\x00abcd", "none of the VP8, VP8L, VP8X"),
        (b"BM" + bytes(12) + struct.pack("<I", 99) + bytes(40), "info header size 99"),
        (b"II*\x00" + struct.pack("<I", 4000), "TIFF header is truncated"),
        (tiff_block([(256, SHORT, 5)]), "no ImageWidth or ImageLength"),
        (b"MM\x00*" + struct.pack(">IH", 8, 3) + bytes(12), "TIFF header is truncated"),
    ],
)
def test_malformed_headers_say_what_is_wrong(data, detail):
    with pytest.raises(ImageProblem, match=detail) as info:
        header_size(data)
    assert info.value.code == "image_corrupt"


def test_unknown_content_names_the_accepted_formats():
    with pytest.raises(ImageProblem) as info:
        decode_image(b"GIF89a" + bytes(100), ImageLimits())
    assert info.value.code == "image_unsupported_format"
    assert info.value.detail == (
        "content is none of the accepted formats (JPEG, PNG, WebP, BMP, TIFF)"
    )
