"""`facekeys predict`: a folder of images in, the data set's CSV layout out, bad images listed
with their reason while the others are still predicted."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facekeys.cli import main
from facekeys.predict import KeypointPredictor
from facekeys.train import train
from tests.model.test_train import TINY


@pytest.fixture
def tiny_model(tiny_augmented: Path, tmp_path: Path) -> Path:
    train(tiny_augmented, tmp_path / "model", tmp_path / "ckpt.pt", TINY)
    return tmp_path / "model"


def test_predict_folder_with_a_corrupt_image(tiny_model, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        cv2.imwrite(str(folder / f"face{k}.png"), rng.integers(0, 255, (40, 56), np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image, not listed")
    out = tmp_path / "preds.csv"

    status = main(["predict", str(folder), "--model", str(tiny_model), "--out", str(out)])

    assert status == 1, "a failed image makes the exit status non-zero"
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message == f"{out}: 3 images predicted; 1 failed (see {tmp_path / 'preds.errors.csv'})"
    with out.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:5] == ["name", "x0", "y0", "x1", "y1"] and len(rows[0]) == 137
    assert [Path(r[0]).name for r in rows[1:]] == ["face0.png", "face1.png", "face2.png"]
    with (tmp_path / "preds.errors.csv").open() as handle:
        errors = list(csv.DictReader(handle))
    assert [(Path(e["name"]).name, e["reason"]) for e in errors] == [
        ("broken.jpg", "image_corrupt")
    ]

    # The CSV holds what the prediction path returns, in the data set's label convention.
    predictor = KeypointPredictor.from_dir(tiny_model)
    image = cv2.imread(str(folder / "face1.png"), cv2.IMREAD_UNCHANGED)
    expected = predictor.to_label_convention(predictor.predict([image]))[0].reshape(-1)
    assert np.allclose([float(v) for v in rows[2][1:]], expected, atol=1e-3)
    assert expected.reshape(-1, 2)[:, 0].max() < 56 + 10  # original pixels, not crop pixels


class _DotFinder(torch.nn.Module):
    """Stands in for a network that is exactly right: every point at the brightest pixel of
    its input, in the networks' output units (input pixels / size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, _, size = x.shape
        flat = x[:, 0].reshape(n, -1).argmax(dim=1)
        xy = torch.stack([flat % size, flat // size], dim=1).float() / size
        return xy[:, None, :].expand(n, 68, 2)


def test_predictions_come_back_in_the_labels_convention(tiny_model):
    """A model that finds a dot exactly, on a dot drawn at pixel (20, 12): the prediction path
    reports the pixel plus the model's label offset (41, 31 for 1-based labels), whatever the
    crop; checked against the drawn pixel, not against to_label_convention."""
    predictor = KeypointPredictor.from_dir(tiny_model)
    predictor.first.model, predictor.refine = _DotFinder(), None
    size = predictor.first.size
    image = np.zeros((size, size), np.uint8)
    image[12, 20] = 255
    points = predictor.predict([image])
    assert np.allclose(points[0], (20.0, 12.0), atol=1e-4)
    offset = predictor.label_pixel_offset
    assert offset in (0.5, 1.0)  # the conventions the data sets use
    labels = predictor.to_label_convention(points)
    assert np.allclose(labels[0], (20.0 + offset, 12.0 + offset), atol=1e-4)


def test_predict_user_errors_are_one_line(tiny_model, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope"), "--model", str(tiny_model),
                 "--out", str(tmp_path / "p.csv")]) == 1  # fmt: skip
    assert (
        capsys.readouterr().err.strip()
        == f"facekeys predict: error: {tmp_path / 'nope'}: no such file or folder"
    )
    assert (
        main(["predict", str(tmp_path), "--model", str(tmp_path / "none"), "--out", "p.csv"]) == 1
    )
    assert capsys.readouterr().err.strip() == (
        f"facekeys predict: error: {tmp_path / 'none'}: not a model (a folder with model.pt and "
        "model.json, an export folder, or an .onnx file)"
    )
    (tmp_path / "bad_model").mkdir()
    (tmp_path / "bad_model" / "model.pt").write_bytes(b"garbage")
    (tmp_path / "bad_model" / "model.json").write_text((tiny_model / "model.json").read_text())
    assert main(["predict", str(tmp_path), "--model", str(tmp_path / "bad_model"),
                 "--out", str(tmp_path / "p.csv")]) == 1  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"facekeys predict: error: {tmp_path / 'bad_model'}: cannot load the model"
    )
    assert "\n" not in err


def test_detect_haar_needs_a_calibrated_model(tiny_model, tmp_path, capsys):
    # Synthetic dot faces have nothing Haar can find: the tiny model has no calibration.
    assert KeypointPredictor.from_dir(tiny_model).detector is None
    status = main(["predict", str(tmp_path), "--model", str(tiny_model), "--detect", "haar",
                   "--out", str(tmp_path / "p.csv")])  # fmt: skip
    assert status == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .startswith("facekeys predict: error: the model has no face detector calibration")
    )


@pytest.mark.realdata
def test_detect_haar_predicts_every_face_of_a_photo(tiny_model, shared_data, tmp_path, capsys):
    """One row per detected face, each predicted in the frame the calibration gives its box;
    a photo without a face is listed with its reason but is not an error."""
    import json

    from facekeys.detect import DetectorFraming, DetectorSettings, detect_faces

    card_path = tiny_model / "model.json"
    card = json.loads(card_path.read_text())
    framing = DetectorFraming(DetectorSettings(), 0.0, 0.05, 2.3, 50, 50, 0.3)
    card["crop_policy"]["detector"] = framing.to_dict()
    card_path.write_text(json.dumps(card))
    photos = tmp_path / "photos"
    photos.mkdir()
    group = cv2.imread(str(shared_data / "sample-images" / "the_beatles.jpg"))
    cv2.imwrite(str(photos / "group.png"), group)
    cv2.imwrite(str(photos / "wall.png"), np.full((200, 300), 128, np.uint8))
    out = tmp_path / "faces.csv"

    status = main(["predict", str(photos), "--model", str(tiny_model), "--detect", "haar",
                   "--out", str(out)])  # fmt: skip

    assert status == 0, "an image without a face is not a failure"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"{out}: 1 images predicted; 0 failed; 1 without a face (see "
        f"{tmp_path / 'faces.errors.csv'})"
    )
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    boxes = detect_faces(group, framing.settings)
    assert len(rows) == len(boxes) >= 4
    assert [int(r["face"]) for r in rows] == list(range(len(boxes)))
    predictor = KeypointPredictor.from_dir(tiny_model)
    for row, box in zip(rows, boxes, strict=True):
        assert [float(row[k]) for k in ("face_x", "face_y", "face_w", "face_h")] == pytest.approx(
            box, abs=0.051
        )
        expected = predictor.predict([group], [framing.frame_box(box)])[0]
        got = np.array([float(row[f"{a}{i}"]) for i in range(68) for a in "xy"]).reshape(68, 2)
        assert np.allclose(got, predictor.to_label_convention(expected), atol=1e-3)
    with (tmp_path / "faces.errors.csv").open() as handle:
        assert [(Path(e["name"]).name, e["reason"]) for e in csv.DictReader(handle)] == [
            ("wall.png", "no_face_found")
        ]
