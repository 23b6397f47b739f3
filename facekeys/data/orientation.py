"""EXIF orientation: where it is stored in a photo, and how it turns the stored pixels upright.

A phone stores a photo taken sideways as the sensor saw it and writes an EXIF Orientation tag
(0x0112, values 1-8) that tells viewers how to turn it. The tag is read from the JPEG APP1
"Exif" segment, a TIFF file's own first IFD and a WebP file's EXIF chunk (all TIFF structures,
either byte order), without any EXIF library.
"""

from __future__ import annotations

import numpy as np

from facekeys.data.image_headers import (
    TIFF_ORIENTATION,
    ImageProblem,
    jpeg_segments,
    sniff_format,
    tiff_tags,
    webp_chunks,
)

_EXIF_HEADER = b"Exif\x00\x00"
_APP1 = 0xE1
# Turning by orientation n, then by INVERSE[n], gives the stored pixels back: 6 and 8 turn
# opposite ways, every other orientation undoes itself.
INVERSE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of a JPEG, TIFF or WebP photo; 1 where it has none.

    A malformed EXIF block (truncated, wrong offsets, a value outside 1-8) counts as orientation
    1: it is optional metadata beside pixels that decode, viewers that cannot read it show the
    stored pixels too, and refusing the photo would turn away a picture every viewer shows.
    """
    try:
        block = _exif_block(data)
        if block is None:
            return 1
        orientation = tiff_tags(block, {TIFF_ORIENTATION}, "EXIF block").get(TIFF_ORIENTATION, 1)
    except ImageProblem:
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _exif_block(data: bytes) -> bytes | None:
    """The TIFF structure holding the photo's orientation tag, or None where there is none."""
    kind = sniff_format(data)
    if kind == "tiff":
        return data  # a TIFF file's own first IFD carries the tag
    if kind == "jpeg":
        for marker, start, length in jpeg_segments(data):
            if marker == _APP1 and data[start : start + 6] == _EXIF_HEADER:
                return data[start + 6 : start + length]
    if kind == "webp":
        for fourcc, start, length in webp_chunks(data):
            if fourcc == b"EXIF":
                payload = data[start : start + length]
                # Some writers keep the JPEG segment's "Exif" header in the chunk.
                return payload.removeprefix(_EXIF_HEADER)
    return None


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """The picture as viewers show it, from stored pixels and their EXIF orientation.

    Orientation n says where the stored first row and column belong: 2 mirrored left-right,
    3 turned half round, 4 mirrored top-bottom, 5 transposed, 6 to be turned 90 degrees
    clockwise, 7 transposed across the other diagonal, 8 to be turned 90 degrees anticlockwise.
    """
    import cv2

    if orientation == 2:
        return cv2.flip(image, 1)
    if orientation == 3:
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(image, 0)
    if orientation == 5:
        return cv2.transpose(image)
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.transpose(image), cv2.ROTATE_180)
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image
