"""Face detection on real faces: the calibrated framing puts a face found in a larger photo where
the model's training crops had it, turned faces are found by yuface (not by Haar) and framed
upright, and group photos give one box per face."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from facekeys.augment.settings import AugmentSettings
from facekeys.inference.detector_calibration import calibrate_detector as _calibrate_detector
from facekeys.inference.detector_calibration import calibrate_yuface
from facekeys.inference.landmark_detector import LandmarkFraming, YuFaceSettings, detect_landmarked
from facekeys.data.labelled_splits import read_split
from facekeys.inference.detectors import DetectorFraming, DetectorSettings, detect_faces
from facekeys.data.images import load_image
from facekeys.data.keypoint_formats import FORMATS

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture
def youtube(shared_data):
    shared = shared_data / "youtube-faces-68"
    train = read_split(FORMATS["youtube68"], shared / "training_frames_keypoints.csv",
                       str(shared / "training"))  # fmt: skip
    test = read_split(FORMATS["youtube68"], shared / "test_frames_keypoints.csv",
                      str(shared / "test"))  # fmt: skip
    return train, test


def test_calibration_on_real_faces_finds_most_faces(youtube):
    train, _ = youtube
    lines: list[str] = []
    data = _calibrate_detector(
        train, np.arange(len(train.names)), AugmentSettings(label_pixel_offset=1.0),
        DetectorSettings(calibration_images=60), lines.append,
    )  # fmt: skip
    assert data is not None, lines
    framing = DetectorFraming.from_dict(data)
    assert framing.searched == 60 and framing.calibrated_on >= 48  # Haar misses few face crops
    # The data set's crops are about 2-3 Haar boxes wide (a loose crop around the head).
    assert 1.5 < framing.side < 3.5 and abs(framing.centre_dx) < 0.1
    assert "found the labelled face in" in lines[0]


def test_face_pasted_into_a_photo_is_framed_like_its_crop(youtube):
    """Each test crop pasted at an offset into a larger canvas: the calibrated frame of the
    detected face lands on the crop's own square (where the model was trained to look)."""
    train, test = youtube
    framing = DetectorFraming.from_dict(
        _calibrate_detector(train, np.arange(len(train.names)),
                            AugmentSettings(label_pixel_offset=1.0),
                            DetectorSettings(calibration_images=60), lambda line: None)
    )  # fmt: skip
    detected, framed = 0, 0
    for name in test.names[:20]:
        crop = load_image(test.images_dir, name)[..., :3]
        h, w = crop.shape[:2]
        canvas = np.full((3 * h, 3 * w, 3), 120, np.uint8)
        x0, y0 = int(0.8 * w), int(1.3 * h)
        canvas[y0 : y0 + h, x0 : x0 + w] = crop
        boxes = detect_faces(canvas, framing.settings)
        if not boxes:
            continue
        detected += 1
        fx, fy, fside, _ = framing.frame_box(boxes[0])
        side = max(w, h)
        centre_error = np.hypot(fx + fside / 2 - (x0 + w / 2), fy + fside / 2 - (y0 + h / 2))
        # Within the first network's training jitter (shift 8 %, scale 0.85-1.15) plus the data
        # set's own spread of framings.
        framed += centre_error < 0.15 * side and 0.75 < fside / side < 1.33
    assert detected >= 12 and framed == detected, (detected, framed)


def test_group_photo_gives_one_box_per_face(shared_data):
    photo = load_image(shared_data / "sample-images", "the_beatles.jpg")
    boxes = detect_faces(photo, DetectorSettings())
    assert len(boxes) >= 4  # four band members, all facing the camera
    areas = [w * h for _, _, w, h in boxes]
    assert areas == sorted(areas, reverse=True)  # largest first
    for (ax, ay, aw, ah), (bx, by, bw, bh) in itertools.combinations(boxes[:4], 2):
        assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay  # no overlap
    # Detection on the shrunk copy reports boxes in the original photo's pixels.
    assert max(x + w for x, _, w, _ in boxes) <= photo.shape[1]
    assert max(x + w for x, _, w, _ in boxes) > 1024


def test_grayscale_and_rgba_photos_are_detected_alike(shared_data):
    photo = load_image(shared_data / "sample-images", "obamas.jpg")
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    rgba = cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA)
    settings = DetectorSettings()
    assert detect_faces(gray, settings) == detect_faces(rgba, settings) == detect_faces(
        photo, settings
    )


def _pasted(crop: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """``crop`` turned by ``angle_deg`` about its centre and pasted off-centre into a 3x gray
    canvas; returns the canvas and the map from crop pixels to canvas pixels (2x3)."""
    h, w = crop.shape[:2]
    canvas = np.full((3 * h, 3 * w, 3), 120, np.uint8)
    centre = (0.8 * w + w / 2, 1.3 * h + h / 2)
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, 1.0)
    matrix[:, 2] += np.array(centre) - ((w - 1) / 2, (h - 1) / 2)
    cv2.warpAffine(crop, matrix, (3 * w, 3 * h), canvas, borderMode=cv2.BORDER_TRANSPARENT)
    return canvas, matrix


def test_turned_faces_are_found_by_yuface_not_by_haar(youtube):
    """Test crops turned by 25 degrees in a larger canvas: yuface finds nearly all and its square
    lands on the crop's own square; Haar finds few. (YuNet's eye points lean towards level on
    small turned faces, so its angle only starts the turn: the refinement crop is levelled by
    the first network's eyes, see tests/model.)"""
    train, test = youtube
    data = calibrate_yuface(train, np.arange(len(train.names)),
                            AugmentSettings(label_pixel_offset=1.0),
                            YuFaceSettings(calibration_images=60), lambda line: None)  # fmt: skip
    assert data is not None
    framing = LandmarkFraming.from_dict(data)
    assert framing.calibrated_on >= 57  # YuNet misses almost no face crop
    found_yu, found_haar, framed = 0, 0, 0
    for i, name in enumerate(test.names[:20]):
        crop = load_image(test.images_dir, name)[..., :3]
        canvas, matrix = _pasted(crop, 25.0 if i % 2 else -25.0)
        found_haar += bool(detect_faces(canvas, DetectorSettings()))
        faces = detect_landmarked(canvas, framing.settings)
        if not faces:
            continue
        found_yu += 1
        square = framing.face_square(faces[0])
        h, w = crop.shape[:2]
        centre = matrix @ ((w - 1) / 2, (h - 1) / 2, 1.0)
        side = max(w, h)
        framed += (
            np.hypot(square.centre_x - centre[0], square.centre_y - centre[1]) < 0.15 * side
            and 0.7 < square.side / side < 1.33
        )
    assert found_yu >= 19 and framed >= found_yu - 3, (found_yu, framed)
    assert found_haar <= 12, found_haar


def test_yuface_finds_every_face_of_the_group_photos(shared_data):
    for name, count in (("the_beatles.jpg", 4), ("obamas.jpg", 2)):
        photo = load_image(shared_data / "sample-images", name)
        faces = detect_landmarked(photo, YuFaceSettings())
        assert len(faces) == count, name
        # Boxes in the original photo's pixels, eyes inside their box.
        for face in faces:
            x, y, w, h = face.box
            assert x <= face.points[0, 0] < face.points[1, 0] <= x + w
            assert y <= face.points[:2, 1].mean() <= y + h
