"""A fake predictor and synthetic clips for the video tests: tracking is tested in milliseconds,
against faces whose true keypoints are known in every frame.

Each frame is a gray image that carries its own index in its first two pixels, so the fake knows
which frame it is looking at whatever path the frame took (a list, PNG files). The fake behaves
like a keypoint network in the ways tracking depends on: it finds the face only where the crop it
is given frames the face about as at detection, and on a crop without a face its points collapse
towards the crop's centre (what a soft-argmax does on a featureless heatmap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import ClassVar

import numpy as np

from facekeys.data.crop_geometry import FaceSquare
from tests.conftest import face_points_68

# The detector's framing: the network's square is this many detector-box sides, centred.
FRAMING_SIDE = 1.6


def clip_face(
    frames: int, size=(240, 320), speed=1.5, turn_deg=20.0, grow=(1.0, 1.0), shift=(0.0, 0.0)
):
    """True keypoints ``(frames, 68, 2)`` of one face moving right, turning and scaling (and
    growing from ``grow[0]`` to ``grow[1]`` times its size), shifted by ``shift``."""
    height = size[0]
    shape = face_points_68(60, 60) - 30.0  # about a 36 px face, centred on 0
    points = []
    for t in range(frames):
        angle = np.deg2rad(turn_deg * np.sin(t / 9.0))
        scale = (1.0 + 0.2 * np.sin(t / 13.0)) * np.interp(t, [0, frames - 1], grow)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centre = np.array([60.0 + speed * t, height / 2 + 20 * np.sin(t / 11.0)])
        points.append(shape @ rot.T + centre + np.asarray(shift))
    return np.array(points)


def encode_frame(index: int, faces: np.ndarray, size=(240, 320)) -> np.ndarray:
    """A gray frame that carries ``index``, with each face of ``faces`` ``(F, 68, 2)`` drawn as
    bright dots on its points; random pixels where there is no face (it is gone)."""
    import cv2

    rng = np.random.default_rng(index)
    if len(faces):
        image = np.full(size, 90, np.uint8)
        for face in faces:
            for x, y in face:
                cv2.circle(image, (round(x), round(y)), 2, 230, -1)
    else:
        image = rng.integers(0, 255, size, np.uint8)
    image[0, 0], image[0, 1] = index % 256, index // 256
    return image


def frame_index(image: np.ndarray) -> int:
    gray = image if image.ndim == 2 else image[..., 0]
    return int(gray[0, 0]) + 256 * int(gray[0, 1])


class FakeFraming:
    """Stands in for ``DetectorFraming``: the network's square around a detector box."""

    def frame_box(self, box):
        x, y, w, h = box
        side = FRAMING_SIDE * max(w, h)
        return (x + w / 2 - side / 2, y + h / 2 - side / 2, side, side)


def detector_box(points: np.ndarray):
    low, high = points.min(axis=0), points.max(axis=0)
    return (float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1]))


@dataclass
class FakePredictor:
    """Knows the true points of every frame (``truth[i]``: ``(faces, 68, 2)``, empty = none).

    Records the frames the detector ran on and every square ``predict`` was given.
    """

    truth: list[np.ndarray]
    noise_px: float = 0.3
    ghost: bool = False  # without a face, answer a face shape (as real networks do) not a collapse
    detector_frames: list[int] = field(default_factory=list)
    squares: list[tuple[int, tuple]] = field(default_factory=list)
    first = SimpleNamespace(color="gray")
    refine = None
    detector = FakeFraming()
    card: ClassVar[dict] = {
        "format": "youtube68",
        "keypoints": {"names": [str(i) for i in range(68)]},
    }
    label_pixel_offset = 0.0
    keypoint_names: ClassVar[list[str]] = [f"p{i}" for i in range(68)]  # the iBUG 68 layout

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(7)

    def require_detector(self):
        return self.detector

    def predict_faces(self, image):
        index = frame_index(image)
        self.detector_frames.append(index)
        faces = sorted(self.truth[index], key=lambda p: -np.ptp(p[:, 0]))  # largest first
        boxes = [detector_box(p) for p in faces]
        return boxes, np.array([p + self.rng.normal(0, self.noise_px, p.shape) for p in faces])

    def find_faces(self, image, detector="auto"):
        """The detector: each true face, its box framed as trained (a level square)."""
        index = frame_index(image)
        self.detector_frames.append(index)
        faces = sorted(self.truth[index], key=lambda p: -np.ptp(p[:, 0]))  # largest first
        found = []
        for face in faces:
            square = FaceSquare.from_box(self.detector.frame_box(detector_box(face)))
            found.append(SimpleNamespace(box=detector_box(face), score=1.0, square=square))
        return found

    def predict_squares(self, image, squares):
        """Keypoints at a detection (not recorded in ``squares``: those are the tracked ones)."""
        index = frame_index(image)
        return np.array([self._points_in(index, s.level_box) for s in squares]).reshape(-1, 68, 2)

    def predict(self, images, boxes):
        out = []
        for image, box in zip(images, boxes, strict=True):
            index = frame_index(image)
            square = box.level_box if isinstance(box, FaceSquare) else box
            self.squares.append((index, square))
            out.append(self._points_in(index, square))
        return np.array(out)

    def _points_in(self, index: int, square) -> np.ndarray:
        x, y, side, _ = square
        centre = np.array([x + side / 2, y + side / 2])
        for face in self.truth[index]:
            box = detector_box(face)
            framed = FRAMING_SIDE * max(box[2], box[3])
            off = np.linalg.norm(face.mean(axis=0) - centre)
            if off < 0.2 * side and 0.7 < side / framed < 1.4:  # framed about as trained
                return face + self.rng.normal(0, self.noise_px, face.shape)
        if self.ghost:  # the first frame's face, placed and sized as the crop frames a face
            shape = self.truth[0][0] - self.truth[0][0].mean(axis=0)
            size = FRAMING_SIDE * np.ptp(self.truth[0][0], axis=0).max()
            return centre + shape * side / size + self.rng.normal(0, self.noise_px, (68, 2))
        # No face framed: the points collapse near the crop's centre.
        return centre + self.rng.normal(0, 0.03 * side, (68, 2))


def frames_of(truth: list[np.ndarray], size=(240, 320)) -> list[np.ndarray]:
    """The encoded frames of a clip; frames without a face are noise."""
    return [encode_frame(i, t, size) for i, t in enumerate(truth)]
