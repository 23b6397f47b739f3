"""The Kaggle layout derived from a 68-point set: geometry, partial rows, determinism, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facekeys.data.derive_kaggle15 import (
    PARTIAL_SHARE,
    SKIPPED_CSV,
    crop_square,
    kaggle_points,
    kaggle_row,
    keeps_only_required,
)
from facekeys.data.fetch import fetch_planned
from facekeys.data.keypoint_formats import KAGGLE15, KAGGLE_POINTS, KAGGLE_REQUIRED
from facekeys.data.source_plan import FetchSettings, plan_source
from facekeys.data.validate import validate_csv
from facekeys.errors import FacekeysError
from tests.conftest import HEADER68, write_csv


def face(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """68 points of a frontal face somewhere in the picture (subject's right eye on the left)."""
    template = np.zeros((68, 2))
    template[:17] = np.column_stack(
        [np.linspace(0, 1, 17), 0.6 + 0.4 * np.sin(np.linspace(0, np.pi, 17))]
    )
    template[17:27] = np.column_stack([np.linspace(0.1, 0.9, 10), np.full(10, 0.15)])
    template[27:36] = np.column_stack([np.full(9, 0.5), np.linspace(0.3, 0.6, 9)])
    template[36:42] = np.column_stack([np.linspace(0.2, 0.4, 6), np.full(6, 0.3)])
    template[42:48] = np.column_stack([np.linspace(0.6, 0.8, 6), np.full(6, 0.3)])
    template[48:68] = np.column_stack([np.linspace(0.3, 0.7, 20), np.full(20, 0.8)])
    size = rng.uniform(0.4, 0.7) * min(width, height)
    origin = rng.uniform(0.05, 0.25, 2) * [width, height]
    return (template * size + origin).round(2)


def make_68_set(root: Path, train: int = 24, test: int = 6, seed: int = 0) -> Path:
    """A 68-point set in the fetched layout; images of several sizes, a dot on the nose tip."""
    rng = np.random.default_rng(seed)
    for split, count in (("training", train), ("test", test)):
        (root / split).mkdir(parents=True)
        rows = []
        for i in range(count):
            width, height = int(rng.integers(90, 200)), int(rng.integers(90, 200))
            points = face(rng, width, height)
            image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
            x, y = np.round(points[30]).astype(int)
            image[y - 1 : y + 2, x - 1 : x + 2] = 255
            name = f"{split}_person{i % 5}_{i:02d}.jpg"  # PNG bytes named .jpg, as in the real set
            cv2.imwrite(str(root / split / name) + ".png", image)
            (root / split / (name + ".png")).rename(root / split / name)
            rows.append([name, *(f"{v:g}" for v in points.reshape(-1))])
        write_csv(root / f"{split}_frames_keypoints.csv", HEADER68, rows)
    return root


def derive(tmp_path: Path, source68: Path, out: str = "kaggle-15", raw: Path | None = None):
    sources = {"youtube-faces-68": str(source68), "kaggle-15": "derived:youtube-faces-68"}
    plan = plan_source("kaggle-15", sources, FetchSettings(), environ={})
    raw = raw or tmp_path / "raw"
    return fetch_planned(plan, raw / out, FetchSettings(), raw, raw / f"{out}.source.json")


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def test_kaggle_points_follow_the_published_mapping():
    points = np.arange(136, dtype=float).reshape(68, 2)
    mapped = dict(zip(KAGGLE_POINTS, kaggle_points(points), strict=True))
    np.testing.assert_allclose(mapped["left_eye_center"], points[42:48].mean(axis=0))
    np.testing.assert_allclose(mapped["right_eye_center"], points[36:42].mean(axis=0))
    np.testing.assert_allclose(mapped["left_eye_outer_corner"], points[45])
    np.testing.assert_allclose(mapped["right_eyebrow_outer_end"], points[17])
    np.testing.assert_allclose(mapped["mouth_left_corner"], points[54])
    np.testing.assert_allclose(mapped["mouth_center_bottom_lip"], points[57])


def test_the_crop_is_square_around_the_points_with_a_quarter_margin():
    points = np.array([[10.0, 20.0], [50.0, 40.0]] * 34)
    left, top, side = crop_square(points)
    assert side == pytest.approx(40 * 1.25)
    assert (left + side / 2, top + side / 2) == pytest.approx((30.0, 30.0))


def test_a_crop_puts_the_pixels_under_their_points():
    rng = np.random.default_rng(3)
    points = face(rng, 160, 120)
    image = np.zeros((120, 160), np.uint8)
    x, y = np.round(points[30]).astype(int)
    image[y - 1 : y + 2, x - 1 : x + 2] = 255
    crop, kaggle = kaggle_row(image, points)
    assert crop.shape == (96, 96) and crop.dtype == np.uint8
    left, top, side = crop_square(points)
    dot = (np.array([x, y]) - [left, top]) * 96 / side  # where the dot's centre must land
    ys, xs = np.mgrid[0:96, 0:96]
    weights = crop.astype(float)
    centroid = np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()
    assert np.abs(centroid - dot).max() < 0.5, (centroid, dot)
    nose = kaggle[KAGGLE_POINTS.index("nose_tip")]
    assert np.abs(nose - (points[30] - [left, top]) * 96 / side).max() < 1e-9


def test_the_partial_share_is_about_sixty_percent_and_stable():
    names = [f"person{i}_{j}.jpg" for i in range(100) for j in range(20)]
    share = np.mean([keeps_only_required(n) < PARTIAL_SHARE for n in names])
    assert abs(share - PARTIAL_SHARE) < 0.03
    assert keeps_only_required("a.jpg") == keeps_only_required("a.jpg")


def test_derived_csvs_validate_cleanly_and_are_deterministic(tmp_path):
    source = make_68_set(tmp_path / "yt")
    manifest = derive(tmp_path, source)
    out = tmp_path / "raw" / "kaggle-15"
    assert manifest["source"] == "derived:youtube-faces-68"
    _, source_rows = read_rows(source / "training_frames_keypoints.csv")
    partial_rows = sum(keeps_only_required(row[0]) < PARTIAL_SHARE for row in source_rows)
    assert 0 < partial_rows < 24
    assert manifest["derived_rows"]["training"] == {
        "rows": 24,
        "partial": partial_rows,
        "skipped": 0,
    }
    assert manifest["derived_from"]["dataset"] == "youtube-faces-68"
    for split, rows in (("training", 24), ("test", 6)):
        report = validate_csv(KAGGLE15, out / f"{split}.csv", tmp_path / "validated" / split)
        assert (report["rows_valid"], report["rows_quarantined"]) == (rows, 0)
    header, training = read_rows(out / "training.csv")
    assert header == [*KAGGLE15.coordinate_columns(), "Image"]
    required = {f"{p}_{axis}" for p in KAGGLE_REQUIRED for axis in "xy"}
    partial = [row for row in training if "" in row]
    for row in partial:  # exactly Kaggle's four points survive
        assert {c for c, v in zip(header, row, strict=True) if v and c != "Image"} == required
    assert all("" not in row for row in read_rows(out / "test.csv")[1])
    # Again, this time reusing a fetched 68-point folder instead of fetching the source itself.
    raw2 = tmp_path / "raw2"
    yt = plan_source("youtube-faces-68", {"youtube-faces-68": str(source)}, environ={})
    fetch_planned(
        yt, raw2 / "youtube-faces-68", FetchSettings(), raw2, raw2 / "youtube-faces-68.source.json"
    )
    derive(tmp_path, source, raw=raw2)
    for name in ("training.csv", "test.csv"):
        assert (raw2 / "kaggle-15" / name).read_bytes() == (out / name).read_bytes()
    record = json.loads((tmp_path / "raw" / "kaggle-15.source.json").read_text())
    assert record["fingerprint"]["kind"] == "derived"
    assert record["fingerprint"]["source"] == str(source)


def test_unusable_rows_are_listed_with_their_reason_not_dropped(tmp_path):
    source = make_68_set(tmp_path / "yt", train=6, test=3)
    csv_path = source / "training_frames_keypoints.csv"
    header, rows = read_rows(csv_path)
    (source / "training" / rows[1][0]).write_bytes(b"not an image")
    rows[2][5] = "abc"
    rows[3][1] = "1e308"  # one point far outside: no face to crop
    write_csv(csv_path, header, rows)
    manifest = derive(tmp_path, source)
    assert manifest["derived_rows"]["training"]["rows"] == 3
    assert manifest["derived_rows"]["training"]["skipped"] == 3
    _, skipped = read_rows(tmp_path / "raw" / "kaggle-15" / SKIPPED_CSV)
    assert [(s[0], s[1], s[2]) for s in skipped] == [
        ("training", "3", rows[1][0]),
        ("training", "4", rows[2][0]),
        ("training", "5", rows[3][0]),
    ]
    assert "image_unsupported_format" in skipped[0][3] and "not a number" in skipped[1][3]
    assert "far outside" in skipped[2][3]


def test_a_68_point_csv_of_another_layout_is_refused_in_one_line(tmp_path):
    source = make_68_set(tmp_path / "yt", train=2, test=2)
    csv_path = source / "test_frames_keypoints.csv"
    _, rows = read_rows(csv_path)
    write_csv(csv_path, ["name", *(f"c{i}" for i in range(136))], rows)
    with pytest.raises(FacekeysError, match=r"test_frames_keypoints.csv: not the 68-point layout"):
        derive(tmp_path, source)
    assert not (tmp_path / "raw" / "kaggle-15").exists()


def test_a_missing_68_point_source_names_its_setting_and_writes_nothing(tmp_path):
    with pytest.raises(FacekeysError, match=r"fetch.sources.youtube-faces-68.*does not exist"):
        derive(tmp_path, tmp_path / "nowhere")
    assert not (tmp_path / "raw" / "kaggle-15").exists()
    assert not list((tmp_path / "raw").glob(".*")), "temporary folders left behind"


def test_derived_sources_only_where_the_layout_allows_them():
    sources = {"youtube-faces-68": "derived:kaggle-15"}
    with pytest.raises(FacekeysError, match=r"fetch.sources.youtube-faces-68 in params.yaml"):
        plan_source("youtube-faces-68", sources, environ={})
    env = {"FACEKEYS_SOURCE_KAGGLE_15": "derived:kaggle-15"}
    with pytest.raises(FacekeysError, match=r"^FACEKEYS_SOURCE_KAGGLE_15: .*derived:youtube"):
        plan_source("kaggle-15", {"kaggle-15": "x.zip"}, environ=env)
