"""A face's look: a small gray patch of the face, aligned by its keypoints, and how alike two
such patches are (normalised cross-correlation).

Used by the face-presence check (``face_tracks``): on a crop without a face, a keypoint network
still answers face-shaped points (measured with a youtube-faces-68 heatmap model: on background,
noise and flat crops its points fit the last face's shape about as well as real frames do), so the
points alone cannot tell. The pixels under them can: where the points say the face is, the patch
either still looks like the face or it does not.
"""

from __future__ import annotations

import numpy as np

from facekeys.data.point_similarity import Similarity

PATCH = 24  # px a side: enough for eyes, nose and mouth; cheap (one small warp per face)


def face_patch(image: np.ndarray, reference: np.ndarray, fit: Similarity | None) -> np.ndarray:
    """The zero-mean, unit-norm gray patch of the keypoint box of ``reference`` (the points at
    detection), carried into this frame by ``fit`` (reference -> current points; None: the
    reference frame itself).

    Args:
        image: The frame, gray ``HxW`` or colour ``HxWx3`` uint8.
        reference: ``(P, 2)`` points, pixel centres.
        fit: The similarity from the reference points to this frame's points.

    Returns:
        ``(PATCH, PATCH)`` float32; all zeros where the patch is flat.
    """
    import cv2

    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    present = reference[np.isfinite(reference).all(axis=1)]
    low, high = present.min(axis=0), present.max(axis=0)
    side, centre = float((high - low).max()), (low + high) / 2.0
    step = side / PATCH
    # Patch pixel (u, v) -> reference frame pixel, then -> this frame by the similarity.
    to_reference = np.array([[step, 0.0, centre[0] - side / 2 + step / 2],
                             [0.0, step, centre[1] - side / 2 + step / 2],
                             [0.0, 0.0, 1.0]])  # fmt: skip
    if fit is not None:
        cos, sin = fit.scale * np.cos(fit.angle), fit.scale * np.sin(fit.angle)
        carry = np.array([[cos, -sin, fit.shift[0]], [sin, cos, fit.shift[1]], [0.0, 0.0, 1.0]])
        to_reference = carry @ to_reference
    patch = cv2.warpAffine(gray, to_reference[:2], (PATCH, PATCH),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE).astype(np.float32)  # fmt: skip
    patch -= patch.mean()
    norm = float(np.linalg.norm(patch))
    return patch / norm if norm > 1e-3 else np.zeros_like(patch)


def likeness(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two ``face_patch`` results: 1 alike, about 0 unrelated,
    0 where either is flat."""
    return float((a * b).sum())
