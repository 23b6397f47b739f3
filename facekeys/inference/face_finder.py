"""Faces in a photo, each with the square the first network should see: the detectors a model is
calibrated for (its crop policy), ``auto`` choosing among them, and one call that finds faces.

``yuface`` (YuNet, five landmarks) finds turned and small faces and turns each crop upright;
``haar`` (OpenCV) finds upright frontal faces only, its crops stay level. ``auto`` takes yuface
where the model carries its calibration and the library is installed, else haar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facekeys.data.crop_geometry import FaceSquare
from facekeys.errors import FacekeysError

Box = tuple[float, float, float, float]
#: What ``--detect`` accepts for photos.
DETECTORS = ("auto", "yuface", "haar")


@dataclass(frozen=True)
class FoundFace:
    """A detected face: the detector's box ``(x, y, w, h)``, its score (1.0 where the detector
    gives none) and the (possibly turned) square the first network sees."""

    box: Box
    score: float
    square: FaceSquare


def framings(policy: dict[str, Any]) -> dict[str, Any]:
    """The calibrated framings of a crop policy by detector name (``haar``, ``yuface``)."""
    from facekeys.inference.detectors import DetectorFraming
    from facekeys.inference.landmark_detector import LandmarkFraming

    found: dict[str, Any] = {}
    if policy.get("yuface"):
        found["yuface"] = LandmarkFraming.from_dict(policy["yuface"])
    if policy.get("detector"):
        found["haar"] = DetectorFraming.from_dict(policy["detector"])
    return found


def _yuface_installed() -> bool:
    try:
        import yuface  # noqa: F401
    except ImportError:
        return False
    return True


def choose_detector(policy: dict[str, Any], name: str) -> str:
    """The detector ``name`` stands for with this model (``auto``: yuface, else haar).

    Raises:
        FacekeysError: An unknown name, or a detector the model was not calibrated for.
    """
    if name not in DETECTORS:
        raise FacekeysError(f"--detect must be one of {', '.join(DETECTORS)}, not {name!r}")
    calibrated = framings(policy)
    if name == "auto":
        usable = [d for d in ("yuface", "haar") if d in calibrated]
        if "yuface" in usable and not _yuface_installed():
            usable.remove("yuface")
        if usable:
            return usable[0]
        name = "a face detector"
    elif name in calibrated:
        return name
    raise FacekeysError(
        f"the model has no calibration for {name} (crop_policy in its model.json: rerun the "
        "augment and train stages)"
        + (f"; it has one for {', '.join(sorted(calibrated))}" if calibrated else "")
    )


def find_faces(image: np.ndarray, policy: dict[str, Any], detector: str) -> list[FoundFace]:
    """Faces in ``image`` (largest first) found by ``detector`` (a name ``choose_detector``
    accepted for this policy), each with the square its framing gives (YuNet faces whose
    landmarks have no extent cannot place one and are left out)."""
    framing = framings(policy)[detector]
    if detector == "yuface":
        from facekeys.inference.landmark_detector import detect_landmarked

        faces = detect_landmarked(image, framing.settings)
        squares = [framing.face_square(face) for face in faces]
        return [
            FoundFace(face.box, face.score, square)
            for face, square in zip(faces, squares, strict=True)
            if square is not None
        ]
    from facekeys.inference.detectors import detect_faces

    return [
        FoundFace(box, 1.0, FaceSquare.from_box(framing.frame_box(box)))
        for box in detect_faces(image, framing.settings)
    ]
