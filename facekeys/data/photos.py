"""Photos as people have them: decoded safely, then turned upright by their EXIF orientation.

A phone stores a photo taken sideways as the sensor saw it and writes an EXIF Orientation tag
that tells viewers how to turn it; every photo viewer shows it upright, so a face in it is only
found, and its points only make sense to the user, in the upright picture
(``facekeys.data.orientation``). Labelled data is loaded by ``facekeys.data.images`` instead,
as stored: its labels refer to the stored pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from facekeys.data.image_headers import ImageProblem, sniff_format
from facekeys.data.images import ImageLimits, decode_image, read_image_bytes
from facekeys.data.orientation import exif_orientation, upright

# A face needs some pixels to have keypoints: an image under this many pixels on a side is
# refused (``image_too_small``) rather than given points that mean nothing.
MIN_FACE_SIDE = 16


@dataclass(frozen=True)
class Photo:
    """A decoded photo, upright as photo viewers show it.

    Attributes:
        pixels: ``HxW`` or ``HxWxC`` array (uint8 or uint16, BGR(A) order) of the upright picture.
        orientation: The EXIF orientation applied (1-8; 1 where the photo has none, or none that
            can be read): points found in ``pixels`` are in the upright picture's pixels, which
            differ from the stored ones where this is not 1.
        format: The format by content: ``jpeg``, ``png``, ``webp``, ``bmp`` or ``tiff``.
    """

    pixels: np.ndarray
    orientation: int
    format: str

    @property
    def turned(self) -> bool:
        """Whether the stored pixels were turned or mirrored to make the picture upright."""
        return self.orientation != 1


def decode_photo(data: bytes, limits: ImageLimits) -> Photo:
    """Decodes photo bytes with every check of ``decode_image`` (caps before decoding), then
    turns the picture upright by its EXIF orientation.

    Raises:
        ImageProblem: As ``decode_image``; a malformed EXIF block is no problem (orientation 1).
    """
    stored = decode_image(data, limits)
    orientation = exif_orientation(data)
    return Photo(upright(stored, orientation), orientation, sniff_format(data))


def load_photo(path: str | os.PathLike[str], limits: ImageLimits | None = None) -> Photo:
    """Reads and decodes the photo at ``path``, upright (see ``decode_photo``).

    Raises:
        ImageProblem: As ``read_image_bytes`` and ``decode_image``.
    """
    limits = limits or ImageLimits()
    return decode_photo(read_image_bytes(path, limits), limits)


def check_face_size(photo: Photo, min_side: int = MIN_FACE_SIDE) -> None:
    """Refuses a photo too small to hold a face.

    Raises:
        ImageProblem: ``image_too_small`` where a side is under ``min_side`` pixels.
    """
    height, width = photo.pixels.shape[:2]
    if min(width, height) < min_side:
        raise ImageProblem(
            "image_too_small",
            f"{width}x{height} px is under {min_side} px a side, too small to hold a face",
        )
