"""Face detection for photos, and the calibration that ties a detector's boxes to the framing a
model was trained on.

The data sets' images are face crops, so the first network learnt one framing: the whole crop,
padded to a square. A Haar box is much tighter (brows to mouth) and sits higher on the face. The
calibration measures, on training images where the detector finds the labelled face, where that
square lies relative to the detector box (median centre shift and side, in box widths). It is
stored in the model's crop policy (``crop_policy.detector``), so a photo is cropped around each
detected face exactly as the training images were framed, whatever model is loaded.

Detection runs on a gray, histogram-equalised copy shrunk to ``max_side_px`` (Haar's cost grows
with the pixel count; faces smaller than ``min_size_px`` at that scale are not searched for).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from facekeys.data.images import to_model_color
from facekeys.errors import FacekeysError

Box = tuple[float, float, float, float]

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"
# Fewer calibrated images than this give a framing too noisy to trust.
MIN_CALIBRATION_FACES = 10


@dataclass(frozen=True)
class DetectorSettings:
    """The ``augment.detector`` section of params.yaml: how faces are found in photos.

    Attributes:
        cascade: File name of an OpenCV Haar cascade in ``cv2.data.haarcascades``.
        scale_factor: Step between searched face sizes (``detectMultiScale``).
        min_neighbors: Overlapping hits needed to keep a face; higher finds fewer false faces.
        min_size_px: Smallest face side searched, in pixels of the shrunk image.
        max_side_px: Images are shrunk to this longer side before detection.
        calibration_images: Training images (a seeded sample) the framing is measured on.
        seed: Seed of that sample.
    """

    cascade: str = DEFAULT_CASCADE
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size_px: int = 24
    max_side_px: int = 1024
    calibration_images: int = 400
    seed: int = 2026

    @classmethod
    def from_params(cls, section: dict[str, Any] | None) -> DetectorSettings:
        """Reads ``augment.detector``; raises FacekeysError naming unknown keys or bad values."""
        if section is not None and not isinstance(section, dict):
            raise FacekeysError("params.yaml: augment.detector must be a mapping")
        section = dict(section or {})
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise FacekeysError(f"params.yaml: augment.detector: unknown keys {sorted(unknown)}")
        kinds = {"cascade": str, "scale_factor": (int, float)}
        wrong = [
            key
            for key, value in section.items()
            if isinstance(value, bool)
            or not isinstance(value, kinds.get(key, int))  # the other keys are integers
        ]
        if wrong:
            raise FacekeysError(f"params.yaml: augment.detector: wrong type for {sorted(wrong)}")
        settings = cls(**section)
        problems = []
        if os.path.basename(settings.cascade) != settings.cascade:
            problems.append(f"cascade {settings.cascade!r} must be a file name, not a path")
        if not settings.scale_factor > 1.0:
            problems.append(f"scale_factor {settings.scale_factor} must be > 1")
        if settings.min_neighbors < 1:
            # 0 keeps every raw window hit: hundreds of boxes per photo.
            problems.append(f"min_neighbors {settings.min_neighbors} must be >= 1")
        if not 8 <= settings.min_size_px <= settings.max_side_px:
            problems.append(f"min_size_px {settings.min_size_px} outside 8..max_side_px")
        if settings.calibration_images < MIN_CALIBRATION_FACES:
            problems.append(f"calibration_images must be >= {MIN_CALIBRATION_FACES}")
        if problems:
            raise FacekeysError("params.yaml: augment.detector: " + "; ".join(problems))
        return settings


@functools.lru_cache(maxsize=4)
def _cascade(name: str) -> Any:
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        raise FacekeysError(
            f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 dropped them): install "
            "opencv-python-headless<5 (requirements/constraints.txt pins one)"
        )
    path = os.path.join(cv2.data.haarcascades, name)
    if os.path.basename(name) != name or not os.path.isfile(path):
        raise FacekeysError(f"Haar cascade {name!r} is not in {cv2.data.haarcascades}")
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise FacekeysError(f"{path}: OpenCV cannot load this cascade")
    return classifier


def detect_faces(image: np.ndarray, settings: DetectorSettings) -> list[Box]:
    """Face boxes ``(x, y, w, h)`` in ``image`` pixels, largest first.

    Args:
        image: Decoded uint8/uint16 image, gray, BGR or BGRA.
        settings: Detector settings (from the model's crop policy at prediction time).
    """
    import cv2

    # OpenCV's own thread pool, once started here, deadlocks processes forked later that call
    # cv2.setNumThreads (augment's workers do, after the calibration): detect on one thread.
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return _detect(image, settings)
    finally:
        cv2.setNumThreads(previous)


def _detect(image: np.ndarray, settings: DetectorSettings) -> list[Box]:
    import cv2

    gray = to_model_color(image, "gray")
    height, width = gray.shape
    shrink = min(1.0, settings.max_side_px / max(height, width))
    if shrink < 1.0:
        size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    if min(gray.shape) < settings.min_size_px:
        return []
    # The real factor per axis (the shrunk size is rounded).
    sx, sy = width / gray.shape[1], height / gray.shape[0]
    found = _cascade(settings.cascade).detectMultiScale(
        cv2.equalizeHist(gray),
        scaleFactor=settings.scale_factor,
        minNeighbors=settings.min_neighbors,
        minSize=(settings.min_size_px, settings.min_size_px),
    )
    boxes = [
        (float(x) * sx, float(y) * sy, float(w) * sx, float(h) * sy)
        for x, y, w, h in np.asarray(found).reshape(-1, 4)
    ]
    # Ties broken by position, so the face index does not depend on the detector's order.
    return sorted(boxes, key=lambda b: (-b[2] * b[3], b[1], b[0]))


@dataclass(frozen=True)
class DetectorFraming:
    """Where the training framing (a square) lies relative to a detector box, in box widths.

    Attributes:
        settings: The detector the framing was measured with (prediction must use the same).
        centre_dx: Square centre minus box centre, x, in box widths.
        centre_dy: The same in y.
        side: Square side / box width.
        calibrated_on: Images the detector found the labelled face in.
        searched: Images searched.
        side_iqr: Spread (interquartile range) of the per-image side ratio.
    """

    settings: DetectorSettings
    centre_dx: float
    centre_dy: float
    side: float
    calibrated_on: int
    searched: int
    side_iqr: float

    def frame_box(self, box: Box) -> Box:
        """The square ``(x, y, side, side)`` a detector ``box`` stands for."""
        x, y, w, h = box
        side = self.side * w
        cx = x + w / 2.0 + self.centre_dx * w
        cy = y + h / 2.0 + self.centre_dy * w
        return (cx - side / 2.0, cy - side / 2.0, side, side)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "settings": asdict(self.settings)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorFraming:
        """Reads ``crop_policy.detector`` of a model card; FacekeysError when malformed."""
        try:
            return cls(**{**data, "settings": DetectorSettings(**data["settings"])})
        except (TypeError, KeyError) as exc:
            raise FacekeysError(f"model card: crop_policy.detector is malformed ({exc})") from None


def matching_face(boxes: list[Box], points: np.ndarray) -> Box | None:
    """The detected box that holds the labelled face: it contains the centre of the labelled
    points' box and has the largest intersection over union with it. None when no box contains
    the centre."""
    present = points[~np.isnan(points).any(axis=1)]
    if len(present) < 2:
        return None
    low, high = present.min(axis=0), present.max(axis=0)
    centre = (low + high) / 2.0
    best, best_overlap = None, 0.0
    for box in boxes:
        x, y, w, h = box
        if not (x <= centre[0] <= x + w and y <= centre[1] <= y + h):
            continue
        ix = max(0.0, min(x + w, high[0]) - max(x, low[0]))
        iy = max(0.0, min(y + h, high[1]) - max(y, low[1]))
        union = w * h + float(np.prod(high - low)) - ix * iy
        overlap = ix * iy / max(union, 1e-9)
        if best is None or overlap > best_overlap:
            best, best_overlap = box, overlap
    return best


def calibrate(
    samples: Iterable[tuple[np.ndarray, np.ndarray, Box]], settings: DetectorSettings
) -> DetectorFraming | None:
    """Measures the framing on ``(image, points, trained square)`` samples.

    Args:
        samples: Decoded image, labelled points ``(P, 2)`` (pixel centres, NaN where missing)
            and the square ``(x, y, side, side)`` the model was trained to see for that image.
        settings: The detector.

    Returns:
        The median framing, or None when fewer than ``MIN_CALIBRATION_FACES`` faces were found.
    """
    ratios = []
    searched = 0
    for image, points, (sx, sy, side, _) in samples:
        searched += 1
        box = matching_face(detect_faces(image, settings), points)
        if box is None:
            continue
        x, y, w, h = box
        ratios.append(
            (
                (sx + side / 2.0 - (x + w / 2.0)) / w,
                (sy + side / 2.0 - (y + h / 2.0)) / w,
                side / w,
            )
        )
    if len(ratios) < MIN_CALIBRATION_FACES:
        return None
    values = np.array(ratios)
    q1, q3 = np.percentile(values[:, 2], [25, 75])
    return DetectorFraming(
        settings=settings,
        centre_dx=float(np.median(values[:, 0])),
        centre_dy=float(np.median(values[:, 1])),
        side=float(np.median(values[:, 2])),
        calibrated_on=len(ratios),
        searched=searched,
        side_iqr=float(q3 - q1),
    )
