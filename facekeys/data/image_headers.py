"""Image formats recognised by content, and their sizes read from the header without decoding.

The accepted formats are the common photo formats OpenCV decodes: JPEG, PNG, WebP, BMP and TIFF.
Each is recognised by its magic bytes, never by file extension (the real data has PNG files named
``.jpg``), and its width and height are read from the header alone, so that size caps apply
before a single pixel is decoded. The readers of JPEG segments, WebP chunks and TIFF tags serve
the EXIF orientation of photos (``facekeys.data.photos``) too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

ACCEPTED_FORMATS = "JPEG, PNG, WebP, BMP, TIFF"

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9
# BMP info header sizes: OS/2 1.x core (12 bytes, 16-bit sizes), then BITMAPINFOHEADER (40) and
# its successors.
_BMP_CORE_HEADER = 12
_BMP_INFO_HEADERS = {40, 52, 56, 64, 108, 124}
_TIFF_SHORT, _TIFF_LONG = 3, 4
TIFF_IMAGE_WIDTH, TIFF_IMAGE_LENGTH, TIFF_ORIENTATION = 0x0100, 0x0101, 0x0112


class ImageProblem(Exception):
    """An image that cannot be used. ``code`` is a stable reason id, ``detail`` says more."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def _unpack(fmt: str, data: bytes, offset: int, what: str) -> tuple[int, ...]:
    """``struct.unpack_from`` that reports a header cut short as ``image_corrupt``."""
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise ImageProblem("image_corrupt", f"{what} is truncated")
    return struct.unpack_from(fmt, data, offset)


def sniff_format(data: bytes) -> str:
    """The format of ``data`` by its magic bytes: ``png``, ``jpeg``, ``webp``, ``bmp`` or ``tiff``.

    Raises:
        ImageProblem: ``image_unsupported_format``, naming the accepted formats.
    """
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in TIFF_MAGICS:
        return "tiff"
    raise ImageProblem(
        "image_unsupported_format", f"content is none of the accepted formats ({ACCEPTED_FORMATS})"
    )


def header_size(data: bytes) -> tuple[str, int, int]:
    """Reads format, width and height from an image header without decoding pixels.

    Returns:
        ``(format, width, height)``, format as ``sniff_format`` names it. The size is the stored
        one: an EXIF orientation that turns the picture is not applied here.

    Raises:
        ImageProblem: ``image_unsupported_format`` or ``image_corrupt`` (truncated or malformed
            header).
    """
    kind = sniff_format(data)
    readers = {
        "png": _png_size,
        "jpeg": _jpeg_size,
        "webp": _webp_size,
        "bmp": _bmp_size,
        "tiff": _tiff_size,
    }
    return (kind, *readers[kind](data))


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageProblem("image_corrupt", "PNG header is truncated or has no IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """The marker segments of a JPEG up to its first scan: ``(marker, payload start, payload
    length)``. Stops where the data ends or a length runs past it (callers judge what is missing).

    Raises:
        ImageProblem: ``image_corrupt`` where a marker is expected and something else is found.
    """
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            raise ImageProblem("image_corrupt", f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (_JPEG_SOS, _JPEG_EOI):  # entropy-coded data (or the end) follows
            return
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise ImageProblem("image_corrupt", f"JPEG segment at byte {pos} has length {length}")
        yield marker, pos + 4, min(length - 2, end - pos - 4)
        pos += 2 + length


def _jpeg_size(data: bytes) -> tuple[int, int]:
    for marker, start, length in jpeg_segments(data):
        if marker in _JPEG_SOF:
            if length < 5:
                break
            height, width = struct.unpack(">HH", data[start + 1 : start + 5])
            return width, height
    raise ImageProblem("image_corrupt", "JPEG has no frame header")


def webp_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """The chunks of a RIFF WebP file: ``(fourcc, payload start, payload length)``; stops where
    the data ends (a chunk's length is cut to what is there)."""
    pos, end = 12, len(data)
    while pos + 8 <= end:
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        yield data[pos : pos + 4], pos + 8, min(size, end - pos - 8)
        pos += 8 + size + (size & 1)  # chunks are padded to an even length


def _webp_size(data: bytes) -> tuple[int, int]:
    """Simple lossy (VP8), simple lossless (VP8L) or extended (VP8X) WebP: the first chunk
    says which and holds the size."""
    fourcc = data[12:16]
    if fourcc == b"VP8 ":
        # A 3-byte frame tag, the start code 9D 01 2A, then 14-bit width and height.
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageProblem("image_corrupt", "WebP VP8 frame header is truncated or invalid")
        width, height = _unpack("<HH", data, 26, "WebP VP8 frame header")
        return width & 0x3FFF, height & 0x3FFF
    if fourcc == b"VP8L":
        if data[20:21] != b"\x2f":
            raise ImageProblem("image_corrupt", "WebP VP8L header is truncated or invalid")
        (bits,) = _unpack("<I", data, 21, "WebP VP8L header")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if fourcc == b"VP8X":
        if len(data) < 30:
            raise ImageProblem("image_corrupt", "WebP VP8X header is truncated")
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    raise ImageProblem("image_corrupt", "WebP starts with none of the VP8, VP8L, VP8X chunks")


def _bmp_size(data: bytes) -> tuple[int, int]:
    """Width and height of a BMP; a negative height marks rows stored top-down."""
    (info_size,) = _unpack("<I", data, 14, "BMP header")
    if info_size == _BMP_CORE_HEADER:
        # OpenCV 4.14 reads these with IMREAD_UNCHANGED as one gray channel of the wrong bytes.
        raise ImageProblem("image_unsupported_format", "BMP with an OS/2 1.x core header")
    if info_size not in _BMP_INFO_HEADERS:
        raise ImageProblem("image_corrupt", f"BMP info header size {info_size} is not a known one")
    width, height = _unpack("<ii", data, 18, "BMP info header")
    if width < 0:
        raise ImageProblem("image_corrupt", f"BMP header claims width {width}")
    return width, abs(height)


def tiff_tags(block: bytes, wanted: set[int], what: str = "TIFF header") -> dict[int, int]:
    """The first value of each SHORT or LONG tag of ``wanted`` in the first IFD of a TIFF
    structure (a TIFF file, or the EXIF block of a JPEG or WebP), either byte order.

    Tags of ``wanted`` stored with another type are left out.

    Raises:
        ImageProblem: ``image_corrupt`` where the structure is truncated or malformed; ``what``
            names it in the detail.
    """
    order = {b"II": "<", b"MM": ">"}.get(block[:2])
    if order is None or _unpack(order + "H", block, 2, what)[0] != 42:
        raise ImageProblem("image_corrupt", f"{what} has no TIFF byte order mark")
    (ifd,) = _unpack(order + "I", block, 4, what)
    (count,) = _unpack(order + "H", block, ifd, what)
    found: dict[int, int] = {}
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind, values = _unpack(order + "HHI", block, entry, what)
        if tag not in wanted or values < 1:
            continue
        if kind == _TIFF_SHORT:  # the value sits in the first bytes of the 4-byte field
            found[tag] = _unpack(order + "H", block, entry + 8, what)[0]
        elif kind == _TIFF_LONG:
            found[tag] = _unpack(order + "I", block, entry + 8, what)[0]
    return found


def _tiff_size(data: bytes) -> tuple[int, int]:
    tags = tiff_tags(data, {TIFF_IMAGE_WIDTH, TIFF_IMAGE_LENGTH})
    if TIFF_IMAGE_WIDTH not in tags or TIFF_IMAGE_LENGTH not in tags:
        raise ImageProblem("image_corrupt", "TIFF first IFD has no ImageWidth or ImageLength")
    return tags[TIFF_IMAGE_WIDTH], tags[TIFF_IMAGE_LENGTH]
