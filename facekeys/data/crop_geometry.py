"""Crop geometry shared by training data preparation and prediction.

Coordinates follow the pixel-centre convention of OpenCV: pixel ``i`` is centred on ``i``. A crop
is an affine map from original image pixels to the square model input of side ``size``; keeping
the map (not just the crop) lets predictions go back to original pixels exactly.

The crop policy (stored in ``meta.json`` and with every model) is: take a square box centred on
the face box, side = the box's longer side x ``1 + 2 * margin``, pad where the box leaves the
image (never stretch), resize to ``size``. For the data sets the face box is the whole image
(they are face crops already) with margin 0. For photos, a detector box is first mapped to the
square that framing stands for (``crop_policy.detector``, see facekeys.inference.detectors).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CropPolicy:
    """How a model input is cut from an image; inference must repeat it without ground truth.

    Attributes:
        size: Side of the square model input, pixels.
        face_box: ``whole_image`` (the data sets; photos map a detector box to that framing)
            or ``keypoints`` (the box around keypoints a first model predicted: refinement).
        margin: Extra context on each side, as a fraction of the box's longer side.
        pad_value: Gray value of the padding where the square leaves the image.
    """

    size: int
    face_box: str = "whole_image"
    margin: float = 0.0
    pad_value: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def square_crop_matrix(
    box: tuple[float, float, float, float], size: int, margin: float = 0.0
) -> np.ndarray:
    """Affine map (3x3) from image pixels into a ``size`` square around ``box``.

    Args:
        box: ``(x, y, width, height)`` of the face box, in pixels (left/top edge at ``x, y``).
        size: Side of the output square.
        margin: Context added on each side, as a fraction of the longer box side.
    """
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0 - 0.5, y + h / 2.0 - 0.5  # centre in pixel-centre coordinates
    scale = size / side
    half = (size - 1) / 2.0
    return np.array(
        [[scale, 0.0, half - scale * cx], [0.0, scale, half - scale * cy], [0.0, 0.0, 1.0]]
    )


@dataclass(frozen=True)
class FaceSquare:
    """A square around a face that may be turned: centre (pixel-centre coordinates), side, and
    the angle (radians) that turns the image so the face stands upright (the crop applies it)."""

    centre_x: float
    centre_y: float
    side: float
    angle: float = 0.0

    @classmethod
    def from_box(cls, box: tuple[float, float, float, float], angle: float = 0.0) -> FaceSquare:
        """The square of an ``(x, y, side, side)`` box (edge convention: its edges lie half a
        pixel outside the pixel centres), turned by ``angle``."""
        x, y, side, _ = box
        return cls(x + side / 2 - 0.5, y + side / 2 - 0.5, side, angle)

    @property
    def level_box(self) -> tuple[float, float, float, float]:
        """The ``(x, y, side, side)`` box of the square with its turn left out."""
        half = self.side / 2
        return (self.centre_x + 0.5 - half, self.centre_y + 0.5 - half, self.side, self.side)


def face_square_matrix(square: FaceSquare, size: int, margin: float = 0.0) -> np.ndarray:
    """Affine map (3x3) from image pixels into a ``size`` square: ``square`` turned by its angle
    and widened by ``margin`` of its side on each side. At angle 0 it is the map
    ``square_crop_matrix`` gives for the same square."""
    scale = size / (square.side * (1.0 + 2.0 * margin))
    cos, sin = scale * np.cos(square.angle), scale * np.sin(square.angle)
    half = (size - 1) / 2.0
    cx, cy = square.centre_x, square.centre_y
    return np.array(
        [
            [cos, -sin, half - cos * cx + sin * cy],
            [sin, cos, half - sin * cx - cos * cy],
            [0.0, 0.0, 1.0],
        ]
    )


def upright_keypoint_square(points: np.ndarray, angle: float) -> FaceSquare:
    """The square around ``(P, 2)`` points (NaN ignored) seen turned by ``angle``: what
    ``keypoint_box`` is for an upright face, measured in the turned frame."""
    present = points[~np.isnan(points).any(axis=1)]
    if len(present) < 2:
        raise ValueError("a keypoint square needs at least two points")
    cos, sin = np.cos(angle), np.sin(angle)
    turned = present @ np.array([[cos, sin], [-sin, cos]])
    low, high = turned.min(axis=0), turned.max(axis=0)
    side = max(float(high[0] - low[0]), float(high[1] - low[1]), 1.0)
    mid = (low + high) / 2.0
    centre = mid @ np.array([[cos, -sin], [sin, cos]])
    return FaceSquare(float(centre[0]), float(centre[1]), side, float(angle))


def keypoint_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """The ``(x, y, width, height)`` box spanned by ``(P, 2)`` pixel-centre points (NaN ignored),
    in the edge convention of ``square_crop_matrix`` (its centre is the points' box centre)."""
    present = points[~np.isnan(points).any(axis=1)]
    if len(present) < 2:
        raise ValueError("a keypoint box needs at least two points")
    low, high = present.min(axis=0), present.max(axis=0)
    # At least 1 px a side: points that collapse onto one spot (a failed first network) must
    # still give a crop, not a division by zero.
    width, height = max(float(high[0] - low[0]), 1.0), max(float(high[1] - low[1]), 1.0)
    centre = (low + high) / 2.0 + 0.5
    return (float(centre[0] - width / 2), float(centre[1] - height / 2), width, height)


def whole_image_matrix(width: int, height: int, policy: CropPolicy) -> np.ndarray:
    """The crop of a data set image: the whole image padded to a square."""
    return square_crop_matrix((0.0, 0.0, float(width), float(height)), policy.size, policy.margin)


def jitter_matrix(
    size: int, angle_deg: float, scale: float, shift_x: float, shift_y: float, flip: bool
) -> np.ndarray:
    """Augmentation in model-input space: rotate and scale about the centre, shift, then flip.

    Shifts are fractions of ``size``; a flip maps x to ``size - 1 - x``.
    """
    c = (size - 1) / 2.0
    a = np.deg2rad(angle_deg)
    cos, sin = scale * np.cos(a), scale * np.sin(a)
    m = np.array(
        [
            [cos, -sin, c - cos * c + sin * c + shift_x * size],
            [sin, cos, c - sin * c - cos * c + shift_y * size],
            [0.0, 0.0, 1.0],
        ]
    )
    if flip:
        m = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    return m


def apply_to_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Maps ``(..., 2)`` points through a 3x3 (or 2x3) affine matrix; NaN stays NaN."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def warp(image: np.ndarray, matrix: np.ndarray, size: int, pad_value: int = 0) -> np.ndarray:
    """Resamples ``image`` into the ``size`` square given by ``matrix`` (one interpolation)."""
    import cv2

    scale = np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    # Area averaging when shrinking a lot avoids aliasing; bilinear otherwise.
    interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    if interp == cv2.INTER_AREA:
        # warpAffine ignores INTER_AREA: shrink first with resize, then warp the rest.
        factor = max(1, int(1.0 / scale) // 1)
        if factor > 1:
            small = cv2.resize(
                image,
                (max(1, image.shape[1] // factor), max(1, image.shape[0] // factor)),
                interpolation=cv2.INTER_AREA,
            )
            sx = image.shape[1] / small.shape[1]
            sy = image.shape[0] / small.shape[0]
            # small pixel j covers big pixels [j*s, (j+1)*s): centre j <-> big (j + 0.5) * s - 0.5
            to_big = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
            return warp(small, matrix @ to_big, size, pad_value)
    return cv2.warpAffine(
        image,
        matrix[:2],
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=pad_value,
    )


def flip_points(points: np.ndarray, size: int, permutation: tuple[int, ...]) -> np.ndarray:
    """Mirrors points in a ``size`` square and relabels them (left eye becomes right eye)."""
    flipped = points.copy()
    flipped[..., 0] = size - 1 - flipped[..., 0]
    return flipped[..., list(permutation), :]
