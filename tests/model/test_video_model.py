"""`facekeys video` and bench/bench_video.py with a real (tiny) trained model and OpenCV's Haar
detector: the whole path runs, a clip without faces is reported as such, and a model without a
detector calibration is refused in one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facekeys.cli import main
from facekeys.inference.detectors import DetectorFraming, DetectorSettings
from facekeys.model.training import train
from tests.conftest import HEADER68, REPO, row68, synthetic_face_images, write_csv
from tests.model.test_train import TINY


@pytest.fixture
def tiny_model(tiny_augmented: Path, tmp_path: Path) -> Path:
    train(tiny_augmented, tmp_path / "model", tmp_path / "ckpt.pt", TINY)
    return tmp_path / "model"


def calibrated(model: Path) -> Path:
    """The tiny model with a Haar framing in its card (its dot faces calibrate nothing)."""
    card = json.loads((model / "model.json").read_text())
    framing = DetectorFraming(DetectorSettings(), 0.0, 0.05, 2.3, 100, 100, 0.1)
    card["crop_policy"]["detector"] = framing.to_dict()
    (model / "model.json").write_text(json.dumps(card))
    return model


def gray_clip(path: Path, frames: int = 6) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    ramp = np.tile(np.linspace(40, 200, 96, dtype=np.uint8), (64, 1))
    for _ in range(frames):
        writer.write(cv2.cvtColor(ramp, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def test_video_with_a_tiny_model_and_haar_reports_a_clip_without_faces(tiny_model, tmp_path,
                                                                        capsys):  # fmt: skip
    clip = gray_clip(tmp_path / "clip.mp4")
    out, table = tmp_path / "out.mp4", tmp_path / "out.csv"
    args = ["video", str(clip), "--model", str(calibrated(tiny_model)), "--out", str(out),
            "--csv", str(table), "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-2] == f"{clip}: no face found in any frame"
    assert lines[-1].startswith(f"{out}: 6 frames, 0 faces, ")
    assert lines[-1].endswith(", 6 detector runs, 0 faces lost, 0 bad frames")
    with table.open() as handle:
        assert list(csv.reader(handle)) == [["frame", "face", *(f"{a}{i}" for i in range(68)
                                                                for a in "xy")]]  # fmt: skip
    assert int(cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT)) == 6


def test_video_refuses_a_model_without_detector_calibration(tiny_model, tmp_path, capsys):
    clip = gray_clip(tmp_path / "clip.mp4")
    args = ["video", str(clip), "--model", str(tiny_model), "--out", str(tmp_path / "o.mp4")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("facekeys video: error: the model has no calibration for a face detector")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o.mp4").exists()


def test_bench_video_runs_every_case_on_a_tiny_model(tiny_model, tmp_path):
    data = tmp_path / "faces"
    (data / "test").mkdir(parents=True)
    images, points = synthetic_face_images(2, size=64)
    rows = []
    for k, (image, pts) in enumerate(zip(images, points, strict=True)):
        cv2.imwrite(str(data / "test" / f"face{k}.png"), image)
        rows.append(row68(f"face{k}.png", pts))
    write_csv(data / "test_frames_keypoints.csv", HEADER68, rows)
    done = subprocess.run(
        [sys.executable, "bench/bench_video.py", "--model", str(calibrated(tiny_model)),
         "--data", str(data), "--faces", "2", "--frames", "5", "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},  # this checkout's facekeys
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = [line.split(":")[0] for line in done.stdout.strip().splitlines()]
    assert names == ["detect_every_frame", "tracking", "tracking_unsmoothed", "dlib_hog_68"]
    assert "frames=10 frames_per_s=" in done.stdout and "vs detect_every_frame: speed x" in (
        done.stdout
    )


@pytest.mark.realdata
def test_filter_on_a_video_places_the_overlay_in_every_frame(tiny_model, shared_data, tmp_path,
                                                             capsys):  # fmt: skip
    """`facekeys filter CLIP.mp4`: the followed faces get the overlay frame after frame (the
    tiny model's points are rough, so only where it lands is unchecked)."""
    photo = cv2.imread(str(shared_data / "sample-images" / "obamas.jpg"))
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (640, 480))
    for shift in range(5):
        writer.write(np.ascontiguousarray(photo[10:490, 4 * shift : 4 * shift + 640]))
    writer.release()
    overlay = np.zeros((20, 60, 4), np.uint8)
    overlay[5:15, :] = (255, 0, 255, 255)  # an opaque magenta bar
    cv2.imwrite(str(tmp_path / "bar.png"), overlay)
    out = tmp_path / "filtered.mp4"
    model = str(calibrated(tiny_model))
    status = main(["filter", str(clip), "--overlay", str(tmp_path / "bar.png"), "--anchors",
                   "0,10,59,10", "--model", model, "--out", str(out)])  # fmt: skip
    assert status == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith(f"{out}: 5 frames, ") and summary.endswith(", 0 bad frames")
    source, filtered = cv2.VideoCapture(str(clip)), cv2.VideoCapture(str(out))
    for _ in range(5):
        (ok_in, before), (ok_out, after) = source.read(), filtered.read()
        assert ok_in and ok_out
        magenta = (after[..., 1] < 80) & (after[..., 0] > 170) & (after[..., 2] > 170)
        was = (before[..., 1] < 80) & (before[..., 0] > 170) & (before[..., 2] > 170)
        assert magenta.sum() > was.sum() + 50, "the bar is placed in this frame"
