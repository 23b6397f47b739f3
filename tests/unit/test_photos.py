"""Photos as people have them: turned upright by their EXIF orientation (JPEG, TIFF, WebP),
never refused for a malformed EXIF block, and refused when too small to hold a face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facekeys.data.images import ImageLimits, ImageProblem, decode_image
from facekeys.data.orientation import exif_orientation
from facekeys.data.photos import MIN_FACE_SIDE, Photo, check_face_size, decode_photo, load_photo
from tests.photo_bytes import (
    ASCII,
    encode,
    exif_block,
    jpeg_with_exif,
    tiff_block,
    tiff_with_orientation,
    webp_with_exif,
)


def upright_picture() -> np.ndarray:
    """40 wide, 24 tall, with marks no turn or mirror maps onto each other: a bright bar at the
    top left and a gray square at the top right. Blocks of 8 px survive JPEG exactly."""
    image = np.zeros((24, 40), np.uint8)
    image[0:8, 0:16] = 255
    image[0:8, 32:40] = 128
    return image


def stored_as(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for ``upright`` with this EXIF orientation, from the tag's
    definition (where the stored first row and column belong in the upright picture)."""
    stored = {
        1: upright,
        2: upright[:, ::-1],  # first column is the right side
        3: np.rot90(upright, 2),  # first row is the bottom, first column the right side
        4: upright[::-1],  # first row is the bottom
        5: upright.T,  # first row is the left side, first column the top
        6: np.rot90(upright, 1),  # first row is the right side, first column the top
        7: np.rot90(upright, 2).T,  # first row is the right side, first column the bottom
        8: np.rot90(upright, -1),  # first row is the left side, first column the bottom
    }[orientation]
    return np.ascontiguousarray(stored)


def tagged(kind: str, stored: np.ndarray, orientation: int) -> bytes:
    if kind == "jpeg II":
        return jpeg_with_exif(stored, exif_block(orientation, "<"))
    if kind == "jpeg MM":
        return jpeg_with_exif(stored, exif_block(orientation, ">"))
    if kind == "tiff":
        return tiff_with_orientation(stored, orientation, ">")
    return webp_with_exif(cv2.cvtColor(stored, cv2.COLOR_GRAY2BGR), exif_block(orientation))


def gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else image[..., 0]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind", ["jpeg II", "jpeg MM", "tiff", "webp"])
def test_a_photo_comes_upright_as_viewers_show_it(kind, orientation, tmp_path):
    upright = upright_picture()
    stored = stored_as(upright, orientation)
    (tmp_path / "photo").write_bytes(tagged(kind, stored, orientation))

    photo = load_photo(tmp_path / "photo", ImageLimits())

    assert photo.orientation == orientation and photo.turned == (orientation != 1)
    assert photo.format == kind.split()[0]
    assert np.array_equal(gray(photo.pixels), upright)
    # Labelled data keeps the stored pixels: its labels refer to them.
    assert np.array_equal(
        gray(decode_image((tmp_path / "photo").read_bytes(), ImageLimits())), stored
    )


def test_a_sideways_phone_photo_in_colour():
    """Orientation 6, the usual phone photo taken upright: the mark drawn at the top left of the
    upright picture comes back there, in every channel."""
    upright = np.zeros((32, 48, 3), np.uint8)
    upright[0:16, 0:16] = (255, 0, 0)  # blue in OpenCV's BGR; 16 px: JPEG halves colour detail
    data = jpeg_with_exif(np.ascontiguousarray(np.rot90(upright, 1)), exif_block(6))
    photo = decode_photo(data, ImageLimits())
    assert photo.pixels.shape == (32, 48, 3)
    mark = photo.pixels[:16, :16].reshape(-1, 3).mean(axis=0)
    assert np.abs(mark - (255, 0, 0)).max() < 10
    assert photo.pixels[16:, :].mean() < 5 and photo.pixels[:, 16:].mean() < 5


MALFORMED_EXIF = {
    "empty block": b"",
    "no byte order mark": b"XX*\x00\x08\x00\x00\x00",
    "first IFD past the end": b"II*\x00\xff\xff\x00\x00",
    "IFD cut short": exif_block(6)[:14],
    "orientation 9": exif_block(9),
    "orientation 0": exif_block(0),
    "orientation as text": tiff_block([(0x0112, ASCII, 6)]),
    "IFD claiming 65535 entries": b"II*\x00\x08\x00\x00\x00\xff\xff" + bytes(20),
}


@pytest.mark.parametrize("name", list(MALFORMED_EXIF))
@pytest.mark.parametrize("container", ["jpeg", "webp"])
def test_a_malformed_exif_block_leaves_a_valid_photo_as_stored(container, name):
    stored = stored_as(upright_picture(), 6)
    block = MALFORMED_EXIF[name]
    if container == "jpeg":
        data = jpeg_with_exif(stored, block)
    else:
        data = webp_with_exif(cv2.cvtColor(stored, cv2.COLOR_GRAY2BGR), block)
    photo = decode_photo(data, ImageLimits())
    assert photo.orientation == 1
    assert np.array_equal(gray(photo.pixels), stored)


def test_photos_without_exif_are_orientation_1():
    for data in (
        encode(".png", upright_picture()),
        encode(".jpg", upright_picture()),
        encode(".bmp", upright_picture()),
        encode(".webp", upright_picture()),
        encode(".tiff", upright_picture()),
    ):
        assert exif_orientation(data) == 1
        assert decode_photo(data, ImageLimits()).orientation == 1


def test_an_exif_segment_after_the_frame_header_is_still_read():
    """Some writers put APP1 after the quantisation tables; the segments are read up to the
    first scan."""
    data = encode(".jpg", stored_as(upright_picture(), 8))
    segment = jpeg_with_exif(upright_picture(), exif_block(8))[2:]
    segment = segment[: 4 + int.from_bytes(segment[2:4], "big") - 2]
    sos = data.index(b"\xff\xda")
    moved = data[:sos] + segment + data[sos:]
    assert exif_orientation(moved) == 8
    assert np.array_equal(decode_photo(moved, ImageLimits()).pixels, upright_picture())


@pytest.mark.parametrize(("width", "height"), [(10, 10), (15, 40), (40, 15)])
def test_an_image_under_the_face_size_is_refused(width, height):
    photo = Photo(np.zeros((height, width), np.uint8), 1, "png")
    with pytest.raises(ImageProblem) as info:
        check_face_size(photo)
    assert info.value.code == "image_too_small"
    assert info.value.detail == (
        f"{width}x{height} px is under 16 px a side, too small to hold a face"
    )


def test_an_image_of_the_face_size_is_kept():
    assert MIN_FACE_SIDE == 16
    check_face_size(Photo(np.zeros((16, 16), np.uint8), 1, "png"))


def test_a_photo_that_is_not_there(tmp_path):
    with pytest.raises(ImageProblem) as info:
        load_photo(tmp_path / "nope.jpg")
    assert info.value.code == "image_missing"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF"])
def test_orientation_written_by_another_library_is_read(fmt):
    """Pillow (installed with matplotlib) writes EXIF as cameras do, among other tags: a second
    writer, so that the reader is not only checked against this project's test files."""
    image_module = pytest.importorskip("PIL.Image")
    import io

    upright = cv2.cvtColor(upright_picture(), cv2.COLOR_GRAY2RGB)
    exif = image_module.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "PhoneMaker", "Model X", 6  # make, model
    exif[0x0132] = "2024:01:01 00:00:00"  # date and time, a tag after Orientation
    buffer = io.BytesIO()
    options = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}, "TIFF": {}}[fmt]
    sideways = np.ascontiguousarray(np.rot90(upright, 1))
    image_module.fromarray(sideways).save(buffer, fmt, exif=exif, **options)

    photo = decode_photo(buffer.getvalue(), ImageLimits())

    assert photo.orientation == 6
    assert np.array_equal(gray(photo.pixels), upright_picture())
