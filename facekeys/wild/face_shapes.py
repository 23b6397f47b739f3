"""Plane geometry of keypoint sets: the similarity that maps one face shape onto another, how far
a shape is from another after that fit, and overlap of square boxes.

A similarity (scale, rotation, shift; no reflection, no shear) is what a face undergoes in the
image when it moves, turns in the image plane or comes closer; what it leaves unexplained is a
change of shape (expression, turning away) or points that are not a face at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Similarity:
    """``target ~ scale * R(angle) @ source + shift``, fitted by least squares.

    Attributes:
        scale: Size of the target over the size of the source.
        angle: Rotation, radians (image axes: y down, so positive turns clockwise on screen).
        shift: Translation ``(2,)``.
        residual: Root mean square distance between the mapped source and the target, in the
            target's unit (pixels).
        source_spread: Root mean square distance of the source points from their centroid.
    """

    scale: float
    angle: float
    shift: np.ndarray
    residual: float
    source_spread: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Maps ``(..., 2)`` points of the source's frame into the target's."""
        cos, sin = self.scale * np.cos(self.angle), self.scale * np.sin(self.angle)
        matrix = np.array([[cos, -sin], [sin, cos]])
        return np.asarray(points, np.float64) @ matrix.T + self.shift

    @property
    def relative_residual(self) -> float:
        """The residual as a fraction of the target face's size (its spread): 0 for the same
        shape, about 1 for points that have nothing to do with it."""
        return self.residual / max(self.scale * self.source_spread, 1e-9)


def spread(points: np.ndarray) -> float:
    """Root mean square distance of the finite points from their centroid (a face's size that
    does not depend on its rotation); 0 with fewer than two points."""
    present = points[np.isfinite(points).all(axis=1)]
    if len(present) < 2:
        return 0.0
    return float(np.sqrt(((present - present.mean(axis=0)) ** 2).sum(axis=1).mean()))


def similarity_fit(source: np.ndarray, target: np.ndarray) -> Similarity | None:
    """The least-squares similarity mapping ``source`` onto ``target`` (Procrustes).

    Args:
        source: ``(P, 2)`` points; NaN rows (in either set) are left out.
        target: ``(P, 2)`` points, same order.

    Returns:
        The fit, or None with fewer than three shared points or a source without extent.
    """
    both = np.isfinite(source).all(axis=1) & np.isfinite(target).all(axis=1)
    if both.sum() < 3:
        return None
    src, dst = np.asarray(source, np.float64)[both], np.asarray(target, np.float64)[both]
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    # Points as complex numbers: scale and rotation are one complex factor, found in closed form.
    zs = (src[:, 0] - src_mean[0]) + 1j * (src[:, 1] - src_mean[1])
    zt = (dst[:, 0] - dst_mean[0]) + 1j * (dst[:, 1] - dst_mean[1])
    power = float((np.abs(zs) ** 2).sum())
    if not power > 0:
        return None
    factor = complex((np.conj(zs) * zt).sum() / power)
    residual = float(np.sqrt((np.abs(factor * zs - zt) ** 2).mean()))
    scale, angle = abs(factor), float(np.angle(factor))
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    shift = dst_mean - np.array([cos * src_mean[0] - sin * src_mean[1],
                                 sin * src_mean[0] + cos * src_mean[1]])  # fmt: skip
    return Similarity(scale, angle, shift, residual, float(np.sqrt(power / len(zs))))


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
