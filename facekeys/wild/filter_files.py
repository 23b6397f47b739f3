"""``facekeys filter`` on a file: a photo in, the same photo with an overlay on every face out.

``filter_file`` decides by the input's kind: photos are filtered here; video files are refused in
one line for now, and their branch (decode frames, track, ``apply_overlay`` per frame, encode)
goes where that refusal is. Everything cheap is checked before the model is loaded: the output
(suffix, not the input, writable), then the photo.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facekeys.data.atomic_files import atomic_file, check_writable
from facekeys.data.images import ImageProblem, to_model_color
from facekeys.data.photos import check_face_size, load_photo
from facekeys.errors import FacekeysError
from facekeys.wild.filters import apply_overlay, layout_for, placeable_faces
from facekeys.wild.overlays import Overlay, image_problem_line

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
# Output suffix -> the encoder OpenCV is asked for.
PHOTO_OUTPUTS = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png"}


class FacePredictor(Protocol):
    """What filtering needs of a model: ``KeypointPredictor`` and its exported variants."""

    @property
    def keypoint_names(self) -> Sequence[str]: ...

    def predict_faces(self, image: np.ndarray) -> tuple[list[Any], np.ndarray]: ...


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b) or os.path.samefile(a, b)
    except OSError:  # the output does not exist yet
        return False


def check_photo_output(source: Path, out: Path) -> None:
    """Refuses an output that is not a ``.jpg``/``.png`` file, is the input photo itself, or
    cannot be written, before anything slow happens.

    Raises:
        FacekeysError: One line naming the output and the problem.
    """
    if out.suffix.lower() not in PHOTO_OUTPUTS:
        raise FacekeysError(f"{out}: --out must name a .jpg, .jpeg or .png file")
    if _same_file(source, out):
        raise FacekeysError(f"{out}: --out is the input photo; name another file")
    check_writable(out)


def read_photo(path: str | os.PathLike[str]) -> np.ndarray:
    """Decodes a photo upright, as viewers show it (its EXIF orientation applied), so the overlay
    sits on the faces a person sees.

    Raises:
        FacekeysError: Missing, unreadable, corrupt, too large, too small to hold a face or of a
            format not decoded.
    """
    try:
        photo = load_photo(path)
        check_face_size(photo)
        return photo.pixels
    except ImageProblem as exc:
        raise FacekeysError(image_problem_line(path, exc)) from None


def to_bgr(path: str | os.PathLike[str], image: np.ndarray) -> np.ndarray:
    """Any decoded photo (gray, BGR, BGRA, 8 or 16 bit) as an 8-bit BGR frame to draw on."""
    import cv2

    try:
        return cv2.cvtColor(to_model_color(image, "rgb"), cv2.COLOR_RGB2BGR)
    except ImageProblem as exc:
        raise FacekeysError(image_problem_line(path, exc)) from None


def write_photo(out: Path, frame: np.ndarray) -> None:
    """Encodes ``frame`` by ``out``'s suffix and writes it atomically (never half a file)."""
    import cv2

    ok, data = cv2.imencode(PHOTO_OUTPUTS[out.suffix.lower()], frame)
    if not ok:
        raise FacekeysError(f"{out}: the picture could not be encoded")
    with atomic_file(out, "wb") as handle:
        handle.write(data.tobytes())


def filter_photo(
    source: Path,
    out: Path,
    overlay: Overlay,
    load_predictor: Callable[[], FacePredictor],
    log: Callable[[str], None],
) -> int:
    """Writes ``out``: the photo with ``overlay`` on every face the model's detector finds.

    A photo without a face is written without an overlay, and ``log`` says so: the output then
    exists as it would for any photo, so scripts need not treat it apart.

    Returns:
        The number of faces the overlay was placed on.
    """
    check_photo_output(source, out)
    image = read_photo(source)
    predictor = load_predictor()
    layout = layout_for(predictor.keypoint_names)
    _, points = predictor.predict_faces(image)
    placed = placeable_faces(points, overlay, layout)
    write_photo(out, apply_overlay(to_bgr(source, image), points, overlay, layout))
    if len(points) == 0:
        log(f"{source}: no face found; {out} is the photo without an overlay")
    else:
        log(f"{out}: {overlay.name} on {placed} of {len(points)} faces found in {source}")
    return placed


def filter_file(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    overlay: Overlay,
    load_predictor: Callable[[], FacePredictor],
    log: Callable[[str], None],
) -> int:
    """``facekeys filter``: the branch for the input's kind: a photo, or a video (by its name's
    suffix) whose followed faces get the overlay in every frame (``facekeys video --filter``).

    Returns:
        The number of faces the overlay was placed on (a video: faces followed).

    Raises:
        FacekeysError: One line naming the file and the problem.
    """
    source, out = Path(source), Path(out)
    if not source.exists():
        raise FacekeysError(f"{source}: no such file")
    if source.suffix.lower() in VIDEO_SUFFIXES:
        return filter_video(source, out, overlay, load_predictor, log)
    return filter_photo(source, out, overlay, load_predictor, log)


def filter_video(
    source: Path,
    out: Path,
    overlay: Overlay,
    load_predictor: Callable[[], FacePredictor],
    log: Callable[[str], None],
) -> int:
    """A video with ``overlay`` on every followed face in every frame, written to ``out`` (.mp4)
    with the tracker's default settings (``facekeys video --filter`` offers the others).

    Raises:
        FacekeysError: One line naming the file and the problem (bad frames are skipped, counted
            in the summary and raised as one line at the end, the video written).
    """
    from facekeys.wild.video_run import video_with_faces

    summary = video_with_faces(str(source), str(out), None, load_predictor, log, overlay=overlay)
    if summary.bad_frames:
        raise FacekeysError(f"{source}: {len(summary.bad_frames)} bad frames skipped (named above)")
    return summary.faces
