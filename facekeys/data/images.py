"""Safe image access: paths that cannot leave their folder, size caps before decoding.

Formats (JPEG, PNG, WebP, BMP, TIFF) are recognised by content (magic bytes), never by file
extension: the real data has PNG files named ``.jpg`` (see ``facekeys.data.image_headers``).
Images are decoded as stored: labels refer to the stored pixels, so no EXIF orientation is
applied here (photos are turned upright by ``facekeys.data.photos``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# ImageProblem and header_size are part of this module's interface (their home is image_headers).
from facekeys.data.image_headers import ImageProblem, header_size
from facekeys.data.orientation import INVERSE, exif_orientation, upright

__all__ = [
    "ImageLimits",
    "ImageProblem",
    "decode_image",
    "header_size",
    "load_image",
    "read_image_bytes",
    "resolve_inside",
    "to_model_color",
]



@dataclass(frozen=True)
class ImageLimits:
    """Caps applied before an image is decoded.

    Attributes:
        max_bytes: Largest file accepted.
        max_side: Largest width or height accepted, as claimed by the file header.
        max_pixels: Largest width x height accepted, as claimed by the file header.
    """

    max_bytes: int = 50_000_000
    max_side: int = 8192
    max_pixels: int = 40_000_000


def resolve_inside(folder: str | os.PathLike[str], name: str) -> Path:
    """Resolves ``name`` inside ``folder``, refusing every way out of it.

    Args:
        folder: The image folder.
        name: A relative file name from a CSV row.

    Returns:
        The resolved path (symlinks followed), guaranteed to lie inside ``folder``.

    Raises:
        ImageProblem: ``image_name_empty``, ``image_path_unsafe`` (absolute, ``..``, backslash,
            control characters) or ``image_path_escapes_folder`` (a symlink pointing outside).
    """
    if not name or not name.strip():
        raise ImageProblem("image_name_empty", "the image name is blank")
    if any(ord(ch) < 32 for ch in name) or "\\" in name:
        raise ImageProblem("image_path_unsafe", f"{name!r} holds control characters or '\\'")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ImageProblem("image_path_unsafe", f"{name!r} is an absolute path")
    if ".." in Path(name).parts:
        raise ImageProblem("image_path_unsafe", f"{name!r} climbs out with '..'")
    root = Path(os.path.realpath(folder))
    resolved = Path(os.path.realpath(root / name))
    if resolved != root and root not in resolved.parents:
        raise ImageProblem("image_path_escapes_folder", f"{name!r} resolves outside {folder}")
    return resolved


def read_image_bytes(path: str | os.PathLike[str], limits: ImageLimits) -> bytes:
    """Reads an image file after checking it is a non-empty regular file within the byte cap."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise ImageProblem("image_missing", f"{path} does not exist") from None
    except OSError as exc:
        raise ImageProblem("image_unreadable", f"{path}: {exc.strerror}") from None
    if not os.path.isfile(path):
        raise ImageProblem("image_not_a_file", f"{path} is not a regular file")
    if stat.st_size == 0:
        raise ImageProblem("image_empty", f"{path} has zero bytes")
    if stat.st_size > limits.max_bytes:
        raise ImageProblem(
            "image_too_large", f"{path} has {stat.st_size} bytes > cap {limits.max_bytes}"
        )
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ImageProblem("image_unreadable", f"{path}: {exc.strerror}") from None


def _cv2() -> Any:
    """OpenCV, imported on first use, with its own log lines off: problems are reported as
    ``ImageProblem`` with the file named, not as OpenCV warnings on stderr."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return cv2


def decode_image(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decodes image bytes as stored (gray, RGB(A), 8 or 16 bit), after the size caps.

    Any format of ``header_size`` is accepted; the pixels are the stored ones, whatever the
    image's EXIF orientation (see ``facekeys.data.photos`` for photos turned upright).

    Returns:
        The decoded array: ``HxW`` or ``HxWxC``, dtype uint8 or uint16, channels in BGR(A) order.

    Raises:
        ImageProblem: ``image_unsupported_format``, ``image_too_large`` (from the header, before
            any pixel is decoded) or ``image_corrupt``.
    """
    cv2 = _cv2()
    kind, width, height = header_size(data)
    if width == 0 or height == 0:
        raise ImageProblem("image_corrupt", f"{kind.upper()} header claims {width}x{height}")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ImageProblem(
            "image_too_large",
            f"{kind.upper()} header claims {width}x{height} > cap "
            f"{limits.max_side} px a side / {limits.max_pixels} px",
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageProblem("image_corrupt", f"{kind.upper()} data does not decode")
    if kind == "tiff":
        # OpenCV's TIFF decoder turns the picture by the file's Orientation tag itself, whatever
        # the flags: turned back, so that every format comes back as stored.
        image = upright(image, INVERSE[exif_orientation(data)])
    if image.shape[0] != height or image.shape[1] != width:
        raise ImageProblem(
            "image_corrupt",
            f"decoded {image.shape[1]}x{image.shape[0]} but header claims {width}x{height}",
        )
    return image


def load_image(
    folder: str | os.PathLike[str], name: str, limits: ImageLimits | None = None
) -> np.ndarray:
    """Loads image ``name`` from ``folder`` with every safety check applied (see above)."""
    limits = limits or ImageLimits()
    path = resolve_inside(folder, name)
    return decode_image(read_image_bytes(path, limits), limits)


def to_model_color(image: np.ndarray, color: str) -> np.ndarray:
    """Any decoded image (gray/BGR/BGRA, 8 or 16 bit) as uint8 gray ``HxW`` or RGB ``HxWx3``."""
    import cv2

    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageProblem("image_unsupported_format", f"pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if color == "gray":
        if image.ndim == 2:
            return image
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        return cv2.cvtColor(image, code)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)
