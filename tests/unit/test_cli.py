"""The command line as a user meets it: help, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, face_points_68, png_bytes, row68

FACEKEYS = [sys.executable, "-m", "facekeys.cli"]


def facekeys(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FACEKEYS, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", [[], ["fetch"], ["validate"]])
def test_help(command):
    result = facekeys(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: facekeys")
    assert "facekeys" in result.stdout and len(result.stdout.splitlines()) > 5


def test_predict_help_says_which_images_and_which_pixels():
    from facekeys.data.photos import MIN_FACE_SIDE

    help_text = " ".join(facekeys("predict", "--help").stdout.split())
    assert "JPEG, PNG, WebP, BMP or TIFF, recognised by content" in help_text
    assert "its points are in the upright picture's pixels" in help_text
    assert f"An image under {MIN_FACE_SIDE} px on a side" in help_text
    assert "image_too_small" in help_text


def test_validate_usable_exit_0(tiny68, tmp_path):
    csv_path, images = tiny68()
    result = facekeys(
        "validate",
        "--format",
        "youtube68",
        "--csv",
        str(csv_path),
        "--images",
        str(images),
        "--out",
        str(tmp_path / "out"),
        "--no-data-docs",
    )
    assert result.returncode == 0, result.stderr
    assert "3 rows: 3 valid, 0 quarantined" in result.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["usable"] is True


def test_validate_quarantine_lines_name_file_and_row(tiny68, tmp_path):
    rows = [row68(n, face_points_68()) for n in ("a.png", "b.png", "c.png", "gone.png")]
    csv_path, images = tiny68(
        rows=rows, images={n: png_bytes() for n in ("a.png", "b.png", "c.png")}
    )
    result = facekeys(
        "validate",
        "--format",
        "youtube68",
        "--csv",
        str(csv_path),
        "--images",
        str(images),
        "--out",
        str(tmp_path / "out"),
        "--no-data-docs",
        "--max-quarantine-fraction",
        "0.5",
    )
    assert result.returncode == 0
    assert f"{csv_path}: row 4 (line 5): image_missing:" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b",0,1\n", "has a header but no data rows"),
        (b"\x00\x01\x02garbage" * 50, "binary content"),
        (b"a,b\n1,2\n", "wrong schema for youtube68"),
    ],
)
def test_validate_unusable_one_line_exit_1(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    (tmp_path / "img").mkdir()
    result = facekeys(
        "validate",
        "--format",
        "youtube68",
        "--csv",
        str(path),
        "--images",
        str(tmp_path / "img"),
        "--out",
        str(tmp_path / "out"),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"facekeys validate: error: {path}: ") and message in line


def test_validate_too_many_quarantined_exit_1(tiny68, tmp_path):
    rows = [row68(n, face_points_68()) for n in ("a.png", "gone1.png", "gone2.png")]
    csv_path, images = tiny68(rows=rows, images={"a.png": png_bytes()})
    result = facekeys(
        "validate",
        "--format",
        "youtube68",
        "--csv",
        str(csv_path),
        "--images",
        str(images),
        "--out",
        str(tmp_path / "out"),
        "--no-data-docs",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"facekeys validate: error: {csv_path}: 2 of 3 rows quarantined (66.7%)")
    )


def test_fetch_missing_source_one_line(tmp_path):
    result = facekeys(
        "fetch", "kaggle-15", "--source", str(tmp_path / "no"), "--out", str(tmp_path / "o")
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("facekeys fetch: error: ") and "does not exist" in line


def test_missing_images_option(tiny68, tmp_path):
    csv_path, _ = tiny68()
    result = facekeys(
        "validate", "--format", "youtube68", "--csv", str(csv_path), "--out", str(tmp_path / "o")
    )
    assert result.returncode == 1 and "needs --images DIR" in result.stderr


def test_predict_registered_model_outside_the_project_creates_nothing(tmp_path):
    """No MLflow store here: one line saying so, and no empty mlflow.db left in the folder."""
    (tmp_path / "face.png").write_bytes(png_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run(
        [*FACEKEYS, "predict", "face.png", "--model", "models:/facekeys-x@champion",
         "--out", "p.csv"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        f"facekeys predict: error: models:/facekeys-x@champion: no MLflow store at "
        f"{tmp_path.resolve() / 'mlflow.db'} (run in the project folder, or set "
        "MLFLOW_TRACKING_URI)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.png"]


def test_predict_output_under_a_file_is_one_line_without_traceback(tmp_path):
    (tmp_path / "face.png").write_bytes(png_bytes())
    (tmp_path / "out").write_text("a file")
    result = facekeys(
        "predict", str(tmp_path / "face.png"), "--model", str(tmp_path / "m"),
        "--out", str(tmp_path / "out" / "p.csv"),
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        f"facekeys predict: error: {tmp_path / 'out' / 'p.csv'}: cannot write: "
        f"{tmp_path / 'out'} is a file, not a folder\n"
    )
