"""Unusable data stops `dvc repro` with one line (the end-to-end run: test_first_run.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tinyproject import dvc, make_project

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return make_project(tmp_path)


def test_unusable_data_stops_the_pipeline_with_one_line(project):
    work, env = project
    yt = Path(env["FACEKEYS_SOURCE_YOUTUBE_FACES_68"])
    (yt / "test_frames_keypoints.csv").write_text("name,x,y\na.jpg,1,2\n")
    result = dvc(work, env, "repro", "validate@youtube-faces-68")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert (
        "stage validate: error: data/raw/youtube-faces-68/test_frames_keypoints.csv: "
        "wrong schema for youtube68: expected 137 columns" in output
    )
