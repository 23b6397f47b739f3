"""Face filters as geometry: an overlay placed on every face of a frame from its keypoints.

For each face, the overlay's two anchors are mapped onto two face points (its target, see
``facekeys.wild.overlays``) by a similarity transform: scaled by the span of those points,
turned with the line between the eyes (for every target: a moustache or a hat tilts with the
head, not with a mouth that smiles on one side), and moved onto their midpoint. The overlay is
warped into the part of the frame it covers, clipped at the frame's border, and alpha-blended.

Coordinates are pixel centres on integers, in the overlay as in the frame (as the predictor
returns keypoints). ``apply_overlay`` is what video code calls once per frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facekeys.data.keypoint_formats import KAGGLE15, YOUTUBE68
from facekeys.data.point_similarity import similarity_fit
from facekeys.errors import FacekeysError
from facekeys.wild.overlays import Overlay

# Eyes closer than this (pixels) are no face to place an overlay on.
MIN_EYE_DISTANCE = 1.0


@dataclass(frozen=True)
class FaceLayout:
    """Where the face points a filter needs are in one keypoint scheme.

    Attributes:
        name: The keypoint format (``youtube68`` or ``kaggle15``).
        parts: Face point name -> indices of the keypoints whose mean it is. ``right_*`` and
            ``left_*`` are the subject's sides (the subject's right lies on the image's left).
    """

    name: str
    parts: dict[str, tuple[int, ...]]

    def point(self, points: np.ndarray, part: str) -> np.ndarray:
        """The mean of the keypoints of ``part`` in one face's ``(P, 2)`` points."""
        return points[list(self.parts[part])].mean(axis=0)


def _kaggle(*names: str) -> tuple[int, ...]:
    return tuple(KAGGLE15.point_names.index(n) for n in names)


LAYOUTS: dict[str, FaceLayout] = {
    "youtube68": FaceLayout(
        "youtube68",
        {
            # iBUG 68: the eye centres are the means of the six eye contour points.
            "right_eye": tuple(range(36, 42)),
            "left_eye": tuple(range(42, 48)),
            "right_brow": (17,),
            "left_brow": (26,),
            "mouth_right": (48,),
            "mouth_left": (54,),
            "nose": (33,),  # the nose's base, between the nostrils
            "upper_lip": (51,),  # the top of the upper lip
        },
    ),
    "kaggle15": FaceLayout(
        "kaggle15",
        {
            "right_eye": _kaggle("right_eye_center"),
            "left_eye": _kaggle("left_eye_center"),
            "right_brow": _kaggle("right_eyebrow_outer_end"),
            "left_brow": _kaggle("left_eyebrow_outer_end"),
            "mouth_right": _kaggle("mouth_right_corner"),
            "mouth_left": _kaggle("mouth_left_corner"),
            "nose": _kaggle("nose_tip"),  # no nose base in this scheme; the tip is just above
            "upper_lip": _kaggle("mouth_center_top_lip"),
        },
    ),
}

_PAIRS = {
    "eyes": ("right_eye", "left_eye"),
    "brows": ("right_brow", "left_brow"),
    "mouth": ("mouth_right", "mouth_left"),
    "upper_lip": ("mouth_right", "mouth_left"),
}


def layout_for(keypoint_names: Sequence[str]) -> FaceLayout:
    """The layout of a model's keypoints, recognised by their names.

    Raises:
        FacekeysError: The names are neither the 68-point nor the 15-point scheme.
    """
    for fmt in (YOUTUBE68, KAGGLE15):
        if tuple(keypoint_names) == fmt.point_names:
            return LAYOUTS[fmt.name]
    raise FacekeysError(
        f"the model's {len(keypoint_names)} keypoints are neither the 68-point (iBUG) nor the "
        "15-point (Kaggle) scheme; face filters need one of them"
    )


def target_points(points: np.ndarray, layout: FaceLayout, target: str) -> np.ndarray | None:
    """The two frame points an overlay's anchors land on, for one face.

    Both lie on a line parallel to the eyes' line, through the middle of the target's pair of
    face points, as far apart as that pair.

    Returns:
        ``(2, 2)``: the image-left point, then the image-right one; None where a point needed is
        not finite or the eyes coincide (no face to place anything on).
    """
    right_eye, left_eye = layout.point(points, "right_eye"), layout.point(points, "left_eye")
    first, second = (layout.point(points, part) for part in _PAIRS[target])
    if target == "upper_lip":  # the corners' span, moved up to between the nose and the lip
        middle = (layout.point(points, "nose") + layout.point(points, "upper_lip")) / 2
        shift = middle - (first + second) / 2
        first, second = first + shift, second + shift
    eye_line = left_eye - right_eye
    pair = np.stack([first, second])
    eye_distance = float(np.hypot(*eye_line)) if np.isfinite(eye_line).all() else 0.0
    if not np.isfinite(pair).all() or eye_distance < MIN_EYE_DISTANCE:
        return None
    direction = eye_line / eye_distance
    half_span = float(np.hypot(*(second - first))) / 2
    centre = (first + second) / 2
    return np.stack([centre - half_span * direction, centre + half_span * direction])


def _level_index(scale: float) -> int:
    """How many halvings of the overlay come before the warp, so that the warp itself never
    shrinks by more than two (bilinear sampling skips pixels beyond that)."""
    return max(0, math.floor(math.log2(1.0 / scale))) if scale > 0 else 0


def paste(frame: np.ndarray, overlay: Overlay, matrix: np.ndarray) -> None:
    """Blends ``overlay`` into ``frame`` (BGR uint8, changed in place) where ``matrix`` (overlay
    pixels -> frame pixels) puts it; only the covered part of the frame is warped and touched,
    and what falls outside the frame is dropped."""
    import cv2

    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    image, sx, sy = overlay.level(_level_index(scale))
    # Level pixels -> full overlay pixels (pixel centres on integers at both sizes), then on.
    to_full = np.array([[1 / sx, 0, (1 / sx - 1) / 2], [0, 1 / sy, (1 / sy - 1) / 2], [0, 0, 1]])
    placed = matrix @ to_full
    height, width = image.shape[:2]
    corners = np.array([[-0.5, -0.5, 1], [width - 0.5, -0.5, 1], [-0.5, height - 0.5, 1],
                        [width - 0.5, height - 0.5, 1]]) @ placed.T  # fmt: skip
    low = np.floor(corners.min(axis=0)).clip(0, frame.shape[1::-1]).astype(int)
    high = np.ceil(corners.max(axis=0) + 1).clip(0, frame.shape[1::-1]).astype(int)
    (x0, y0), (x1, y1) = low, high
    if x1 <= x0 or y1 <= y0:  # entirely outside the frame
        return
    placed[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(
        image, placed, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0),
    )  # fmt: skip
    region = frame[y0:y1, x0:x1]
    alpha = warped[..., 3:4].astype(np.float32) / 255.0
    # Premultiplied colour: over = colour + frame * (1 - alpha); alpha 0 leaves the frame as is.
    blended = warped[..., :3].astype(np.float32) + region.astype(np.float32) * (1.0 - alpha)
    region[...] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def apply_overlay(
    frame_bgr: np.ndarray, faces_points: np.ndarray, overlay: Overlay, layout: FaceLayout
) -> np.ndarray:
    """The frame with ``overlay`` placed on every face.

    Args:
        frame_bgr: ``HxWx3`` uint8 frame (not changed).
        faces_points: ``(faces, P, 2)`` keypoints in frame pixels, in ``layout``'s scheme.
        overlay: What to place.
        layout: The keypoint scheme of ``faces_points``.

    Returns:
        A new frame. Faces whose needed points are not finite (NaN: lost or not predicted) are
        skipped; faces partly or wholly outside the frame get what falls inside it.
    """
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        raise ValueError(f"a BGR uint8 frame is needed, got {frame_bgr.shape} {frame_bgr.dtype}")
    frame = frame_bgr.copy()
    for points in np.asarray(faces_points, np.float64):
        destination = target_points(points, layout, overlay.target)
        fit = None if destination is None else similarity_fit(overlay.anchors, destination, 2)
        if fit is not None:
            paste(frame, overlay, fit.matrix)
    return frame


def placeable_faces(faces_points: np.ndarray, overlay: Overlay, layout: FaceLayout) -> int:
    """How many of the faces ``apply_overlay`` places the overlay on (for messages)."""
    return sum(target_points(p, layout, overlay.target) is not None for p in faces_points)
