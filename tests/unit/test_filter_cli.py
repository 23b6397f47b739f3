"""`facekeys filter` as a user meets it: a photo in, the photo with an overlay on every face
out, written whole; one-line errors checked before the model is loaded.

The model is replaced by a stand-in that "finds" faces at known keypoints, so these tests see
the path from points to the written picture without training or detecting anything
(tests/model/test_filter.py runs a real model and detector)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import facekeys.tracking.model_specs
from facekeys.cli import main
from facekeys.data.keypoint_formats import YOUTUBE68
from facekeys.wild.overlays import BUILT_INS, TARGETS
from tests.unit.test_filters import blue_mask, centroid, face68, red_mask


class StandIn:
    """A model that finds the given faces in any photo."""

    def __init__(self, faces: np.ndarray) -> None:
        self.faces = faces
        self.keypoint_names = list(YOUTUBE68.point_names)
        self.photos: list[tuple[int, ...]] = []

    def predict_faces(self, image):
        self.photos.append(image.shape)
        return [(0.0, 0.0, 1.0, 1.0)] * len(self.faces), self.faces


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A gray photo and a marker overlay (red on its first anchor, blue on its second)."""
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((200, 240), 90, np.uint8))
    overlay = np.zeros((31, 61, 4), np.uint8)
    overlay[13:18, 8:13] = (0, 0, 255, 255)
    overlay[13:18, 48:53] = (255, 0, 0, 255)
    cv2.imwrite(str(tmp_path / "markers.png"), overlay)
    return {"photo": photo, "overlay": tmp_path / "markers.png", "out": tmp_path / "out.png"}


def use_model(monkeypatch, model) -> None:
    def load(spec):
        assert spec == "stand-in"
        if isinstance(model, Exception):
            raise model
        return model

    monkeypatch.setattr(facekeys.tracking.model_specs, "load_any_model", load)


def run(files, *extra: str) -> int:
    return main(["filter", str(files["photo"]), "--overlay", str(files["overlay"]),
                 "--anchors", "10,15,50,15", "--model", "stand-in", "--out", str(files["out"]),
                 *extra])  # fmt: skip


def test_every_face_of_the_photo_gets_the_overlay(files, monkeypatch, capsys):
    faces = np.stack([face68((70, 80), 25, 10), face68((170, 120), 30, -20)])
    model = StandIn(faces)
    use_model(monkeypatch, model)

    assert run(files) == 0

    assert model.photos == [(200, 240)], "the photo as decoded goes to the detector"
    assert capsys.readouterr().err == (
        f"{files['out']}: {files['overlay']} on 2 of 2 faces found in {files['photo']}\n"
    )
    out = cv2.imread(str(files["out"]), cv2.IMREAD_UNCHANGED)
    assert out.shape == (200, 240, 3)
    for face in faces:
        near = np.zeros(out.shape[:2], bool)
        x, y = face[36:48].mean(axis=0).astype(int)
        near[y - 40 : y + 40, x - 50 : x + 50] = True
        assert np.allclose(centroid(red_mask(out) & near), face[36:42].mean(axis=0), atol=0.75)
        assert np.allclose(centroid(blue_mask(out) & near), face[42:48].mean(axis=0), atol=0.75)
    assert sorted(p.name for p in files["out"].parent.iterdir()) == [
        "markers.png", "out.png", "photo.png"
    ], "no staging file is left behind"  # fmt: skip


def test_a_photo_without_a_face_is_written_unchanged_with_a_note(files, monkeypatch, capsys):
    use_model(monkeypatch, StandIn(np.zeros((0, 68, 2))))
    assert run(files) == 0
    assert capsys.readouterr().err == (
        f"{files['photo']}: no face found; {files['out']} is the photo without an overlay\n"
    )
    photo = cv2.imread(str(files["photo"]), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(cv2.imread(str(files["out"]), cv2.IMREAD_GRAYSCALE), photo)


def test_a_jpeg_output_is_a_jpeg(files, monkeypatch):
    use_model(monkeypatch, StandIn(face68()[None]))
    files["out"] = files["out"].with_suffix(".JPG")
    assert run(files) == 0
    assert files["out"].read_bytes()[:3] == b"\xff\xd8\xff"


def test_errors_are_one_line_and_come_before_the_model(files, monkeypatch, capsys):
    """Nothing here reaches the model: the stand-in would raise if it were loaded."""
    use_model(monkeypatch, AssertionError("the model was loaded"))
    broken = files["photo"].with_name("broken.jpg")
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    video = files["photo"].with_name("clip.mp4")
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    missing = files["photo"].with_name("nope.png")
    cases = {
        "missing photo": ({"photo": missing}, (), f"{missing}: no such file"),
        "video to a photo": ({"photo": video}, (), f"{files['out']}: --out must be an .mp4 file"),
        "corrupt video": ({"photo": video, "out": files["out"].with_suffix(".mp4")}, (),
                          f"{video}: "),
        "corrupt photo": ({"photo": broken}, (), f"{broken}: "),
        "gif out": ({"out": files["out"].with_suffix(".gif")}, (), ".gif: --out must name a .jpg"),
        "out is the photo": ({"out": files["photo"]}, (), "--out is the input photo"),
        "no alpha": ({"overlay": files["photo"]}, (), "the overlay has no alpha channel"),
        "bad anchors": ({}, ("--anchors", "1,2"), "--anchors '1,2': expected four numbers"),
    }  # fmt: skip
    photo_bytes = files["photo"].read_bytes()
    for case, (changes, extra, expected) in cases.items():
        assert run({**files, **changes}, *extra) == 1, case
        err = capsys.readouterr().err
        assert err.startswith("facekeys filter: error: ") and err.count("\n") == 1, case
        assert expected in err, (case, err)
    assert files["photo"].read_bytes() == photo_bytes and not files["out"].exists()


def test_a_model_error_is_one_line(files, monkeypatch, capsys):
    from facekeys.errors import FacekeysError

    use_model(monkeypatch, FacekeysError("stand-in: not a model"))
    assert run(files) == 1
    assert capsys.readouterr().err == "facekeys filter: error: stand-in: not a model\n"


def test_help_explains_with_an_example_and_lists_every_overlay_and_target():
    result = subprocess.run([sys.executable, "-m", "facekeys.cli", "filter", "--help"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0
    assert "facekeys filter ../shared/data/sample-images/obamas.jpg --overlay sunglasses" in (
        result.stdout
    )
    for word in [*BUILT_INS, *TARGETS, "--anchors X1,Y1,X2,Y2", "FACEKEYS_OVERLAYS_DIR"]:
        assert word in result.stdout, word


def test_a_sideways_phone_photo_is_filtered_upright(files, monkeypatch):
    """A JPEG stored 240 wide, 200 high with EXIF orientation 6 (turn 90 degrees clockwise):
    the detector gets, and the output is, the upright 200 x 240 picture viewers show."""
    from tests.photo_bytes import exif_block, jpeg_with_exif

    stored = np.full((200, 240, 3), 90, np.uint8)
    files["photo"] = files["photo"].with_suffix(".jpg")
    files["photo"].write_bytes(jpeg_with_exif(stored, exif_block(6)))
    model = StandIn(np.stack([face68((100, 120), 25, 0)]))
    use_model(monkeypatch, model)
    assert run(files) == 0
    assert model.photos == [(240, 200, 3)]
    assert cv2.imread(str(files["out"]), cv2.IMREAD_UNCHANGED).shape == (240, 200, 3)


def test_a_photo_too_small_to_hold_a_face_is_one_line(files, monkeypatch, capsys):
    cv2.imwrite(str(files["photo"]), np.full((10, 12), 90, np.uint8))
    use_model(monkeypatch, StandIn(np.zeros((0, 68, 2))))
    assert run(files) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "too small to hold a face" in err, err
    assert not files["out"].exists()
