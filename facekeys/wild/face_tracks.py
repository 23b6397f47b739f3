"""Faces followed through a video: each frame's crop is placed by the last frame's keypoints, and
the detector runs only when needed.

At a detection the tracker keeps, per face, the detected keypoints (the face's *reference shape*)
and the square the first network was given (``KeypointPredictor.find_faces``: turned upright
where the detector gives eyes). In the next frame the similarity that maps the reference shape
onto the last keypoints (``point_similarity``) carries that square along: it moves, grows and turns
with the face, so the first network sees the face framed and turned as at detection, without a
detector. The detector runs on the first frame, when
``detect_every`` frames have passed since its last run, whenever a face is lost, and on every
frame while no face is followed.

The face-presence check (why this one): the networks return coordinates (soft-argmax), not
heatmaps, so there is no peak strength to read, and a refinement network is optional. The points
alone do not tell either: measured with a youtube-faces-68 heatmap model, on background, noise or
a flat crop the network still answers a face-shaped set of points at about the face's size (their
shape residual, below, overlaps that of real frames). So the check looks at the pixels under the
points (``face_looks``): the gray patch inside the face's keypoint box, carried into the new frame
by the similarity of the points, must correlate at least ``min_likeness`` with the patch at
detection or the one of the last frame (the latter follows slow changes of pose and light). On
the same model real faces in synthetic clips scored a median 0.94 (2 % of frames below 0.3),
background, noise and flat crops at most 0.25. Two cheap geometric guards come with it: the
shape residual of the fit beyond ``max_shape_residual`` of the face's size (points that are no
face at all) and a size change beyond ``max_scale_step`` in one frame; and a square whose centre
leaves the frame ends the face too. Costs one fit and one 24x24 warp per face and frame,
independent of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facekeys.data.crop_geometry import FaceSquare
from facekeys.data.point_similarity import Similarity, similarity_fit
from facekeys.wild.face_looks import face_patch, likeness
from facekeys.wild.face_shapes import Box, box_centre, box_iou, spread, square_at
from facekeys.wild.one_euro import OneEuroFilter, OneEuroSettings


@dataclass(frozen=True)
class TrackerSettings:
    """How faces are followed.

    Attributes:
        detect_every: The detector runs again when this many frames have passed since its last
            run (1: on every frame, no tracking).
        max_faces: Faces followed at most (the largest detections first).
        min_likeness: Presence check: least correlation of the face's patch with its patch at
            detection or in the last frame.
        max_shape_residual: Presence check: largest residual of the reference shape's fit onto
            new points, as a fraction of the face's size (spread of its points).
        max_scale_step: Presence check: largest factor by which a face's size may change from
            one frame to the next.
        match_iou: A detection continues a face whose square it overlaps at least this much.
        smoothing: One Euro settings for the points written and drawn; None: raw points.
    """

    detect_every: int = 30
    max_faces: int = 4
    min_likeness: float = 0.3
    max_shape_residual: float = 0.4
    max_scale_step: float = 1.5
    match_iou: float = 0.3
    smoothing: OneEuroSettings | None = field(default_factory=OneEuroSettings)

    def check(self) -> None:
        """Raises ValueError naming a setting out of range."""
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, not {self.detect_every}")
        if self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, not {self.max_faces}")
        if not -1 <= self.min_likeness <= 1:
            raise ValueError(f"min_likeness must lie in [-1, 1], not {self.min_likeness}")
        if not self.max_shape_residual > 0:
            raise ValueError(f"max_shape_residual must be > 0, not {self.max_shape_residual}")
        if not self.max_scale_step > 1:
            raise ValueError(f"max_scale_step must be > 1, not {self.max_scale_step}")
        if not 0 < self.match_iou <= 1:
            raise ValueError(f"match_iou must lie in (0, 1], not {self.match_iou}")
        if self.smoothing is not None:
            self.smoothing.check()


@dataclass
class Detection:
    """A face the detector found: the first network's square (level box), the keypoints
    predicted in it, and the angle its crop was turned by (``FaceSquare.angle``)."""

    square: Box
    points: np.ndarray
    angle: float = 0.0


@dataclass
class TrackedFace:
    """One face in one frame, as written and drawn.

    Attributes:
        face: The face's number, kept while it is followed (and when found again where lost).
        points: Smoothed keypoints ``(P, 2)``, pixel centres of the frame.
        square: The square the first network was given, ``(x, y, side, side)``.
        detected: Whether the keypoints come from a detection in this frame.
    """

    face: int
    points: np.ndarray
    square: Box
    detected: bool


class FaceTrack:
    """One followed face: its reference (from its last detection) and its last keypoints."""

    def __init__(
        self, face: int, detection: Detection, image: np.ndarray, smoothing: OneEuroSettings | None
    ) -> None:
        self.face = face
        self.filter = OneEuroFilter(smoothing) if smoothing is not None else None
        self.redetect(detection, image)

    def redetect(self, detection: Detection, image: np.ndarray) -> None:
        """A fresh reference: the detected keypoints, the square they were predicted in and the
        face's look in ``image`` (the frame in the networks' colour)."""
        self.reference = np.asarray(detection.points, np.float64)
        self.look = self.last_look = face_patch(image, self.reference, None)
        # The square's centre in pixel-centre coordinates, like the points (see crop_geometry).
        self.reference_centre = box_centre(detection.square) - 0.5
        self.reference_side = float(detection.square[2])
        self.points = self.reference.copy()
        self.square = detection.square
        # The crop stays turned as the face was at detection, plus the turn since then.
        self.reference_angle = self.angle = detection.angle
        self.scale = 1.0
        self.detected = True

    def follow(self, points: np.ndarray, image: np.ndarray, settings: TrackerSettings) -> bool:
        """Takes the keypoints predicted in the square placed from the last frame.

        Returns:
            Whether the presence check passed; if not, the track keeps its last state.
        """
        fit = similarity_fit(self.reference, points)
        if not self.present(fit, image.shape, settings):
            return False
        look = face_patch(image, self.reference, fit)
        if max(likeness(look, self.look), likeness(look, self.last_look)) < settings.min_likeness:
            return False
        self.last_look = look
        self.points = np.asarray(points, np.float64)
        self.scale, self.detected = fit.scale, False
        self.square = self.next_square(fit)
        # fit.angle turns the reference face into the current one; the crop turns it back.
        self.angle = self.reference_angle - fit.angle
        return True

    def present(self, fit: Similarity | None, frame_shape, settings: TrackerSettings) -> bool:
        """The geometric part of the face-presence check (module docstring)."""
        if (
            fit is None
            or not np.isfinite(fit.residual)
            or fit.relative_residual > (settings.max_shape_residual)
        ):
            return False
        step = fit.scale / self.scale
        if not 1.0 / settings.max_scale_step <= step <= settings.max_scale_step:
            return False
        x, y = self.next_square(fit)[:2]
        side = self.reference_side * fit.scale
        height, width = frame_shape[:2]
        return 0 <= x + side / 2 <= width and 0 <= y + side / 2 <= height

    def next_square(self, fit: Similarity) -> Box:
        """The detection's square carried by ``fit`` (reference shape -> current points)."""
        centre = fit.apply(self.reference_centre) + 0.5
        return square_at(centre, self.reference_side * fit.scale)

    def smooth(self, time_s: float, restart: bool = False) -> np.ndarray:
        """The points to show at ``time_s``: One Euro filtered, unless smoothing is off."""
        if self.filter is None:
            return self.points.copy()
        if restart:
            self.filter.reset()
        return self.filter(self.points, time_s, scale=max(spread(self.points), 1.0))


class FaceTracker:
    """Follows the faces of consecutive frames with one predictor (``KeypointPredictor``, or any
    object with its ``find_faces``, ``predict_squares``, ``predict``, ``first`` and ``refine``).

    Counters for the summary: ``frames``, ``detector_runs``, ``losses`` (faces that failed the
    presence check) and ``faces`` (face numbers handed out).
    """

    def __init__(self, predictor: Any, settings: TrackerSettings | None = None) -> None:
        self.predictor = predictor
        self.settings = settings or TrackerSettings()
        self.settings.check()
        self.tracks: list[FaceTrack] = []
        self.frames = self.detector_runs = self.losses = self.faces = 0
        self._last_detection = -1

    def step(self, frame: np.ndarray, time_s: float) -> list[TrackedFace]:
        """Keypoints of every followed face in the next frame (decoded, as OpenCV reads it)."""
        index, self.frames = self.frames, self.frames + 1
        image = self._model_image(frame)
        due = not self.tracks or index - self._last_detection >= self.settings.detect_every
        detections = self._detect(image, index) if due else None
        pending, lost = self._follow(image, detections or [])
        if lost and detections is None:  # a face is lost: look for it now, in this frame
            pending = self._detect(image, index)
        restarted = self._adopt(pending, lost, image)
        self._drop_duplicates()
        return [
            TrackedFace(t.face, t.smooth(time_s, t in restarted), t.square, t.detected)
            for t in self.tracks
        ]

    def _model_image(self, frame: np.ndarray) -> np.ndarray:
        """The frame in the networks' colour, converted once (as ``predict_faces`` does) rather
        than once per face and network."""
        from facekeys.data.images import to_model_color

        first, refine = self.predictor.first, self.predictor.refine
        if refine is None or refine.color == first.color:
            return to_model_color(frame, first.color)
        return frame

    def _detect(self, image: np.ndarray, index: int) -> list[Detection]:
        self.detector_runs += 1
        self._last_detection = index
        faces = self.predictor.find_faces(image)
        if not faces:
            return []
        squares = [face.square for face in faces]
        points = self.predictor.predict_squares(image, squares)
        return [Detection(s.level_box, p, s.angle) for s, p in zip(squares, points, strict=True)]

    def _follow(
        self, image: np.ndarray, detections: list[Detection]
    ) -> tuple[list[Detection], list[FaceTrack]]:
        """Continues every track, by a matching detection or by its own square; returns the
        detections no track took and the tracks that failed the presence check."""
        pending = list(detections)
        followed, lost, unmatched = [], [], []
        for track in self.tracks:
            match = self._best_match(track.square, pending)
            if match is not None:
                pending.remove(match)
                track.redetect(match, image)
                followed.append(track)
            else:
                unmatched.append(track)
        if unmatched:
            squares = [FaceSquare.from_box(t.square, t.angle) for t in unmatched]
            predicted = self.predictor.predict([image] * len(unmatched), squares)
            for track, points in zip(unmatched, predicted, strict=True):
                if track.follow(points, image, self.settings):
                    followed.append(track)
                else:
                    lost.append(track)
        self.losses += len(lost)
        self.tracks = sorted(followed, key=lambda t: t.face)
        return pending, lost

    def _best_match(self, square: Box, detections: list[Detection]) -> Detection | None:
        best, best_iou = None, self.settings.match_iou
        for detection in detections:
            overlap = box_iou(square, detection.square)
            if overlap >= best_iou:
                best, best_iou = detection, overlap
        return best

    def _adopt(
        self, detections: list[Detection], lost: list[FaceTrack], image: np.ndarray
    ) -> list[FaceTrack]:
        """Detections not held by a followed face: a lost face found again (same number) or a new
        face, up to ``max_faces``. Returns the tracks whose smoothing restarts (a jump)."""
        restarted = []
        for detection in detections:
            if any(box_iou(t.square, detection.square) >= self.settings.match_iou
                   for t in self.tracks):  # fmt: skip
                continue
            if len(self.tracks) >= self.settings.max_faces:
                break
            track = next((t for t in lost if box_iou(t.square, detection.square) > 0), None)
            if track is not None:
                lost.remove(track)
                track.redetect(detection, image)
            else:
                track = FaceTrack(self.faces, detection, image, self.settings.smoothing)
                self.faces += 1
            self.tracks.append(track)
            restarted.append(track)
        self.tracks.sort(key=lambda t: t.face)
        return restarted

    def _drop_duplicates(self) -> None:
        """Two tracks that drifted onto one face: the older number stays."""
        kept: list[FaceTrack] = []
        for track in self.tracks:  # sorted by face number: older first
            if all(box_iou(track.square, k.square) <= 0.5 for k in kept):
                kept.append(track)
        self.tracks = kept
