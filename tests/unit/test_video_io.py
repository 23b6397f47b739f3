"""Frames in and out of `facekeys video`: video files, folders of frames and cameras, bad input
in one line, bad frames skipped and reported, and the command end to end with a fake model."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from facekeys.cli import main
from facekeys.data.atomic_files import atomic_path
from facekeys.errors import FacekeysError
from facekeys.wild.video_io import open_source
from tests.unit.video_fakes import FakePredictor, clip_face, frames_of


def write_mp4(path: Path, frames: int, size=(48, 64), fps: float = 20.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size[::-1])
    for k in range(frames):
        writer.write(np.full((*size, 3), 10 * k, np.uint8))
    writer.release()
    return path


def test_a_video_file_gives_its_frames_with_their_times(tmp_path):
    source = open_source(str(write_mp4(tmp_path / "clip.mp4", 8)))
    frames = list(source)
    assert (source.fps, source.total, len(frames)) == (20.0, 8, 8)
    assert [f.index for f in frames] == list(range(8))
    assert frames[3].time_s == pytest.approx(0.15) and frames[3].name.endswith("clip.mp4#3")
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    assert abs(int(frames[5].image.mean()) - 50) < 6, "the frames' own pixels, in order"


def test_a_folder_of_frames_in_natural_order_with_bad_frames_named(tmp_path):
    for k in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"frame{k}.png"), np.full((30, 40), k, np.uint8))
    (tmp_path / "frame3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cv2.imwrite(str(tmp_path / "frame4.png"), np.zeros((31, 40), np.uint8))  # another size
    (tmp_path / "notes.txt").write_text("not a frame")
    frames = list(open_source(str(tmp_path), fps=10))
    assert [Path(f.name).name for f in frames] == [
        "frame1.png", "frame2.png", "frame3.png", "frame4.png", "frame10.png"
    ]  # fmt: skip
    assert [f.image is None for f in frames] == [False, False, True, True, False]
    assert frames[2].problem.startswith("image_corrupt")
    assert frames[3].problem == "40x31, not 40x30 as frame 0"
    assert frames[4].time_s == pytest.approx(0.4) and frames[4].image.shape == (30, 40, 3)


def test_sources_that_cannot_be_used_are_one_line_naming_them(tmp_path, capfd):
    (tmp_path / "empty.mp4").touch()
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 500)
    (tmp_path / "no_frames").mkdir()
    cases = {
        str(tmp_path / "empty.mp4"): "empty file (0 bytes)",
        str(tmp_path / "corrupt.mp4"): "not a video OpenCV can decode",
        str(tmp_path / "missing.mp4"): "no such file or folder",
        str(tmp_path / "no_frames"): "no image files (.png",
        "97": "cannot be opened (no such camera, or it is busy)",
    }
    for spec, problem in cases.items():
        with pytest.raises(FacekeysError) as caught:
            list(open_source(spec))
        message = str(caught.value)
        assert "\n" not in message and problem in message
        assert message.startswith("camera 97" if spec == "97" else spec)
    assert "moov" not in capfd.readouterr().err, "FFmpeg's own complaints are not shown"


def test_atomic_path_keeps_the_extension_and_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_path(target) as staging:
        assert staging.name.endswith(".tmp.mp4") and staging.parent == tmp_path
        staging.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"previous" and sorted(tmp_path.iterdir()) == [target]
    with atomic_path(target) as staging:
        staging.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [target]


@pytest.fixture
def fake_model(monkeypatch):
    """`facekeys video --model anything` gets a fake predictor of a known clip."""
    truth = [t[None] for t in clip_face(30)]
    for k in range(10, 13):
        truth[k] = np.zeros((0, 68, 2))  # the face leaves for three frames
    predictor = FakePredictor(truth)
    monkeypatch.setattr("facekeys.tracking.model_specs.load_any_model", lambda spec: predictor)
    return predictor


def _write_frames(folder: Path, truth) -> Path:
    folder.mkdir()
    for k, frame in enumerate(frames_of(truth)):
        cv2.imwrite(str(folder / f"f{k:03d}.png"), frame)  # lossless: the frames keep their index
    return folder


def test_facekeys_video_writes_the_annotated_clip_and_the_csv(fake_model, tmp_path, capsys):
    frames = _write_frames(tmp_path / "frames", fake_model.truth)
    out, table = tmp_path / "out" / "faces.mp4", tmp_path / "faces.csv"
    status = main(["video", str(frames), "--model", "m", "--out", str(out), "--csv", str(table),
                   "--detect-every", "20", "--no-smoothing"])  # fmt: skip
    assert status == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith(f"{out}: 30 frames, 2 faces, ")
    assert summary.endswith(" detector runs, 1 faces lost, 0 bad frames")
    # Frame 0, lost at 10 and searched for at 11, 12 (gone) and 13 (back), then 20 after that.
    assert fake_model.detector_frames == [0, 10, 11, 12, 13]
    assert ", 5 detector runs," in summary

    with table.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:4] == ["frame", "face", "x0", "y0"] and rows[0][-1] == "y67"
    assert [int(r[0]) for r in rows[1:]] == [k for k in range(30) if not 10 <= k < 13]
    assert {r[1] for r in rows[1:11]} == {"0"} and {r[1] for r in rows[11:]} == {"1"}
    points = np.array([float(v) for v in rows[6][2:]]).reshape(68, 2)
    assert np.abs(points - fake_model.truth[5][0]).max() < 2.0

    video = cv2.VideoCapture(str(out))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    assert video.get(cv2.CAP_PROP_FRAME_WIDTH) == 320
    ok, first = video.read()
    face = fake_model.truth[0][0].round().astype(int)
    assert ok and first[face[:, 1], face[:, 0], 1].mean() > 150, "keypoints drawn in green"
    assert [p.name for p in out.parent.iterdir()] == ["faces.mp4"], "no staging file left"


def test_facekeys_video_with_a_filter_places_the_overlay_on_the_followed_face(fake_model, tmp_path):
    """--filter: every frame gets the overlay where the face is (a red bar from eye to eye),
    through the same placement as `facekeys filter`."""
    frames = _write_frames(tmp_path / "frames", fake_model.truth)
    overlay = np.zeros((20, 60, 4), np.uint8)
    overlay[5:15, :] = (0, 0, 255, 255)  # opaque red across, anchors at its two ends
    cv2.imwrite(str(tmp_path / "bar.png"), overlay)
    out = tmp_path / "filtered.mp4"
    bar = str(tmp_path / "bar.png")
    status = main(["video", str(frames), "--model", "m", "--out", str(out), "--filter", bar,
                   "--anchors", "0,10,59,10", "--no-smoothing"])  # fmt: skip
    assert status == 0
    video = cv2.VideoCapture(str(out))
    ok, first = video.read()
    face = fake_model.truth[0][0]
    between_eyes = ((face[36:42].mean(axis=0) + face[42:48].mean(axis=0)) / 2).round().astype(int)
    x, y = between_eyes
    assert ok
    b, g, r = first[y, x].astype(int)
    assert r > 150 and g < 100 and b < 100, "the red bar between the eyes"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_facekeys_video_goes_on_past_bad_frames_and_names_them(fake_model, tmp_path, capsys):
    frames = _write_frames(tmp_path / "frames", fake_model.truth)
    (frames / "f005.png").write_bytes(b"")
    out = tmp_path / "faces.mp4"
    assert main(["video", str(frames), "--model", "m", "--out", str(out)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-2] == f"{frames / 'f005.png'}: image_empty: {frames / 'f005.png'} has zero bytes"
    assert lines[-1].startswith(f"{out}: 29 frames, ") and lines[-1].endswith(", 1 bad frames")


def test_facekeys_video_reports_a_video_without_faces(fake_model, tmp_path, capsys):
    fake_model.truth[:] = [np.zeros((0, 68, 2))] * 30
    frames = _write_frames(tmp_path / "frames", fake_model.truth)
    assert main(["video", str(frames), "--model", "m", "--out", str(tmp_path / "o.mp4")]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-2] == f"{frames}: no face found in any frame"
    assert ", 30 detector runs," in lines[-1] and (tmp_path / "o.mp4").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["97", "--out", "o.mp4"], "camera 97: cannot be opened (no such camera, or it is busy)"),
        (["clip.mp4", "--out", "o.avi"], "o.avi: --out must be an .mp4 file"),
        (["clip.mp4", "--out", "o.mp4", "--csv", "k.txt"], "k.txt: --csv must be a .csv file"),
        (["clip.mp4", "--out", "o.mp4", "--detect-every", "0"],
         "--detect-every: must be >= 1, not 0"),
        (["clip.mp4", "--out", "o.mp4", "--presence-threshold", "2"],
         "--presence-threshold: must lie in [-1, 1], not 2.0"),
        (["clip.mp4", "--out", "clip.mp4"], "clip.mp4: is the input; write somewhere else"),
        (["missing.mp4", "--out", "o.mp4"], "missing.mp4: no such file or folder"),
    ],
)  # fmt: skip
def test_facekeys_video_bad_input_is_one_line(fake_model, tmp_path, monkeypatch, capsys, args,
                                              message):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    write_mp4(tmp_path / "clip.mp4", 3)
    assert main(["video", *args, "--model", "m"]) == 1
    assert capsys.readouterr().err == f"facekeys video: error: {message}\n"
    assert not (tmp_path / "o.mp4").exists()
