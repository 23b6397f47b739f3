"""Face detection with five landmarks (YuNet, through the ``yuface`` wheel), and the framing
that turns its landmarks into the first network's square crop, turned upright.

Why this detector: measured here (README, "Faces in the wild"), Haar finds almost every upright
face but only a third of faces turned by up to 25 degrees; YuNet finds nearly all of both, its
weights are compiled into a 0.5 MB BSD-licensed wheel (nothing downloaded at run time) and it
gives the eyes, the nose tip and the mouth corners. Those five points fix the face's position,
size and roll, so the crop can be turned upright for the networks, which mostly saw upright faces.

The framing is calibrated like Haar's (``facekeys.inference.detectors``), in a face frame instead
of box widths: a similarity transform maps the five detected points onto a fixed template
(``TEMPLATE``); the median position and side of the trained square in that frame, over training
images where the detector found the labelled face, is the framing. A photo's square is that
median mapped back through its own face's transform: rotation included.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from facekeys.data.crop_geometry import FaceSquare
from facekeys.data.point_similarity import similarity_fit
from facekeys.errors import FacekeysError

Box = tuple[float, float, float, float]

# Eyes, nose tip and mouth corners of an upright face, image-left first; eye distance 2. Only its
# shape matters (the calibration measures the framing in this frame), roughly that of adult faces.
TEMPLATE = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.1], [-0.8, 2.0], [0.8, 2.0]])
MIN_CALIBRATION_FACES = 10


@dataclass(frozen=True)
class YuFaceSettings:
    """The ``augment.yuface`` section of params.yaml.

    Attributes:
        min_confidence: Detections scored below this (0..1) are dropped.
        min_size_px: Faces with a smaller box side (original pixels) are dropped.
        max_side_px: Images are shrunk to this longer side first (YuNet is tuned for <= 960).
        calibration_images: Training images (a seeded sample) the framing is measured on.
        seed: Seed of that sample.
    """

    min_confidence: float = 0.6
    min_size_px: int = 16
    max_side_px: int = 960
    calibration_images: int = 400
    seed: int = 2026

    @classmethod
    def from_params(cls, section: dict[str, Any] | None) -> YuFaceSettings:
        """Reads ``augment.yuface``; FacekeysError naming unknown keys or bad values."""
        if section is not None and not isinstance(section, dict):
            raise FacekeysError("params.yaml: augment.yuface must be a mapping")
        section = dict(section or {})
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise FacekeysError(f"params.yaml: augment.yuface: unknown keys {sorted(unknown)}")
        wrong = [
            key
            for key, value in section.items()
            if isinstance(value, bool)
            or not isinstance(value, (int, float) if key == "min_confidence" else int)
        ]
        if wrong:
            raise FacekeysError(f"params.yaml: augment.yuface: wrong type for {sorted(wrong)}")
        settings = cls(**section)
        problems = []
        if not 0.0 < settings.min_confidence < 1.0:
            problems.append(f"min_confidence {settings.min_confidence} outside (0, 1)")
        if not 8 <= settings.min_size_px <= settings.max_side_px:
            problems.append(f"min_size_px {settings.min_size_px} outside 8..max_side_px")
        if settings.calibration_images < MIN_CALIBRATION_FACES:
            problems.append(f"calibration_images must be >= {MIN_CALIBRATION_FACES}")
        if problems:
            raise FacekeysError("params.yaml: augment.yuface: " + "; ".join(problems))
        return settings


@dataclass(frozen=True)
class LandmarkedFace:
    """One detection: box ``(x, y, w, h)``, score (0..1) and five points ``(5, 2)`` (image-left
    eye, image-right eye, nose tip, image-left and image-right mouth corner), pixel centres."""

    box: Box
    score: float
    points: np.ndarray = field(compare=False)


@functools.lru_cache(maxsize=1)
def _yuface() -> Any:
    import os

    # The wheel brings its own OpenMP runtime, which reads OMP_NUM_THREADS once, when it loads:
    # one thread, so that it does not fight torch and OpenCV for the cores (measured here: a
    # detection took 1 s instead of 0.15 s beside a busy torch).
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        from yuface import c_detect
    except ImportError as exc:
        raise FacekeysError(
            f"the yuface detector is not installed ({exc}): pip install yuface, or use haar"
        ) from None
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    return c_detect


def detect_landmarked(image: np.ndarray, settings: YuFaceSettings) -> list[LandmarkedFace]:
    """Faces in ``image`` (uint8/uint16 gray, BGR or BGRA), largest first."""
    import cv2

    # As for Haar (detectors.detect_faces): OpenCV's thread pool, once started, deadlocks
    # processes forked later that use OpenCV (augment's workers): one thread here.
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return _detect_landmarked(image, settings)
    finally:
        cv2.setNumThreads(previous)


def _detect_landmarked(image: np.ndarray, settings: YuFaceSettings) -> list[LandmarkedFace]:
    import cv2

    from facekeys.data.images import to_model_color

    rgb = to_model_color(image, "rgb")
    height, width = rgb.shape[:2]
    shrink = min(1.0, settings.max_side_px / max(height, width))
    if shrink < 1.0:
        size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    if min(rgb.shape[:2]) < 8:
        return []
    sx, sy = width / rgb.shape[1], height / rgb.shape[0]
    # The library wants BGR; int16 rows: score (0..100), x, y, w, h, five (x, y), one spare.
    rows = np.asarray(_yuface()(np.ascontiguousarray(rgb[..., ::-1]))).reshape(-1, 16)
    faces = []
    for row in rows.astype(np.float64):
        score, (x, y, w, h) = row[0] / 100.0, row[1:5]
        if score < settings.min_confidence or min(w * sx, h * sy) < settings.min_size_px:
            continue
        # Pixel centres of the shrunk image back to the original's.
        points = row[5:15].reshape(5, 2) * (sx, sy) + ((sx - 1.0) / 2.0, (sy - 1.0) / 2.0)
        faces.append(LandmarkedFace((x * sx, y * sy, w * sx, h * sy), float(score), points))
    return sorted(faces, key=lambda f: (-f.box[2] * f.box[3], f.box[1], f.box[0]))


@dataclass(frozen=True)
class LandmarkFraming:
    """Where the training square lies in the template frame of the detected face.

    Attributes:
        settings: The detector the framing was measured with (prediction uses the same).
        centre_x: Square centre, x, in template units (eye distance 2).
        centre_y: The same in y.
        side: Square side in template units.
        calibrated_on: Images the detector found the labelled face in.
        searched: Images searched.
        side_iqr: Spread (interquartile range) of the per-image side.
    """

    settings: YuFaceSettings
    centre_x: float
    centre_y: float
    side: float
    calibrated_on: int
    searched: int
    side_iqr: float

    def face_square(self, face: LandmarkedFace) -> FaceSquare | None:
        """The upright square the first network should see for ``face``; None when its
        landmarks have no extent (all on one spot, or not finite): they cannot place it."""
        fit = similarity_fit(face.points, TEMPLATE)
        if fit is None or fit.factor == 0:
            return None
        a, b = fit.factor, fit.offset
        centre = (complex(self.centre_x, self.centre_y) - b) / a
        # a turns image vectors into template ones: the crop turns the face by the same angle.
        return FaceSquare(centre.real, centre.imag, self.side / abs(a), float(np.angle(a)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "landmarks", **asdict(self), "settings": asdict(self.settings)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LandmarkFraming:
        """Reads a model card's framing; FacekeysError when malformed."""
        try:
            fields = {k: v for k, v in data.items() if k != "kind"}
            return cls(**{**fields, "settings": YuFaceSettings(**data["settings"])})
        except (TypeError, KeyError) as exc:
            raise FacekeysError(
                f"model card: crop_policy.detectors.yuface is malformed ({exc})"
            ) from None


def calibrate_landmarks(samples: Any, settings: YuFaceSettings) -> LandmarkFraming | None:
    """Measures the framing on ``(image, labelled points, trained square (x, y, side, side))``
    samples; None when the detector found fewer than ``MIN_CALIBRATION_FACES`` labelled faces."""
    from facekeys.inference.detectors import matching_face

    measured, searched = [], 0
    for image, points, (x, y, side, _) in samples:
        searched += 1
        faces = detect_landmarked(image, settings)
        box = matching_face([f.box for f in faces], points)
        if box is None:
            continue
        face = next(f for f in faces if f.box == box)
        fit = similarity_fit(face.points, TEMPLATE)
        if fit is None:
            continue
        a, b = fit.factor, fit.offset
        # The square's centre in pixel-centre coordinates (its edges lie half a pixel outside).
        centre = a * complex(x + side / 2.0 - 0.5, y + side / 2.0 - 0.5) + b
        measured.append((centre.real, centre.imag, abs(a) * side))
    if len(measured) < MIN_CALIBRATION_FACES:
        return None
    values = np.array(measured)
    q1, q3 = np.percentile(values[:, 2], [25, 75])
    return LandmarkFraming(
        settings=settings,
        centre_x=float(np.median(values[:, 0])),
        centre_y=float(np.median(values[:, 1])),
        side=float(np.median(values[:, 2])),
        calibrated_on=len(measured),
        searched=searched,
        side_iqr=float(q3 - q1),
    )
