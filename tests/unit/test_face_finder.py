"""Finding faces for photos: the five-landmark framing (turned faces get turned crops), the
choice among calibrated detectors, and the geometry of turned squares."""

from __future__ import annotations

import numpy as np
import pytest

from facekeys.data.crop_geometry import (
    FaceSquare,
    apply_to_points,
    face_square_matrix,
    keypoint_box,
    square_crop_matrix,
    upright_keypoint_square,
)
from facekeys.data.keypoint_formats import FORMATS, upright_angle
from facekeys.errors import FacekeysError
from facekeys.inference import face_finder
from facekeys.inference import landmark_detector as lm
from facekeys.inference.detectors import DetectorFraming, DetectorSettings
from facekeys.inference.landmark_detector import (
    TEMPLATE,
    LandmarkedFace,
    LandmarkFraming,
    YuFaceSettings,
    calibrate_landmarks,
)


def turned(points: np.ndarray, angle: float, scale: float, shift: tuple[float, float]):
    """``points`` turned by ``angle`` (image coordinates, y down), scaled, then shifted."""
    cos, sin = np.cos(angle), np.sin(angle)
    return scale * points @ np.array([[cos, sin], [-sin, cos]]) + shift


def test_a_turned_face_gets_a_square_turned_back_upright():
    framing = LandmarkFraming(YuFaceSettings(), 0.0, 1.0, 5.0, 50, 60, 0.2)
    upright = LandmarkedFace((0, 0, 1, 1), 0.9, turned(TEMPLATE, 0.0, 20.0, (100.0, 80.0)))
    square = framing.face_square(upright)
    assert square.angle == pytest.approx(0.0, abs=1e-12)
    assert (square.centre_x, square.centre_y, square.side) == pytest.approx((100, 100, 100))
    # The same face turned by 25 degrees about its square's centre: the square turns with it and
    # its crop shows the face exactly as the upright one's did.
    angle = np.deg2rad(25)
    rolled_points = turned(upright.points - (100, 100), angle, 1.0, (100.0, 100.0))
    rolled = framing.face_square(LandmarkedFace((0, 0, 1, 1), 0.9, rolled_points))
    assert rolled.angle == pytest.approx(-angle)
    assert (rolled.centre_x, rolled.centre_y, rolled.side) == pytest.approx((100, 100, 100))
    in_crop = apply_to_points(face_square_matrix(rolled, 64), rolled_points)
    np.testing.assert_allclose(
        in_crop, apply_to_points(face_square_matrix(square, 64), upright.points), atol=1e-9
    )


def test_landmarks_without_extent_place_no_square_and_the_face_is_left_out(monkeypatch):
    framing = LandmarkFraming(YuFaceSettings(), 0.0, 1.0, 5.0, 50, 60, 0.2)
    flat = LandmarkedFace((0, 0, 10, 10), 0.9, np.full((5, 2), 7.0))
    good = LandmarkedFace((0, 0, 10, 10), 0.8, turned(TEMPLATE, 0.0, 20.0, (100.0, 80.0)))
    assert framing.face_square(flat) is None
    monkeypatch.setattr(lm, "detect_landmarked", lambda image, settings: [flat, good])
    policy = {"yuface": framing.to_dict()}
    found = face_finder.find_faces(np.zeros((200, 200, 3), np.uint8), policy, "yuface")
    assert [f.score for f in found] == [0.8]


def test_landmark_calibration_measures_the_square_in_the_face_frame(monkeypatch):
    """Faces of different sizes and turns, each in a known trained square: the median framing
    recovers the square's place in the template frame."""
    rng = np.random.default_rng(0)
    samples, faces = [], {}
    for i in range(12):
        scale, angle = rng.uniform(10, 30), rng.uniform(-0.3, 0.3)
        centre = rng.uniform(50, 150, 2)
        points = turned(TEMPLATE, angle, scale, tuple(centre))
        # Trained square: centre 1 template unit below the eye midpoint, side 5 units.
        middle = turned(np.array([[0.0, 1.0]]), angle, scale, tuple(centre))[0] + 0.5
        side = 5.0 * scale
        square = (middle[0] - side / 2, middle[1] - side / 2, side, side)
        labels = np.array([points.min(axis=0), points.max(axis=0)])
        box = (*points.min(axis=0) - 5, *(points.max(axis=0) - points.min(axis=0) + 10))
        image = np.full((2, 2), i, np.uint8)
        faces[i] = [LandmarkedFace(tuple(box), 0.9, points)]
        samples.append((image, labels, square))
    monkeypatch.setattr(lm, "detect_landmarked", lambda image, settings: faces[image[0, 0]])
    framing = calibrate_landmarks(samples, YuFaceSettings(calibration_images=12))
    assert framing is not None and framing.calibrated_on == 12 == framing.searched
    assert (framing.centre_x, framing.centre_y, framing.side) == pytest.approx((0, 1, 5))
    assert LandmarkFraming.from_dict(framing.to_dict()) == framing
    monkeypatch.setattr(lm, "detect_landmarked", lambda image, settings: [])
    assert calibrate_landmarks(samples, YuFaceSettings(calibration_images=12)) is None


def test_yuface_settings_refuse_bad_values_in_one_line():
    assert YuFaceSettings.from_params(None) == YuFaceSettings()
    with pytest.raises(FacekeysError, match=r"augment\.yuface: unknown keys \['conf'\]"):
        YuFaceSettings.from_params({"conf": 0.5})
    with pytest.raises(FacekeysError, match=r"min_confidence 1\.5 outside"):
        YuFaceSettings.from_params({"min_confidence": 1.5})
    with pytest.raises(FacekeysError, match="wrong type"):
        YuFaceSettings.from_params({"min_size_px": "16"})


def _policy(haar: bool, yuface: bool) -> dict:
    haar_framing = DetectorFraming(DetectorSettings(), 0.0, 0.05, 2.3, 50, 50, 0.3)
    yu_framing = LandmarkFraming(YuFaceSettings(), 0.0, 1.0, 5.0, 50, 60, 0.2)
    return {
        "size": 64,
        "detector": haar_framing.to_dict() if haar else None,
        "yuface": yu_framing.to_dict() if yuface else None,
    }


def test_auto_takes_yuface_where_calibrated_else_haar(monkeypatch):
    assert face_finder.choose_detector(_policy(True, True), "auto") == "yuface"
    assert face_finder.choose_detector(_policy(True, False), "auto") == "haar"
    assert face_finder.choose_detector(_policy(True, True), "haar") == "haar"
    with pytest.raises(FacekeysError, match=r"no calibration for yuface.*; it has one for haar$"):
        face_finder.choose_detector(_policy(True, False), "yuface")
    with pytest.raises(FacekeysError, match="no calibration for a face detector"):
        face_finder.choose_detector(_policy(False, False), "auto")
    with pytest.raises(FacekeysError, match="--detect must be one of"):
        face_finder.choose_detector(_policy(True, True), "dlib")
    monkeypatch.setattr(face_finder, "_yuface_installed", lambda: False)
    assert face_finder.choose_detector(_policy(True, True), "auto") == "haar"


def test_a_level_face_square_crops_like_the_box_it_came_from():
    box = (10.3, 20.1, 50.0, 40.0)
    square = FaceSquare(10.3 + 25 - 0.5, 20.1 + 20 - 0.5, 50.0)
    np.testing.assert_allclose(
        face_square_matrix(square, 64, 0.1), square_crop_matrix(box, 64, 0.1), atol=1e-12
    )
    points = np.random.default_rng(1).normal(size=(68, 2)) * 20 + 100
    level = upright_keypoint_square(points, 0.0)
    np.testing.assert_allclose(
        face_square_matrix(level, 96, 0.15), square_crop_matrix(keypoint_box(points), 96, 0.15)
    )


def test_refinement_square_of_turned_points_sees_them_as_upright():
    points = np.random.default_rng(2).normal(size=(68, 2)) * 20 + 100
    angle = 0.5
    rolled = turned(points - 100, angle, 1.0, (100.0, 100.0))
    crop_of_upright = apply_to_points(
        face_square_matrix(upright_keypoint_square(points, 0.0), 96), points
    )
    crop_of_rolled = apply_to_points(
        face_square_matrix(upright_keypoint_square(rolled, -angle), 96), rolled
    )
    np.testing.assert_allclose(crop_of_rolled, crop_of_upright, atol=1e-9)


@pytest.mark.parametrize("fmt", ["youtube68", "kaggle15"])
def test_upright_angle_levels_the_eyes_of_both_layouts(fmt):
    names = FORMATS[fmt].point_names
    points = np.zeros((len(names), 2))
    if fmt == "youtube68":
        points[36:42], points[42:48] = (40.0, 50.0), (60.0, 50.0)
    else:  # the subject's right eye lies on the image's left
        points[names.index("right_eye_center")] = (40.0, 50.0)
        points[names.index("left_eye_center")] = (60.0, 50.0)
    assert upright_angle(points, names) == pytest.approx(0.0)
    rolled = turned(points - 50, 0.3, 1.0, (50.0, 50.0))
    assert upright_angle(rolled, names) == pytest.approx(-0.3)
    assert upright_angle(points[:5], [f"q{i}" for i in range(5)]) is None


FORK_AFTER_YUFACE = """
import multiprocessing, numpy as np, cv2
from facekeys.inference.landmark_detector import YuFaceSettings, detect_landmarked
detect_landmarked(np.random.default_rng(0).integers(0, 255, (720, 1280, 3), np.uint8),
                  YuFaceSettings())
def init():
    cv2.setNumThreads(1)  # what augment's workers do first
with multiprocessing.get_context("fork").Pool(2, init) as pool:
    print(sum(pool.map(abs, range(4))))
"""


def test_processes_forked_after_a_yuface_detection_do_not_hang():
    """The augment stage hung this way once (its refinement workers forked after yuface had
    resized on OpenCV's thread pool); the detection runs OpenCV on one thread."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FORK_AFTER_YUFACE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "6", done.stderr
