"""Face detection on real faces: the calibrated framing puts a face found in a larger photo where
the model's training crops had it, and group photos give one box per face."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from facekeys.augment.settings import AugmentSettings
from facekeys.inference.detector_calibration import calibrate_detector as _calibrate_detector
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
