"""The least-squares similarity (scale, turn, shift) between two sets of points: how YuNet's
five landmarks sit on the template, how a tracked face moved between frames, where an overlay's
anchors land on a face."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Similarity:
    """``target ~ factor * source + offset`` with points as complex numbers ``x + iy``.

    Attributes:
        factor: Scale and rotation as one complex number.
        offset: Translation, complex.
        residual: Root mean square distance between the mapped source and the target, in the
            target's unit (pixels).
        source_spread: Root mean square distance of the source points from their centroid.
    """

    factor: complex
    offset: complex
    residual: float
    source_spread: float

    @property
    def scale(self) -> float:
        """Size of the target over the size of the source."""
        return abs(self.factor)

    @property
    def angle(self) -> float:
        """Rotation, radians (image axes: y down, so positive turns clockwise on screen)."""
        return float(np.angle(self.factor))

    @property
    def shift(self) -> np.ndarray:
        """Translation ``(2,)``."""
        return np.array([self.offset.real, self.offset.imag])

    @property
    def matrix(self) -> np.ndarray:
        """The ``2x3`` affine matrix of the map (for ``cv2.warpAffine``)."""
        a, b = self.factor, self.offset
        return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], np.float64)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Maps ``(..., 2)`` points of the source's frame into the target's."""
        return np.asarray(points, np.float64) @ self.matrix[:, :2].T + self.shift

    @property
    def relative_residual(self) -> float:
        """The residual as a fraction of the target face's size (its spread): 0 for the same
        shape, about 1 for points that have nothing to do with it."""
        return self.residual / max(self.scale * self.source_spread, 1e-9)


def similarity_fit(
    source: np.ndarray, target: np.ndarray, min_points: int = 3
) -> Similarity | None:
    """The least-squares similarity mapping ``source`` onto ``target`` (Procrustes); with two
    points it maps both exactly.

    Args:
        source: ``(P, 2)`` points; rows not finite in either set are left out.
        target: ``(P, 2)`` points, same order.
        min_points: Fewest shared points to fit (three give the fit a residual to judge by).

    Returns:
        The fit, or None with fewer than ``min_points`` (or two) shared points or a source
        without extent.
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    both = np.isfinite(source).all(axis=1) & np.isfinite(target).all(axis=1)
    if both.sum() < max(min_points, 2):
        return None
    z = source[both, 0] + 1j * source[both, 1]
    w = target[both, 0] + 1j * target[both, 1]
    zc, wc = z - z.mean(), w - w.mean()
    power = float((np.abs(zc) ** 2).sum())
    if not power > 0:
        return None
    # Scale and rotation are one complex factor, found in closed form.
    factor = complex((np.conj(zc) * wc).sum() / power)
    residual = float(np.sqrt((np.abs(factor * zc - wc) ** 2).mean()))
    offset = complex(w.mean() - factor * z.mean())
    return Similarity(factor, offset, residual, float(np.sqrt(power / len(z))))
