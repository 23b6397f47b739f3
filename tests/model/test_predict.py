"""`facekeys predict`: a folder of images in, the data set's CSV layout out, bad images listed
with their reason while the others are still predicted."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facekeys.cli import main
from facekeys.inference.predictor import KeypointPredictor
from facekeys.model.training import train
from tests.conftest import REPO
from tests.model.test_train import TINY
from tests.photo_bytes import exif_block, jpeg_with_exif


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
    assert capsys.readouterr().err == (
        f"facekeys predict: error: {tmp_path / 'bad_model' / 'model.pt'}: not a readable "
        "weights file (Unsupported operand 103)\n"
    )


def test_detect_haar_needs_a_calibrated_model(tiny_model, tmp_path, capsys):
    # Synthetic dot faces have nothing Haar can find: the tiny model has no calibration.
    assert KeypointPredictor.from_dir(tiny_model).detector is None
    status = main(["predict", str(tmp_path), "--model", str(tiny_model), "--detect", "haar",
                   "--out", str(tmp_path / "p.csv")])  # fmt: skip
    assert status == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .startswith("facekeys predict: error: the model has no calibration for haar")
    )


@pytest.mark.realdata
def test_detect_haar_predicts_every_face_of_a_photo(tiny_model, shared_data, tmp_path, capsys):
    """One row per detected face, each predicted in the frame the calibration gives its box;
    a photo without a face is listed with its reason but is not an error."""
    import json

    from facekeys.data.crop_geometry import FaceSquare
    from facekeys.inference.detectors import DetectorFraming, DetectorSettings, detect_faces

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
        square = FaceSquare.from_box(framing.frame_box(box))
        expected = predictor.predict_squares(group, [square])[0]
        got = np.array([float(row[f"{a}{i}"]) for i in range(68) for a in "xy"]).reshape(68, 2)
        assert np.allclose(got, predictor.to_label_convention(expected), atol=1e-3)
    with (tmp_path / "faces.errors.csv").open() as handle:
        assert [(Path(e["name"]).name, e["reason"]) for e in csv.DictReader(handle)] == [
            ("wall.png", "no_face_found")
        ]


def photos_with(folder: Path, count: int = 3, broken: bool = False) -> Path:
    """``count`` small gray images (and a corrupt JPEG) in ``folder``."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        cv2.imwrite(str(folder / f"face{k}.png"), rng.integers(0, 255, (40, 56), np.uint8))
    if broken:
        (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def test_outputs_that_would_destroy_something_are_refused(tiny_model, tmp_path, capsys):
    photos = photos_with(tmp_path / "photos")
    image = photos / "face0.png"
    pixels = image.read_bytes()
    earlier = tmp_path / "preds.csv"
    earlier.write_text("name,x0\nearlier.png,1.0\n")
    (tmp_path / "alias.csv").symlink_to(image)
    (tmp_path / "table.csv").write_text("a table given as an input by mistake\n")

    def refused(*extra: str) -> str:
        args = ["predict", str(photos), str(tmp_path / "table.csv"), "--model", str(tiny_model)]
        assert main([*args, *extra]) == 1
        return capsys.readouterr().err

    assert refused("--out", str(earlier), "--errors", str(earlier)) == (
        f"facekeys predict: error: {earlier}: --out and --errors are the same file\n"
    )
    assert refused("--out", str(image)) == (
        f"facekeys predict: error: {image}: --out must name a .csv file\n"
    )
    assert refused("--out", str(tmp_path / "alias.csv")) == (
        f"facekeys predict: error: {tmp_path / 'alias.csv'}: --out is one of the input images\n"
    )
    assert refused("--out", str(tmp_path / "table.csv")) == (
        f"facekeys predict: error: {tmp_path / 'table.csv'}: --out is one of the input images\n"
    )
    assert refused("--out", str(tmp_path / "p.csv"), "--errors", str(tmp_path / "e.txt")) == (
        f"facekeys predict: error: {tmp_path / 'e.txt'}: --errors must name a .csv file\n"
    )
    assert image.read_bytes() == pixels and (tmp_path / "alias.csv").is_symlink()
    assert earlier.read_text() == "name,x0\nearlier.png,1.0\n"
    assert (tmp_path / "table.csv").read_text() == "a table given as an input by mistake\n"
    assert not (tmp_path / "p.csv").exists() and not list(tmp_path.glob(".*.tmp"))


def test_the_errors_file_always_belongs_to_the_predictions(tiny_model, tmp_path, capsys):
    """A second run without failures leaves no failures of the first run behind."""
    photos = photos_with(tmp_path / "photos", broken=True)
    out, errors = tmp_path / "out" / "preds.csv", tmp_path / "out" / "preds.errors.csv"
    args = ["predict", str(photos), "--model", str(tiny_model), "--out", str(out)]
    assert main(args) == 1
    with errors.open() as handle:
        assert [Path(r["name"]).name for r in csv.DictReader(handle)] == ["broken.jpg"]

    (photos / "broken.jpg").unlink()
    assert main(args) == 0
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"{out}: 3 images predicted; 0 failed (see {errors})"
    )
    assert errors.read_bytes() == b"name,reason,detail\r\n"
    with out.open() as handle:
        assert len(list(csv.reader(handle))) == 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["preds.csv", "preds.errors.csv"]


def test_outputs_the_system_refuses_fail_before_any_image(tmp_path, capsys):
    """A folder that cannot be written, or a file where the folder should be: one line, before
    the model is even loaded (the model given here does not exist)."""
    photos = photos_with(tmp_path / "photos")
    (tmp_path / "results").write_text("a file, not a folder")
    out = tmp_path / "results" / "preds.csv"
    args = ["predict", str(photos), "--model", str(tmp_path / "no-model")]
    assert main([*args, "--out", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"facekeys predict: error: {out}: cannot write: {tmp_path / 'results'} is a file, not "
        "a folder\n"
    )
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs here to stand in for a read-only folder (root ignores chmod)")
    assert main([*args, "--out", "/sys/preds.csv"]) == 1
    err = capsys.readouterr().err
    if Path("/sys/preds.csv").exists():
        pytest.skip("this machine lets the process create files in /sys")
    assert err in (
        "facekeys predict: error: /sys/preds.csv: cannot write: Permission denied\n",
        "facekeys predict: error: /sys/preds.csv: cannot write: Read-only file system\n",
    )


# Runs `facekeys predict` with files capped at LIMIT bytes: a write past it fails with EFBIG
# (SIGXFSZ ignored), as a disk that fills up while the predictions are written.
FULL_DISK = """
import resource, signal, sys
from facekeys.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(main(sys.argv[2:]))
"""


def test_a_disk_full_at_the_end_changes_nothing(tiny_model, tmp_path):
    photos = photos_with(tmp_path / "photos")
    out = tmp_path / "out" / "preds.csv"
    out.parent.mkdir()
    out.write_text("name,x0\nearlier.png,1.0\n")
    (out.parent / "preds.errors.csv").write_text("name,reason,detail\nold.png,image_corrupt,x\n")
    args = ["predict", str(photos), "--model", str(tiny_model), "--out", str(out)]

    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, "1000", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"facekeys predict: error: {out}: cannot write: File too large"
    )
    assert out.read_text() == "name,x0\nearlier.png,1.0\n"
    assert "old.png" in (out.parent / "preds.errors.csv").read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["preds.csv", "preds.errors.csv"]


def test_model_files_that_cannot_be_used_are_one_line(tiny_model, tmp_path, capsys):
    import argparse
    import json
    import shutil

    photos = photos_with(tmp_path / "photos", count=1)
    broken = tmp_path / "broken_model"

    def fails_with(name: str, content: bytes | str) -> str:
        shutil.rmtree(broken, ignore_errors=True)
        shutil.copytree(tiny_model, broken)
        path = broken / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        out = tmp_path / "p.csv"
        assert main(["predict", str(photos), "--model", str(broken), "--out", str(out)]) == 1
        assert not out.exists()
        return capsys.readouterr().err

    card = json.loads((tiny_model / "model.json").read_text())
    pt, js = broken / "model.pt", broken / "model.json"
    assert fails_with("model.pt", b"") == (
        f"facekeys predict: error: {pt}: empty file (0 bytes); train or copy the model again\n"
    )
    assert fails_with("model.json", json.dumps({**card, "input": "x"})) == (
        f"facekeys predict: error: {js}: input must be an object, not 'x'\n"
    )
    size_as_text = {**card, "input": {**card["input"], "size": "32"}}
    assert fails_with("model.json", json.dumps(size_as_text)) == (
        f"facekeys predict: error: {js}: input.size must be an integer, not '32'\n"
    )
    assert fails_with("model.json", "{not json") == (
        f"facekeys predict: error: {js}: not valid JSON: Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1)\n"
    )
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"layer.weight": argparse.Namespace(code="runs on load")}, unsafe)
    err = fails_with("model.pt", unsafe.read_bytes())
    assert err == (
        f"facekeys predict: error: {pt}: not a plain weights file (Unsupported global: GLOBAL "
        "argparse.Namespace); refused for safety\n"
    )
    assert "weights_only" not in err
    if (tiny_model / "refine" / "model.pt").is_file():
        assert fails_with("refine/model.pt", b"") == (
            f"facekeys predict: error: {broken / 'refine' / 'model.pt'}: empty file (0 bytes); "
            "train or copy the model again\n"
        )


def test_progress_lines_when_stderr_is_not_a_terminal(tiny_model, tmp_path, capsys):
    from facekeys.inference.predict_files import predict_files

    photos = photos_with(tmp_path / "photos", count=5)
    predictor = KeypointPredictor.from_dir(tiny_model)
    out = tmp_path / "p.csv"
    result = predict_files(
        predictor, [str(photos)], out, tmp_path / "e.csv", batch_size=2, progress_every=2
    )
    assert result == (5, 0, 0)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "predict: 2 of 5 images (40 %)",
        "predict: 4 of 5 images (80 %)",
    ]
    assert all(line.endswith(" images/s") for line in lines)


def test_names_are_inside_a_folder_given_alone_else_with_the_folder_as_given(
    tiny_model, tmp_path, capsys, monkeypatch
):
    """A folder given alone names its images as inside it (not with the folder's path, however
    the folder was given); beside other inputs with the folder as given, so two folders with
    the same names stay apart; a file given by path is named by that path, as given."""
    photos = photos_with(tmp_path / "photos", count=2, broken=True)
    single = photos_with(tmp_path / "more", count=1) / "face0.png"
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "names.csv"

    def names(path):
        with path.open() as handle:
            return [row["name"] for row in csv.DictReader(handle)]

    status = main(["predict", str(photos), "--model", str(tiny_model), "--out", str(out)])
    assert status == 1
    assert names(out) == ["face0.png", "face1.png"]
    assert names(tmp_path / "names.errors.csv") == ["broken.jpg"]

    status = main(["predict", "photos/", "more", "more/../photos/face1.png", "--model",
                   str(tiny_model), "--out", str(out)])  # fmt: skip
    error = "more/../photos/face1.png: given twice (also as photos/face1.png)"
    assert status == 1 and error in capsys.readouterr().err

    status = main(["predict", "photos/", "more/./face0.png", "--model", str(tiny_model),
                   "--out", str(out)])  # fmt: skip
    assert status == 1 and single.is_file()
    assert names(out) == ["photos/face0.png", "photos/face1.png", "more/./face0.png"]
    assert names(tmp_path / "names.errors.csv") == ["photos/broken.jpg"]


def test_a_model_folder_written_before_the_package_moved_into_wings_predicts_the_same():
    """tests/fixtures/model-before-wings was trained and scored with the flat package (commit
    a8a4dca): its weights and card load unchanged and give the same points."""
    import json

    folder = Path(__file__).resolve().parents[1] / "fixtures" / "model-before-wings"
    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    image = (np.arange(48 * 40) % 251).astype(np.uint8).reshape(48, 40)

    points = KeypointPredictor.from_dir(folder).predict([image])

    assert np.allclose(points, np.array(expected["points"]), atol=1e-4)


def dot_photos(folder: Path) -> tuple[Path, np.ndarray]:
    """A folder with the same dot picture twice, once upright (PNG) and once stored sideways
    with EXIF orientation 6 (JPEG), and a 10x10 image too small to hold a face. The picture
    (48 wide, 32 tall) has a bright 8x8 block at x 32-39, y 8-15 of the upright picture; stored
    sideways it lies at x 8-15, y 8-15. Blocks of 8 px on the 8-px grid survive JPEG exactly."""
    folder.mkdir()
    upright = np.full((32, 48), 40, np.uint8)
    upright[8:16, 32:40] = 230
    cv2.imwrite(str(folder / "plain.png"), upright)
    sideways = np.ascontiguousarray(np.rot90(upright, 1))  # what a phone stores, tagged 6
    assert sideways[8:16, 8:16].min() == 230
    (folder / "sideways.jpg").write_bytes(jpeg_with_exif(sideways, exif_block(6)))
    cv2.imwrite(str(folder / "tiny.png"), np.full((10, 10), 200, np.uint8))
    return folder, upright


def test_sideways_photos_are_predicted_upright_and_tiny_ones_refused(tiny_model, tmp_path, capsys):
    photos, _ = dot_photos(tmp_path / "photos")
    out = tmp_path / "p.csv"

    status = main(["predict", str(photos), "--model", str(tiny_model), "--out", str(out)])

    assert status == 1, "an image too small to hold a face cannot be used"
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2:] == [
        "predict: 1 photo turned upright by the EXIF orientation (sideways.jpg): points are in "
        "the upright picture's pixels",
        f"{out}: 2 images predicted; 1 failed (see {tmp_path / 'p.errors.csv'})",
    ]
    with (tmp_path / "p.errors.csv").open() as handle:
        assert list(csv.reader(handle))[1:] == [
            ["tiny.png", "image_too_small", "10x10 px is under 16 px a side, too small to hold "
             "a face"]
        ]  # fmt: skip
    with out.open() as handle:
        rows = {r[0]: np.array(r[1:], float) for r in list(csv.reader(handle))[1:]}
    assert sorted(rows) == ["plain.png", "sideways.jpg"]
    # The model saw the same upright picture in both files.
    assert np.allclose(rows["sideways.jpg"], rows["plain.png"], atol=1e-3)


def test_points_of_a_sideways_photo_are_in_the_upright_pictures_pixels(tiny_model, tmp_path):
    """With a network that finds the bright block exactly, the points land on the block where
    the upright picture has it (x 32-39), not where the file stores it (x 8-15)."""
    from facekeys.inference.predict_files import predict_files

    photos, _ = dot_photos(tmp_path / "photos")
    predictor = KeypointPredictor.from_dir(tiny_model)
    predictor.first.model, predictor.refine = _DotFinder(), None
    out = tmp_path / "p.csv"

    assert predict_files(predictor, [str(photos)], out, tmp_path / "e.csv") == (2, 1, 0)

    with out.open() as handle:
        rows = {r[0]: np.array(r[1:], float).reshape(68, 2) for r in list(csv.reader(handle))[1:]}
    x, y = rows["sideways.jpg"][0] - predictor.label_pixel_offset
    # One input pixel of the 32-px network spans 1.5 picture pixels: the block's edge, give or
    # take that.
    assert 32 - 1.5 <= x <= 39 + 1.5 and 8 - 1.5 <= y <= 15 + 1.5, (x, y)


def test_detect_haar_refuses_tiny_images_and_gets_photos_upright(tiny_model, tmp_path):
    """The detector only ever sees upright pictures big enough to hold a face (the detector is
    a stand-in recording what it is given: synthetic pictures have nothing Haar finds)."""
    from facekeys.inference.predict_files import predict_files

    photos, upright = dot_photos(tmp_path / "photos")
    predictor = KeypointPredictor.from_dir(tiny_model)
    seen: list[np.ndarray] = []

    def predict_faces(image: np.ndarray, detector: str = "auto") -> tuple[list, np.ndarray]:
        seen.append(image)
        return [(0.0, 0.0, float(image.shape[1]), float(image.shape[0]))], np.zeros((1, 68, 2))

    predictor.require_detector = lambda detector="auto": detector  # type: ignore[method-assign]
    predictor.predict_faces = predict_faces  # type: ignore[method-assign]
    out, errors = tmp_path / "p.csv", tmp_path / "e.csv"

    assert predict_files(predictor, [str(photos)], out, errors, detect="haar") == (2, 1, 0)

    assert len(seen) == 2 and all(np.array_equal(image, upright) for image in seen)
    with errors.open() as handle:
        assert [(e["name"], e["reason"]) for e in csv.DictReader(handle)] == [
            ("tiny.png", "image_too_small")
        ]


def test_draw_writes_each_picture_annotated_where_the_points_are(tiny_model, tmp_path, capsys):
    """--draw: one PNG per predicted picture, its keypoints drawn at the predicted pixels
    (the CSV's values less the label offset); a picture that failed gets none."""
    from facekeys.inference.drawing import POINT_COLOUR

    photos = photos_with(tmp_path / "photos", count=2, broken=True)
    out, drawn = tmp_path / "p.csv", tmp_path / "drawn"
    status = main(["predict", str(photos), "--model", str(tiny_model), "--out", str(out),
                   "--draw", str(drawn)])  # fmt: skip
    assert status == 1  # the corrupt JPEG
    assert sorted(p.name for p in drawn.iterdir()) == ["face0.png.png", "face1.png.png"]
    offset = KeypointPredictor.from_dir(tiny_model).label_pixel_offset
    with out.open() as handle:
        for row in csv.DictReader(handle):
            picture = cv2.imread(str(drawn / f"{row['name']}.png"))
            assert picture.shape == (40, 56, 3)
            x, y = (round(float(row[k]) - offset) for k in ("x0", "y0"))
            if 0 <= x < 56 and 0 <= y < 40:
                assert tuple(picture[y, x]) == POINT_COLOUR


def test_draw_into_a_place_that_cannot_be_a_folder_fails_before_any_image(
    tiny_model, tmp_path, capsys
):
    photos = photos_with(tmp_path / "photos", count=1)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    status = main(["predict", str(photos), "--model", str(tiny_model), "--out",
                   str(tmp_path / "p.csv"), "--draw", str(blocker / "drawn")])  # fmt: skip
    assert status == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blocker) in err, err
    assert not (tmp_path / "p.csv").exists()
