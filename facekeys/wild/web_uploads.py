"""What the web app accepts: upload limits enforced while the body arrives, photos decoded by
content, problems turned into one-line JSON errors with a 4xx status, and sample photos offered
by name.

Nothing here takes a file path from a request: uploads are bytes, and samples are looked up by
name in a table made from a folder listing when the server starts.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from starlette.exceptions import HTTPException

from facekeys.data.images import ImageLimits, ImageProblem
from facekeys.data.photos import check_face_size, decode_photo

# Room for the multipart envelope (boundaries, part headers, the overlay field) around the photo.
FORM_OVERHEAD_BYTES = 64 * 1024
# Suffixes of the files a samples folder offers; uploads themselves are recognised by content.
SAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MAX_SAMPLES = 50

# ImageProblem codes -> HTTP status; any other code (a corrupt or empty image, ...) is a 400.
_STATUS_OF_PROBLEM = {"image_too_large": 413, "image_unsupported_format": 415}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class UploadLimits:
    """Caps on one uploaded photo.

    Attributes:
        max_bytes: Largest photo file accepted (the request body may add FORM_OVERHEAD_BYTES).
        max_pixels: Largest width x height accepted, read from the header before decoding.
        max_side: Largest width or height accepted, likewise.
    """

    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    max_side: int = 12_000

    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.max_bytes, self.max_side, self.max_pixels)


class RequestTooLarge(HTTPException):
    """A body over the cap. An HTTPException so that FastAPI's form parsing passes it on as it
    is (it turns other exceptions raised while parsing into a 400)."""

    def __init__(self, photo_bytes: int) -> None:
        super().__init__(413, f"the request is larger than a photo of {photo_bytes} bytes allows")


def read_photo(data: bytes, limits: UploadLimits) -> np.ndarray:
    """Decodes an uploaded photo, recognised by its content, after the header's size checks,
    upright as viewers (and the page's browser) show it: its EXIF orientation applied.

    Raises:
        ImageProblem: Empty, corrupt, of an unsupported format, over the caps, or too small to
            hold a face.
    """
    if not data:
        raise ImageProblem("image_empty", "the uploaded file has zero bytes")
    if len(data) > limits.max_bytes:
        cap = limits.max_bytes
        raise ImageProblem("image_too_large", f"the photo is over the cap of {cap} bytes")
    photo = decode_photo(data, limits.image_limits())
    check_face_size(photo)
    return photo.pixels


def problem_status(problem: ImageProblem) -> int:
    """The HTTP status for a photo that cannot be used: 413 too large, 415 not a supported
    image, 400 otherwise (empty, corrupt, too small)."""
    return _STATUS_OF_PROBLEM.get(problem.code, 400)


def one_line(text: str, limit: int = 300) -> str:
    """``text`` as one line of at most ``limit`` characters (error messages quote user input)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class BodyGuard:
    """ASGI middleware: caps request bodies and turns unexpected failures into one-line JSON.

    A body whose ``Content-Length`` is over the cap is refused before any of it is read; a body
    without one (chunked) or with a false one is counted as it arrives and refused at the first
    byte over the cap, so no request makes the server hold more than the cap.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], photo_bytes: int) -> None:
        self.app = app
        self.photo_bytes = photo_bytes
        self.max_body_bytes = photo_bytes + FORM_OVERHEAD_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is None:
            await send_json_error(send, 400, "Content-Length is not a number")
            return
        if declared > self.max_body_bytes:
            await send_json_error(send, 413, RequestTooLarge(self.photo_bytes).detail)
            return
        started = False

        async def counting_receive() -> Message:
            message = await receive()
            counted[0] += len(message.get("body", b""))
            if counted[0] > self.max_body_bytes:
                raise RequestTooLarge(self.photo_bytes)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        counted = [0]
        try:
            await self.app(scope, counting_receive, watching_send)
        except Exception as exc:  # a bug, not a bad request: one line here, no traceback
            print(f"facekeys serve: internal error on {scope.get('path')}: "
                  f"{type(exc).__name__}: {one_line(str(exc))}", file=sys.stderr)  # fmt: skip
            if not started:
                await send_json_error(send, 500, "internal error (see the server's log)")


def _content_length(scope: Scope) -> int | None:
    """The declared body size: 0 where there is no header, None where it is not a number."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return 0


async def send_json_error(send: Send, status: int, message: str) -> None:
    """Sends ``{"error": message}`` with ``status`` straight to the ASGI server."""
    body = json.dumps({"error": one_line(message)}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def list_samples(folder: str | os.PathLike[str] | None, limits: UploadLimits) -> dict[str, Path]:
    """The sample photos a folder offers, by file name (read once, when the server starts).

    Args:
        folder: A folder of photos, or None for none.
        limits: Files over the byte cap are left out (they would be refused on upload).

    Returns:
        File name -> path, sorted by name, at most MAX_SAMPLES.

    Raises:
        FacekeysError: ``folder`` is not a folder.
    """
    from facekeys.errors import FacekeysError

    if folder is None:
        return {}
    root = Path(folder)
    if not root.is_dir():
        raise FacekeysError(f"{folder}: not a folder of sample photos")
    found = {}
    for path in sorted(root.iterdir()):
        if (
            path.suffix.lower() in SAMPLE_SUFFIXES
            and path.is_file()
            and 0 < path.stat().st_size <= limits.max_bytes
        ):
            found[path.name] = path
    return dict(list(found.items())[:MAX_SAMPLES])
