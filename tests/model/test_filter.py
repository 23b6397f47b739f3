"""`facekeys filter` with a real model folder: its detector finds the faces, its networks place
the keypoints, and every face found gets the overlay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facekeys.cli import main

FIXTURE_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "model-before-wings"


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    """The small 68-point model kept as a fixture (no detector calibration of its own)."""
    folder = tmp_path / "model"
    shutil.copytree(FIXTURE_MODEL, folder)
    return folder


def calibrate(model: Path):
    """Gives the model a Haar calibration (numbers of the order the augment stage measures)."""
    from facekeys.inference.detectors import DetectorFraming, DetectorSettings

    framing = DetectorFraming(DetectorSettings(), 0.0, 0.05, 2.3, 50, 50, 0.3)
    card = json.loads((model / "model.json").read_text())
    card["crop_policy"]["detector"] = framing.to_dict()
    (model / "model.json").write_text(json.dumps(card))
    return framing


def test_a_model_without_a_detector_calibration_is_refused_in_one_line(small_model, tmp_path,
                                                                        capsys):  # fmt: skip
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((120, 160, 3), 90, np.uint8))
    out = tmp_path / "out.png"
    overlay = tmp_path / "dot.png"
    cv2.imwrite(str(overlay), np.full((10, 20, 4), 255, np.uint8))
    status = main(["filter", str(photo), "--overlay", str(overlay), "--anchors", "2,5,17,5",
                   "--model", str(small_model), "--out", str(out)])  # fmt: skip
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "facekeys filter: error: the model has no calibration for a face detector"
    )
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.realdata
def test_every_face_the_detector_finds_gets_the_overlay(small_model, shared_data, tmp_path,
                                                        capsys):  # fmt: skip
    from facekeys.inference.detectors import detect_faces

    framing = calibrate(small_model)
    photo = shared_data / "sample-images" / "the_beatles.jpg"
    out = tmp_path / "beatles-cool.jpg"

    status = main(["filter", str(photo), "--overlay", "sunglasses", "--overlays-dir",
                   str(shared_data / "sample-images"), "--model", str(small_model),
                   "--out", str(out)])  # fmt: skip

    assert status == 0
    image = cv2.imread(str(photo))
    faces = len(detect_faces(image, framing.settings))
    assert faces >= 4
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"{out}: sunglasses on {faces} of {faces} faces found in {photo}"
    )
    result = cv2.imread(str(out))
    assert result.shape == image.shape
    # Dark lenses were pasted: many pixels turned much darker (JPEG noise changes a few levels).
    darker = (image.astype(int) - result.astype(int)).max(axis=2) > 60
    assert darker.sum() > 200 * faces
