"""Photo files built byte by byte for the tests: EXIF orientation in a JPEG's APP1 segment, in a
TIFF's own first IFD and in a WebP's EXIF chunk, following the formats' specifications (TIFF 6.0,
EXIF 2.3, the WebP container), so that the reader is checked against the formats, not itself."""

from __future__ import annotations

import struct

import cv2
import numpy as np

SHORT, LONG, ASCII = 3, 4, 2


def encode(ext: str, image: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def tiff_block(entries: list[tuple[int, int, int]], order: str = "<", tail: bytes = b"") -> bytes:
    """A TIFF structure whose first IFD holds ``(tag, type, value)`` entries (one value each),
    right after the 8-byte header; ``tail`` follows the IFD."""
    mark = b"II" if order == "<" else b"MM"
    ifd = struct.pack(order + "H", len(entries))
    for tag, kind, value in sorted(entries):
        # A value shorter than 4 bytes sits at the start of the 4-byte field.
        field = (
            struct.pack(order + "HH", value, 0)
            if kind == SHORT
            else struct.pack(order + "I", value)
        )
        ifd += struct.pack(order + "HHI", tag, kind, 1) + field
    return mark + struct.pack(order + "HI", 42, 8) + ifd + struct.pack(order + "I", 0) + tail


def exif_block(orientation: int, order: str = "<", kind: int = SHORT) -> bytes:
    """An EXIF TIFF structure with one tag: Orientation (0x0112)."""
    return tiff_block([(0x0112, kind, orientation)], order)


def jpeg_with_exif(image: np.ndarray, block: bytes) -> bytes:
    """A JPEG of ``image`` with an APP1 "Exif" segment holding ``block`` right after SOI."""
    data = encode(".jpg", image, cv2.IMWRITE_JPEG_QUALITY, 95)
    payload = b"Exif\x00\x00" + block
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def tiff_with_orientation(image: np.ndarray, orientation: int, order: str = "<") -> bytes:
    """An uncompressed 8-bit gray TIFF of ``image`` with an Orientation tag; width and height
    as LONG values (OpenCV writes SHORT ones)."""
    height, width = image.shape
    pixels = image.tobytes()
    entries = [
        (256, LONG, width),
        (257, LONG, height),
        (258, SHORT, 8),  # BitsPerSample
        (259, SHORT, 1),  # Compression: none
        (262, SHORT, 1),  # PhotometricInterpretation: black is zero
        (273, LONG, 8 + 2 + 12 * 10 + 4),  # StripOffsets: after the header and the IFD
        (274, SHORT, orientation),
        (277, SHORT, 1),  # SamplesPerPixel
        (278, LONG, height),  # RowsPerStrip
        (279, LONG, len(pixels)),  # StripByteCounts
    ]
    return tiff_block(entries, order, tail=pixels)


def webp_with_exif(image: np.ndarray, block: bytes) -> bytes:
    """An extended WebP (VP8X with the EXIF flag) of ``image``, lossless, with an EXIF chunk."""
    simple = encode(".webp", image, cv2.IMWRITE_WEBP_QUALITY, 101)
    height, width = image.shape[:2]
    flags = bytes([0x08, 0, 0, 0])  # EXIF metadata present
    size = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    vp8x = b"VP8X" + struct.pack("<I", 10) + flags + size
    exif = b"EXIF" + struct.pack("<I", len(block)) + block + b"\x00" * (len(block) & 1)
    body = b"WEBP" + vp8x + simple[12:] + exif
    return b"RIFF" + struct.pack("<I", len(body)) + body
