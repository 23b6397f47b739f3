"""Predictions drawn on the picture they belong to: each face's box, its keypoints and its index,
sized to the picture so they stay visible on a phone photo and on a 96 px crop alike."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

Box = tuple[float, float, float, float]

BOX_COLOUR = (60, 200, 60)  # BGR
POINT_COLOUR = (40, 40, 255)
TEXT_COLOUR = (255, 255, 255)


def draw_faces(image: np.ndarray, boxes: list[Box | None], points: np.ndarray) -> np.ndarray:
    """A BGR copy of ``image`` (gray, BGR or BGRA; 8 or 16 bit) with each face drawn.

    Args:
        image: The decoded picture.
        boxes: The detector box ``(x, y, w, h)`` of each face, or None (no box drawn).
        points: Keypoints ``(faces, P, 2)`` in pixel-centre coordinates; NaN points are skipped.
    """
    import cv2

    from facekeys.data.images import to_model_color

    canvas = np.ascontiguousarray(to_model_color(image, "rgb")[..., ::-1])
    height, width = canvas.shape[:2]
    unit = max(1, round(max(height, width) / 400))  # line width: 1 px per 400 px of picture
    for index, (box, face) in enumerate(zip(boxes, points, strict=True)):
        if box is not None:
            x, y, w, h = (round(v) for v in box)
            cv2.rectangle(canvas, (x, y), (x + w, y + h), BOX_COLOUR, unit)
        for px, py in face[np.isfinite(face).all(axis=1)]:
            cv2.circle(canvas, (round(px), round(py)), unit + 1, POINT_COLOUR, -1, cv2.LINE_AA)
        anchor = _label_anchor(box, face)
        if anchor is not None:
            cv2.putText(canvas, str(index), anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * unit,
                        TEXT_COLOUR, unit, cv2.LINE_AA)  # fmt: skip
    return canvas


def _label_anchor(box: Box | None, face: np.ndarray) -> tuple[int, int] | None:
    """Where a face's index is written: above its box, else above its highest point."""
    if box is not None:
        return round(box[0]), max(12, round(box[1]) - 4)
    present = face[np.isfinite(face).all(axis=1)]
    if not len(present):
        return None
    top = present[np.argmin(present[:, 1])]
    return round(top[0]), max(12, round(top[1]) - 6)


def drawing_path(folder: str | os.PathLike[str], shown: str) -> Path:
    """Where the drawing of the picture named ``shown`` goes in ``folder``: one flat PNG per
    picture, its name the picture's (sub-folders joined by ``__``) plus ``.png``, never outside
    ``folder`` whatever ``shown`` holds (``..``, absolute paths)."""
    parts = [p for p in shown.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return Path(folder) / ("__".join(parts).lstrip(".") + ".png")


def write_drawing(
    folder: str | os.PathLike[str],
    shown: str,
    image: np.ndarray,
    boxes: list[Box | None],
    points: np.ndarray,
) -> None:
    """Writes ``draw_faces`` of a picture to ``drawing_path`` as a PNG, atomically."""
    import cv2

    from facekeys.data.atomic_files import atomic_file

    ok, data = cv2.imencode(".png", draw_faces(image, boxes, points))
    if not ok:  # pragma: no cover - encoding a uint8 BGR array does not fail
        raise ValueError("PNG encoding failed")
    with atomic_file(drawing_path(folder, shown), "wb") as handle:
        handle.write(data.tobytes())
