"""Every validation rule of the 68-point format, on tiny generated data."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from facekeys.data.keypoint_formats import YOUTUBE68
from facekeys.data.validate import ValidationSettings, validate_csv
from facekeys.errors import DataUnusableError
from tests.conftest import HEADER68, face_points_68, jpeg_bytes, png_bytes, row68, write_csv

LENIENT = ValidationSettings(max_quarantine_fraction=1.0, data_docs=False)


def run(csv_path: Path, images: Path, out: Path, settings: ValidationSettings = LENIENT) -> dict:
    return validate_csv(YOUTUBE68, csv_path, out, images_dir=images, settings=settings)


def quarantine(out: Path) -> dict[str, str]:
    """Quarantined image name -> reasons."""
    with open(out / "quarantine.csv", newline="", encoding="utf-8") as handle:
        return {r[""]: r["reasons"] for r in csv.DictReader(handle)}


def valid_names(out: Path) -> list[str]:
    with open(out / "valid.csv", newline="", encoding="utf-8") as handle:
        return [r[0] for r in list(csv.reader(handle))[1:]]


def test_good_rows_pass_with_outputs(tiny68, tmp_path):
    csv_path, images = tiny68()
    report = validate_csv(
        YOUTUBE68, csv_path, tmp_path / "out", images_dir=images, settings=ValidationSettings()
    )
    out = tmp_path / "out"
    assert report["rows_total"] == 3 and report["rows_valid"] == 3
    assert valid_names(out) == ["a.png", "b.png", "c.png"]
    assert (out / "data_docs" / "index.html").stat().st_size > 0
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["rows_total"] == on_disk["rows_valid"] + on_disk["rows_quarantined"]
    # Valid rows keep their original text, not a re-formatted float.
    assert (out / "valid.csv").read_text().splitlines()[1] == ",".join(
        row68("a.png", face_points_68())
    )


def bad_case(tiny68, tmp_path, row: list[str], images: dict[str, bytes] | None = None) -> str:
    """Validates two good rows plus ``row``; returns the reasons of the one quarantined row."""
    good = [row68(n, face_points_68()) for n in ("a.png", "b.png")]
    imgs = {"a.png": png_bytes(), "b.png": png_bytes()}
    imgs.update(images or {})
    csv_path, folder = tiny68(rows=[*good, row], images=imgs)
    report = run(csv_path, folder, tmp_path / "out")
    assert report["rows_total"] == 3
    assert report["rows_valid"] + report["rows_quarantined"] == 3
    assert report["rows_quarantined"] == 1, report
    assert valid_names(tmp_path / "out") == ["a.png", "b.png"]
    with open(tmp_path / "out" / "quarantine.csv", newline="", encoding="utf-8") as handle:
        (q,) = list(csv.DictReader(handle))
    assert q["row"] == "3"
    return q["reasons"]


def test_wrong_column_count(tiny68, tmp_path):
    row = row68("x.png", face_points_68())[:-1]
    reasons = bad_case(tiny68, tmp_path, row, {"x.png": png_bytes()})
    assert reasons.startswith("wrong_column_count: 136 fields, expected 137")


def test_extra_fields_kept_in_quarantine(tiny68, tmp_path):
    row = [*row68("x.png", face_points_68()), "surplus"]
    bad_case(tiny68, tmp_path, row, {"x.png": png_bytes()})
    with open(tmp_path / "out" / "quarantine.csv", newline="", encoding="utf-8") as handle:
        (q,) = list(csv.DictReader(handle))
    assert q["extra_fields"] == "surplus"


def test_non_numeric_cell(tiny68, tmp_path):
    row = row68("x.png", face_points_68())
    row[5] = "abc"
    reasons = bad_case(tiny68, tmp_path, row, {"x.png": png_bytes()})
    assert "non_numeric_coordinate: x2 = 'abc'" in reasons


@pytest.mark.parametrize("cell", ["", "nan", "inf"])
def test_blank_or_non_finite_cell(tiny68, tmp_path, cell):
    row = row68("x.png", face_points_68())
    row[8] = cell
    reasons = bad_case(tiny68, tmp_path, row, {"x.png": png_bytes()})
    assert (
        "missing_required_point: point 3" if cell == "" else "non_numeric_coordinate"
    ) in reasons


@pytest.mark.parametrize("xy", [(-500.0, 40.0), (40.0, -60.0), (900.0, 40.0), (40.0, 400.0)])
def test_far_outside_image(tiny68, tmp_path, xy):
    pts = face_points_68()
    pts[10] = xy
    reasons = bad_case(tiny68, tmp_path, row68("x.png", pts), {"x.png": png_bytes()})
    assert reasons.startswith("point_far_outside_image: point 10")


def test_slightly_outside_is_kept_and_flagged(tiny68, tmp_path):
    pts = face_points_68()
    pts[0] = (-4.0, 50.0)
    pts[16] = (103.5, 50.0)
    rows = [row68("a.png", face_points_68()), row68("x.png", pts)]
    csv_path, folder = tiny68(rows=rows, images={"a.png": png_bytes(), "x.png": png_bytes()})
    report = run(csv_path, folder, tmp_path / "out")
    assert report["rows_valid"] == 2 and report["rows_flagged"] == 1
    assert report["flags"] == {"point_slightly_outside_image": 1}
    assert "x.png" in (tmp_path / "out" / "flagged.csv").read_text()


def test_duplicate_names(tiny68, tmp_path):
    rows = [row68(n, face_points_68()) for n in ("a.png", "b.png", "a.png")]
    csv_path, folder = tiny68(rows=rows)
    report = run(csv_path, folder, tmp_path / "out")
    # Two rows claim one image: neither label can be trusted over the other.
    assert report["quarantine_reasons"] == {"duplicate_name": 2}
    assert valid_names(tmp_path / "out") == ["b.png"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (None, "image_missing"),
        (b"", "image_empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "image_corrupt"),
        (png_bytes()[:300], "image_corrupt"),
        (b"GIF89a" + b"\x00" * 100, "image_unsupported_format"),
    ],
)
def test_image_problems(tiny68, tmp_path, data, code):
    images = {} if data is None else {"x.png": data}
    reasons = bad_case(tiny68, tmp_path, row68("x.png", face_points_68()), images)
    assert reasons.startswith(code + ":"), reasons


def huge_header_png() -> bytes:
    """A valid PNG whose IHDR claims 60000x60000: must be refused without decoding."""
    data = bytearray(png_bytes(10, 10, 1))
    data[16:24] = (60000).to_bytes(4, "big") * 2
    return bytes(data)


def test_huge_header_png_refused_before_decoding(tiny68, tmp_path):
    reasons = bad_case(
        tiny68, tmp_path, row68("x.png", face_points_68()), {"x.png": huge_header_png()}
    )
    assert reasons.startswith("image_too_large: PNG header claims 60000x60000")


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../outside.png", "image_path_unsafe"),
        ("sub/../../outside.png", "image_path_unsafe"),
        ("/etc/passwd", "image_path_unsafe"),
        ("..\\outside.png", "image_path_unsafe"),
        ("", "image_name_empty"),
    ],
)
def test_path_escapes_refused(tiny68, tmp_path, name, code):
    (tmp_path / "outside.png").write_bytes(png_bytes())
    reasons = bad_case(tiny68, tmp_path, row68(name, face_points_68()))
    assert reasons.startswith(code + ":"), reasons


def test_symlink_out_of_folder_refused(tiny68, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    csv_path, folder = tiny68()
    os.symlink(secret, folder / "link.png")
    good = [row68(n, face_points_68()) for n in ("a.png", "b.png")]
    write_csv(csv_path, HEADER68, [*good, row68("link.png", face_points_68())])
    run(csv_path, folder, tmp_path / "out")
    assert quarantine(tmp_path / "out")["link.png"].startswith("image_path_escapes_folder")


def test_symlink_inside_folder_accepted(tiny68, tmp_path):
    csv_path, folder = tiny68()
    os.symlink(folder / "a.png", folder / "alias.png")
    write_csv(csv_path, HEADER68, [row68("alias.png", face_points_68())])
    assert run(csv_path, folder, tmp_path / "out")["rows_valid"] == 1


def test_mirrored_labels(tiny68, tmp_path):
    pts = face_points_68()
    pts[[36, 45]] = pts[[45, 36]]
    reasons = bad_case(tiny68, tmp_path, row68("x.png", pts), {"x.png": png_bytes()})
    assert reasons.startswith("mirrored_labels: point 36")


def test_collapsed_points(tiny68, tmp_path):
    pts = np.full((68, 2), 50.0)
    reasons = bad_case(tiny68, tmp_path, row68("x.png", pts), {"x.png": png_bytes()})
    assert "collapsed_points" in reasons and "zero_eye_distance" in reasons


def test_zero_eye_distance(tiny68, tmp_path):
    pts = face_points_68()
    pts[45] = pts[36]
    reasons = bad_case(tiny68, tmp_path, row68("x.png", pts), {"x.png": png_bytes()})
    assert reasons.startswith("zero_eye_distance: point 36 and point 45 are 0.00 px apart")


@pytest.mark.parametrize(
    "image",
    [png_bytes(channels=1), png_bytes(channels=3), png_bytes(channels=4), png_bytes(depth=16)],
    ids=["gray", "rgb", "rgba", "gray16"],
)
def test_accepted_png_kinds(tiny68, tmp_path, image):
    csv_path, folder = tiny68(rows=[row68("x.jpg", face_points_68())], images={"x.jpg": image})
    assert run(csv_path, folder, tmp_path / "out")["rows_valid"] == 1


def test_real_jpeg_and_non_ascii_name(tiny68, tmp_path):
    rows = [
        row68("Zoë_Ñúñez_01.jpg", face_points_68()),
        row68("sub/フレーム.png", face_points_68()),
    ]
    images = {"Zoë_Ñúñez_01.jpg": jpeg_bytes(), "sub/フレーム.png": png_bytes()}
    csv_path, folder = tiny68(rows=rows, images=images)
    report = run(csv_path, folder, tmp_path / "out")
    assert report["rows_valid"] == 2, report
    assert valid_names(tmp_path / "out") == ["Zoë_Ñúñez_01.jpg", "sub/フレーム.png"]


def test_crlf_and_bom_accepted(tiny68, tmp_path):
    csv_path, folder = tiny68()
    rows = [row68(n, face_points_68()) for n in ("a.png", "b.png", "c.png")]
    write_csv(csv_path, HEADER68, rows, encoding="utf-8-sig", lineterminator="\r\n")
    assert csv_path.read_bytes().startswith(b"\xef\xbb\xbf")
    report = run(csv_path, folder, tmp_path / "out")
    assert report["rows_valid"] == 3


def test_named_xy_header_accepted(tiny68, tmp_path):
    csv_path, folder = tiny68()
    header = ["name", *(f"{a}{i}" for i in range(68) for a in "xy")]
    write_csv(csv_path, header, [row68("a.png", face_points_68())])
    assert run(csv_path, folder, tmp_path / "out")["rows_valid"] == 1


def test_mixed_header_naming_is_unusable(tiny68, tmp_path):
    csv_path, folder = tiny68()
    # Every column valid in one naming or the other: x0, 1, x1, 3, ...
    header = ["name", *(str(i) if i % 2 else f"x{i // 2}" for i in range(136))]
    write_csv(csv_path, header, [row68("a.png", face_points_68())])
    with pytest.raises(DataUnusableError, match=r"mix 0\.\.135 and x0,y0"):
        run(csv_path, folder, tmp_path / "out")


def test_wrong_schema_is_unusable(tiny68, tmp_path):
    csv_path, folder = tiny68()
    write_csv(csv_path, ["name", "x", "y"], [["a.png", "1", "2"]])
    with pytest.raises(DataUnusableError, match=r"keypoints.csv: wrong schema .* found 3"):
        run(csv_path, folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_too_many_quarantined_is_unusable_but_reported(tiny68, tmp_path):
    rows = [row68(n, face_points_68()) for n in ("a.png", "b.png", "gone.png")]
    csv_path, folder = tiny68(rows=rows, images={"a.png": png_bytes(), "b.png": png_bytes()})
    settings = ValidationSettings(max_quarantine_fraction=0.2, data_docs=False)
    with pytest.raises(DataUnusableError, match=r"1 of 3 rows quarantined \(33.3%\)"):
        run(csv_path, folder, tmp_path / "out", settings)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["usable"] is False and report["rows_quarantined"] == 1


def test_every_row_accounted_for_with_many_problems(tiny68, tmp_path):
    pts = face_points_68()
    mirrored = pts.copy()
    mirrored[[36, 45]] = mirrored[[45, 36]]
    rows = [
        row68("a.png", pts),
        row68("a.png", pts),
        row68("m.png", mirrored),
        row68("gone.png", pts),
        ["short.png", "1"],
        row68("b.png", pts),
    ]
    csv_path, folder = tiny68(
        rows=rows, images={"a.png": png_bytes(), "m.png": png_bytes(), "b.png": png_bytes()}
    )
    report = run(csv_path, folder, tmp_path / "out")
    assert report["rows_total"] == 6
    assert report["rows_valid"] == 1 and report["rows_quarantined"] == 5
    with open(tmp_path / "out" / "quarantine.csv", newline="", encoding="utf-8") as handle:
        assert [r["row"] for r in csv.DictReader(handle)] == ["1", "2", "3", "4", "5"]
