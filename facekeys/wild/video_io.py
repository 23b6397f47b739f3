"""Frames in and out: a video file, a folder of images or a camera in; an mp4 file out.

Every source yields ``Frame`` objects in order, with a timestamp (the video's own clock, the
folder's nominal frame rate, or the camera's arrival time) and, for a frame that cannot be used,
no image but a reason: a video goes on past a bad frame and the command reports it at the end.
Sizes are checked before pixels are decoded (the caps of ``facekeys.data.images.ImageLimits``).
A source that cannot be used at all (no such file, zero bytes, not a video OpenCV can decode, a
camera that does not exist) raises ``FacekeysError`` with one line naming it.

FFmpeg writes its own complaints about a broken file straight to the process's stderr, past
OpenCV's log switch; they are silenced while a file is opened or read, and the command says what
went wrong in its own words instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facekeys.data.images import ImageLimits, ImageProblem, decode_image, read_image_bytes
from facekeys.errors import FacekeysError

# Bad frames in a row after which a video file is taken to have ended (a truncated file).
MAX_BAD_FRAMES_IN_A_ROW = 25
FOLDER_FPS = 25.0


@dataclass
class Frame:
    """One frame of a source.

    Attributes:
        index: Position in the source, from 0 (bad frames count too).
        time_s: Timestamp, seconds from the first frame.
        image: BGR uint8 ``HxWx3``; None for a bad frame.
        name: Where it came from (``clip.mp4#12``, ``frames/0012.png``, ``camera 0#12``).
        problem: Why the frame cannot be used, where it cannot.
    """

    index: int
    time_s: float
    image: np.ndarray | None
    name: str
    problem: str | None = None


def _cv2() -> Any:
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return cv2


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Sends what native code writes to file descriptor 2 to /dev/null meanwhile."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; 8 or 16 bit) as uint8 BGR, as a video holds it."""
    from facekeys.data.images import to_model_color

    return to_model_color(image, "rgb")[..., ::-1].copy()


def _check_size(name: str, width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise FacekeysError(f"{name}: not a video OpenCV can decode (no frame size)")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise FacekeysError(
            f"{name}: frames of {width}x{height} exceed the cap of {limits.max_side} px a side "
            f"/ {limits.max_pixels} px"
        )


class VideoFileSource:
    """Frames of a video file, decoded by OpenCV (FFmpeg)."""

    def __init__(self, path: Path, limits: ImageLimits) -> None:
        self.name = str(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise FacekeysError(f"{path}: no such file or folder") from None
        except OSError as exc:
            raise FacekeysError(f"{path}: cannot read: {exc.strerror}") from None
        if size == 0:
            raise FacekeysError(f"{path}: empty file (0 bytes)")
        if not os.access(path, os.R_OK):
            raise FacekeysError(f"{path}: cannot read: Permission denied")
        cv2 = _cv2()
        with quiet_native_stderr():
            self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise FacekeysError(f"{path}: not a video OpenCV can decode")
        width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        _check_size(self.name, width, height, limits)
        fps = float(self.capture.get(cv2.CAP_PROP_FPS))
        self.fps = fps if 0 < fps < 1000 else FOLDER_FPS
        self.total = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None

    def __iter__(self) -> Iterator[Frame]:
        index, bad_run, frames = 0, 0, 0
        try:
            while True:
                with quiet_native_stderr():
                    ok, image = self.capture.read()
                if ok and image is not None:
                    bad_run, frames = 0, frames + 1
                    yield Frame(index, index / self.fps, to_bgr8(image), f"{self.name}#{index}")
                elif self.total is not None and index < self.total:
                    # Before the end the file announced: a frame that does not decode.
                    bad_run += 1
                    if bad_run > MAX_BAD_FRAMES_IN_A_ROW:
                        return
                    yield Frame(index, index / self.fps, None, f"{self.name}#{index}",
                                "frame does not decode")  # fmt: skip
                else:
                    if frames == 0:
                        raise FacekeysError(f"{self.name}: not a video OpenCV can decode")
                    return
                index += 1
        finally:
            self.capture.release()


def _natural_key(name: str) -> list[Any]:
    """``frame2`` before ``frame10``: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class FolderSource:
    """The image files of a folder (not its sub-folders), in natural name order."""

    def __init__(self, folder: Path, limits: ImageLimits, fps: float = FOLDER_FPS) -> None:
        from facekeys.inference.predict_files import IMAGE_SUFFIXES

        self.name, self.limits, self.fps = str(folder), limits, fps
        try:
            entries = sorted(os.scandir(folder), key=lambda e: _natural_key(e.name))
        except OSError as exc:
            raise FacekeysError(f"{folder}: cannot read: {exc.strerror}") from None
        self.files = [Path(e.path) for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES)]
        if not self.files:
            raise FacekeysError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        self.total = len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        size = None
        for index, path in enumerate(self.files):
            time_s = index / self.fps
            try:
                image = to_bgr8(decode_image(read_image_bytes(path, self.limits), self.limits))
            except ImageProblem as exc:
                yield Frame(index, time_s, None, str(path), f"{exc.code}: {exc.detail}")
                continue
            if size is None:
                size = image.shape
                _check_size(str(path), image.shape[1], image.shape[0], self.limits)
            elif image.shape != size:
                problem = f"{image.shape[1]}x{image.shape[0]}, not {size[1]}x{size[0]} as frame 0"
                yield Frame(index, time_s, None, str(path), problem)
                continue
            yield Frame(index, time_s, image, str(path))


class CameraSource:
    """Frames of a camera (``cv2.VideoCapture(index)``) until ``max_frames`` or Ctrl-C."""

    def __init__(self, index: int, limits: ImageLimits) -> None:
        cv2 = _cv2()
        self.name, self.total, self.limits = f"camera {index}", None, limits
        with quiet_native_stderr():
            self.capture = cv2.VideoCapture(index)
        if not self.capture.isOpened():
            raise FacekeysError(f"{self.name}: cannot be opened (no such camera, or it is busy)")
        fps = float(self.capture.get(cv2.CAP_PROP_FPS))
        self.fps = fps if 0 < fps < 1000 else FOLDER_FPS

    def __iter__(self) -> Iterator[Frame]:
        start, index = time.monotonic(), 0
        try:
            while True:
                ok, image = self.capture.read()
                if not ok or image is None:
                    return  # unplugged, or the driver ended the stream
                if index == 0:
                    _check_size(self.name, image.shape[1], image.shape[0], self.limits)
                yield Frame(index, time.monotonic() - start, to_bgr8(image), f"{self.name}#{index}")
                index += 1
        finally:
            self.capture.release()


def open_source(spec: str, limits: ImageLimits | None = None, fps: float | None = None):
    """The frame source ``spec`` names: a camera index (``0``), a folder of images, or a file.

    Args:
        spec: As the user typed it.
        limits: Size caps (default ``ImageLimits()``).
        fps: Frame rate of a folder of images (default 25); ignored for files and cameras.

    Raises:
        FacekeysError: One line naming the source and why it cannot be used.
    """
    limits = limits or ImageLimits()
    if spec.isdigit() and not os.path.exists(spec):  # a file named "0" is still a file
        return CameraSource(int(spec), limits)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, limits, fps or FOLDER_FPS)
    return VideoFileSource(path, limits)


class Mp4Writer:
    """Writes BGR frames to an mp4 file (MPEG-4 Part 2, ``mp4v``: in every OpenCV wheel)."""

    def __init__(self, path: Path, fps: float, width: int, height: int) -> None:
        cv2 = _cv2()
        self.path, self.size = path, (width, height)
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, self.size)
        if not self.writer.isOpened():
            raise FacekeysError(f"{path}: OpenCV cannot write an mp4 video here")

    def write(self, image: np.ndarray) -> None:
        self.writer.write(image)

    def close(self) -> None:
        self.writer.release()
