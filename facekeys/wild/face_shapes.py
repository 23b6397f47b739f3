"""Plane geometry of keypoint sets for tracking: a face's size, boxes and their overlap.

The similarity between two face shapes (``facekeys.data.point_similarity``: scale, rotation,
shift; no reflection, no shear) is what a face undergoes in the image when it moves, turns in the
image plane or comes closer; what it leaves unexplained is a change of shape (expression, turning
away) or points that are not a face at all.
"""

from __future__ import annotations

import numpy as np

Box = tuple[float, float, float, float]


def spread(points: np.ndarray) -> float:
    """Root mean square distance of the finite points from their centroid (a face's size that
    does not depend on its rotation); 0 with fewer than two points."""
    present = points[np.isfinite(points).all(axis=1)]
    if len(present) < 2:
        return 0.0
    return float(np.sqrt(((present - present.mean(axis=0)) ** 2).sum(axis=1).mean()))


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes; 0 for boxes without area."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def square_at(centre: np.ndarray, side: float) -> Box:
    """The ``(x, y, side, side)`` square centred on ``centre``."""
    return (float(centre[0] - side / 2), float(centre[1] - side / 2), float(side), float(side))


def box_centre(box: Box) -> np.ndarray:
    """Centre ``(2,)`` of an ``(x, y, w, h)`` box."""
    return np.array([box[0] + box[2] / 2.0, box[1] + box[3] / 2.0])
