"""Face detection settings and the calibration that maps detector boxes to a model's framing."""

from __future__ import annotations

import numpy as np
import pytest

from facekeys.data.crop_geometry import keypoint_box
from facekeys.errors import FacekeysError
from facekeys.inference import detectors as detect
from facekeys.inference.detectors import DetectorFraming, DetectorSettings, calibrate, matching_face


def test_detector_settings_refuse_bad_values_in_one_line():
    assert DetectorSettings.from_params(None) == DetectorSettings()
    with pytest.raises(FacekeysError, match=r"augment\.detector: unknown keys \['minsize'\]"):
        DetectorSettings.from_params({"minsize": 3})
    with pytest.raises(FacekeysError, match=r"must be a file name, not a path.*must be > 1"):
        DetectorSettings.from_params({"cascade": "../evil.xml", "scale_factor": 1.0})


def test_unknown_cascade_is_a_clear_error():
    with pytest.raises(FacekeysError, match=r"Haar cascade 'nope\.xml' is not in"):
        detect.detect_faces(np.zeros((64, 64), np.uint8), DetectorSettings(cascade="nope.xml"))


def test_no_search_below_the_smallest_face(monkeypatch):
    def no_cascade(name):
        raise AssertionError("the cascade must not run on an image smaller than min_size_px")

    monkeypatch.setattr(detect, "_cascade", no_cascade)
    tiny = np.zeros((20, 30), np.uint8)
    assert detect.detect_faces(tiny, DetectorSettings(min_size_px=24)) == []
    # A large photo is shrunk to max_side_px first: then 30 px at full size is 15 px.
    big = np.zeros((30, 4000), np.uint8)
    assert detect.detect_faces(big, DetectorSettings(min_size_px=24, max_side_px=2000)) == []


def test_wrong_types_in_params_are_one_line_errors():
    with pytest.raises(FacekeysError, match=r"wrong type for \['cascade', 'min_neighbors'\]"):
        DetectorSettings.from_params({"cascade": 5, "min_neighbors": "3"})
    with pytest.raises(FacekeysError, match="must be a mapping"):
        DetectorSettings.from_params(["haar"])
    with pytest.raises(FacekeysError, match=r"crop_policy\.detector is malformed"):
        DetectorFraming.from_dict({"settings": {}, "side": 2.0})


def test_detected_photo_is_cropped_exactly_like_its_training_image(tmp_path, monkeypatch):
    """Calibrated on wide images through the augment stage's own code, a detector box maps to
    the same model-input crop as the whole image under the crop policy (margin included)."""
    import cv2

    from facekeys.augment.settings import AugmentSettings
    from facekeys.data.crop_geometry import CropPolicy, square_crop_matrix, whole_image_matrix
    from facekeys.data.labelled_splits import SplitRows
    from facekeys.inference.detector_calibration import calibrate_detector as _calibrate_detector

    names, points, boxes = [], [], {}
    for k in range(12):
        w, h = 88 + 8 * k, (88 + 8 * k) * 3 // 4  # wide: the square pads top and bottom
        box = (0.3 * w, 0.2 * h, 0.35 * w, 0.35 * w)
        image = np.full((h, w), k, np.uint8)
        cv2.imwrite(str(tmp_path / f"p{k}.png"), image)
        names.append(f"p{k}.png")
        boxes[k] = box
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        points.append([[cx - 5, cy - 5], [cx + 5, cy + 5]])
    rows = SplitRows(names, np.array(points, np.float32) + 1.0, images_dir=str(tmp_path))
    monkeypatch.setattr(detect, "detect_faces", lambda image, settings: [boxes[image[0, 0]]])
    settings = AugmentSettings(label_pixel_offset=1.0)
    data = _calibrate_detector(
        rows, np.arange(12), settings, DetectorSettings(calibration_images=12), lambda line: None
    )
    framing = DetectorFraming.from_dict(data)
    policy = CropPolicy(size=64, margin=0.1)
    for k in range(12):
        w, h = 88 + 8 * k, (88 + 8 * k) * 3 // 4
        expected = whole_image_matrix(w, h, policy)
        got = square_crop_matrix(framing.frame_box(boxes[k]), policy.size, policy.margin)
        assert np.allclose(got, expected, atol=1e-6), (k, got, expected)


def test_matching_face_is_the_box_around_the_labelled_points():
    points = np.array([[50.0, 60.0], [80.0, 60.0], [65.0, 90.0], [np.nan, np.nan]])
    boxes = [(0.0, 0.0, 40.0, 40.0), (40.0, 45.0, 50.0, 50.0), (60.0, 72.0, 8.0, 8.0)]
    # Both of the last two hold the centre (65, 75); the second overlaps the points' box more.
    assert matching_face(boxes, points) == boxes[1]
    assert matching_face([(0.0, 0.0, 10.0, 10.0)], points) is None


def test_calibration_recovers_the_framing_and_frame_box_applies_it(monkeypatch):
    """A detector whose box is the trained square shrunk 2.5x and shifted up by 0.1 of its width
    must calibrate to exactly that, and frame_box must map its boxes back to the squares."""
    rng = np.random.default_rng(0)
    samples, truth = [], {}
    for k in range(30):
        side = rng.uniform(80, 300)
        square = (rng.uniform(-20, 20), rng.uniform(-20, 20), side, side)
        w = side / 2.5
        cx, cy = square[0] + side / 2, square[1] + side / 2 - 0.1 * w
        box = (cx - w / 2, cy - w / 2, w, w)
        image = np.full((4, 4), k, np.uint8)  # the fake detector recognises images by value
        truth[k] = box
        points = np.array([[cx - w / 4, cy], [cx + w / 4, cy + w / 4]])
        samples.append((image, points, square))
    monkeypatch.setattr(
        detect, "detect_faces", lambda image, settings: [(0.0, 0.0, 1.0, 1.0), truth[image[0, 0]]]
    )
    framing = calibrate(samples, DetectorSettings())
    assert framing is not None
    assert framing.side == pytest.approx(2.5) and framing.side_iqr == pytest.approx(0, abs=1e-9)
    assert (framing.centre_dx, framing.centre_dy) == pytest.approx((0.0, 0.1))
    assert (framing.calibrated_on, framing.searched) == (30, 30)
    for _image, _points, square in samples[:5]:
        box = truth[_image[0, 0]]
        assert framing.frame_box(box) == pytest.approx(square)
    assert DetectorFraming.from_dict(framing.to_dict()) == framing


def test_calibration_with_too_few_faces_gives_none(monkeypatch):
    monkeypatch.setattr(detect, "detect_faces", lambda image, settings: [])
    samples = [(np.zeros((4, 4), np.uint8), np.ones((2, 2)), (0, 0, 4, 4))] * 20
    assert calibrate(samples, DetectorSettings()) is None


def test_keypoint_box_of_collapsed_points_still_has_a_size():
    box = keypoint_box(np.full((68, 2), 7.0))
    assert box == (7.0, 7.0, 1.0, 1.0)  # centred on the point (edge convention: +0.5)


FORK_AFTER_DETECTION = """
import multiprocessing, numpy as np, cv2
from facekeys.inference.detectors import DetectorSettings, detect_faces
detect_faces(np.random.default_rng(0).integers(0, 255, (480, 640), np.uint8), DetectorSettings())
def init():
    cv2.setNumThreads(1)  # what augment's workers do first
with multiprocessing.get_context("fork").Pool(2, init) as pool:
    print(sum(pool.map(abs, range(4))))
"""


def test_processes_forked_after_detection_do_not_hang():
    """Detection once started OpenCV's thread pool, and augment's forked workers then hung in
    cv2.setNumThreads (the refine data after the calibration)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FORK_AFTER_DETECTION], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "6", done.stderr
