"""`dvc repro` end to end on tiny generated data, in a temporary copy of the project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tinyproject import make_project

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return make_project(tmp_path)


def dvc(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_repro_end_to_end_and_stale_only(project):
    work, env = project
    first = dvc(work, env, "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    for dataset, rows in (("youtube-faces-68", 4), ("kaggle-15", 3)):
        metrics = json.loads((work / "metrics" / dataset / "validate.json").read_text())
        assert metrics["training"] == {
            "rows_total": rows,
            "rows_valid": rows,
            "rows_quarantined": 0,
            "rows_flagged": 0,
        }
        for split in ("training", "test"):
            out = work / "data" / "validated" / dataset / split
            assert (out / "valid.csv").is_file() and (out / "data_docs" / "index.html").is_file()
    assert (work / "data/raw/kaggle-15/manifest.json").is_file()
    for dataset in ("youtube-faces-68", "kaggle-15"):
        meta = json.loads((work / "data/augmented" / dataset / "meta.json").read_text())
        rows = meta["counts"]["source_rows"]
        assert rows["train"] + rows["val"] == (4 if dataset == "youtube-faces-68" else 3)
        assert meta["counts"]["samples"]["train"] == rows["train"] * 5  # 4 copies + original
        assert (work / "data/augmented" / dataset / "preview.png").is_file()
        train = json.loads((work / "metrics" / dataset / "train.json").read_text())
        assert train["epochs_run"] == 2 and train["run_id"]
        assert (work / "models" / dataset / "model.pt").is_file()
        refined = dataset == "youtube-faces-68"  # augment.refine is null for kaggle-15
        assert (work / "models" / dataset / "refine" / "model.pt").is_file() == refined
        assert ("refine" in train) == refined
        report = json.loads((work / "metrics" / dataset / "eval.json").read_text())
        assert report["test"]["images"] == (4 if dataset == "youtube-faces-68" else 3)
        assert report["test_mean_shape_baseline"]["images"] == report["test"]["images"]
        assert report["val_new_people"]["images"] == rows["val"]
        assert report["refinement_model"] == refined
        for plot in ("eval_ced.csv", "eval_landmarks.csv", "eval_errors.png", "eval_gallery.png"):
            assert (work / "metrics" / dataset / plot).is_file()
        export = json.loads((work / "models" / dataset / "export" / "model.json").read_text())
        assert len(export["networks"]) == (2 if refined else 1)
        registered = json.loads((work / "metrics" / dataset / "register.json").read_text())
        assert (registered["version"], registered["alias"]) == (1, "champion")
        assert registered["load_with"] == f"models:/facekeys-{dataset}@champion"
    assert (work / "mlflow.db").is_file()
    assert not (work / "checkpoints").exists() or not any((work / "checkpoints").rglob("*.pt"))

    again = dvc(work, env, "repro")
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout

    params = (work / "params.yaml").read_text()
    (work / "params.yaml").write_text(
        params.replace("max_quarantine_fraction: 0.1", "max_quarantine_fraction: 0.2")
    )
    third = dvc(work, env, "repro")
    assert third.returncode == 0, third.stderr
    ran = {line.split("'")[1] for line in third.stdout.splitlines() if "Running stage" in line}
    # Same valid rows, so augmentation is not redone.
    assert ran == {"validate@youtube-faces-68", "validate@kaggle-15"}

    (work / "params.yaml").write_text(
        (work / "params.yaml").read_text().replace("    kaggle-15: 96", "    kaggle-15: 64")
    )
    fourth = dvc(work, env, "repro")
    ran = {line.split("'")[1] for line in fourth.stdout.splitlines() if "Running stage" in line}
    assert ran == {
        f"{stage}@kaggle-15" for stage in ("augment", "train", "evaluate", "export", "register")
    }
    registered = json.loads((work / "metrics/kaggle-15/register.json").read_text())
    assert registered["version"] == 2 and registered["previous_champion_version"] == 1


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
