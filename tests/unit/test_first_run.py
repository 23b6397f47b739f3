"""A new user's first run: a fresh clone, no FACEKEYS_SOURCE_*, no Kaggle account.

`scripts/pipeline` must complete: the 68-point set comes from its URL (here a local HTTP server
that serves a tiny zip in the CVND layout) and kaggle-15 is derived from it. The same workspace
then checks every stage's outputs and that DVC reruns only what a change makes stale.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.tinyproject import dvc, make_sources, tiny_params

pytestmark = pytest.mark.slow


def fresh_clone(dest: Path) -> Path:
    """The project's files as a clone has them (tracked and new, never ignored ones), committed."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = REPO / name
        if source.is_file() and not name.startswith(("tests/", "bench/")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    # The installed environment, not a second two-minute install: scripts/setup sees its stamp.
    # A stale stamp would make it reinstall the shared .venv from the clone: refuse instead.
    files = (REPO / "pyproject.toml", REPO / "requirements" / "constraints.txt")
    wanted = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    venv = Path(sys.prefix)  # the environment running these tests (scripts/setup's .venv)
    stamp = venv / ".facekeys-stamp"
    if not stamp.is_file() or stamp.read_text().strip() != wanted:
        pytest.fail(f"{venv} is older than pyproject.toml or the constraints: run scripts/setup")
    (dest / ".venv").symlink_to(venv)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.name", "facekeys tests"],
        ["git", "config", "user.email", "tests@facekeys.invalid"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "clone"],
    ):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(900)
def test_scripts_pipeline_completes_from_a_fresh_clone_without_kaggle_access(tmp_path):
    youtube = Path(make_sources(tmp_path / "sources")["FACEKEYS_SOURCE_YOUTUBE_FACES_68"])
    site = tmp_path / "site"
    site.mkdir()
    with zipfile.ZipFile(site / "train-test-data.zip", "w") as zf:
        for path in sorted(youtube.rglob("*")):
            if path.is_file():
                zf.write(path, "data/" + path.relative_to(youtube).as_posix())
    clone = fresh_clone(tmp_path / "clone")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FACEKEYS_SOURCE_", "KAGGLE_", "MLFLOW_", "PREFECT_"))
    }
    env.update(
        HOME=str(tmp_path / "home"),  # no ~/.kaggle/kaggle.json there
        PYTHONPATH=str(clone),  # the clone's code, not the checkout the venv was installed from
        DVC_NO_ANALYTICS="1",
    )
    with serving(site) as base:
        params = tiny_params()
        params["fetch"]["sources"]["youtube-faces-68"] = f"{base}/train-test-data.zip"
        shipped = yaml.safe_load((REPO / "params.yaml").read_text())
        assert params["fetch"]["sources"]["kaggle-15"] == shipped["fetch"]["sources"]["kaggle-15"]
        (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run = subprocess.run(
            ["bash", "scripts/pipeline"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=850,
        )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert (
        "kaggle-15: no Kaggle credentials found, so it is derived from youtube-faces-68" in output
    )
    manifest = json.loads((clone / "data/raw/kaggle-15/manifest.json").read_text())
    assert manifest["source"] == "derived:youtube-faces-68"
    assert manifest["derived_from"]["source"] == f"{base}/train-test-data.zip"
    card = json.loads((clone / "models/kaggle-15/model.json").read_text())
    assert card["data_source"]["source"] == "derived:youtube-faces-68"
    import mlflow

    store = f"sqlite:///{clone / 'mlflow.db'}"
    client = mlflow.MlflowClient(store, store)
    runs = client.search_runs(
        [client.get_experiment_by_name("facekeys-kaggle-15").experiment_id],
        filter_string="tags.`data.source` = 'derived:youtube-faces-68'",
    )
    assert runs, "the MLflow run does not record the derived source"
    check_outputs_and_staleness(
        clone, {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    )


def check_outputs_and_staleness(work: Path, env: dict[str, str]) -> None:
    """Every stage's outputs are there; a rerun runs nothing; a param change reruns only the
    stages that read it."""
    for dataset, rows in (("youtube-faces-68", 4), ("kaggle-15", 4)):
        metrics = json.loads((work / "metrics" / dataset / "validate.json").read_text())
        # The tiny set's four faces are one picture: kaggle-15 flags its crops as duplicates.
        flagged = 0 if dataset == "youtube-faces-68" else rows
        assert metrics["training"] == {
            "rows_total": rows,
            "rows_valid": rows,
            "rows_quarantined": 0,
            "rows_flagged": flagged,
        }
        for split in ("training", "test"):
            out = work / "data" / "validated" / dataset / split
            assert (out / "valid.csv").is_file() and (out / "data_docs" / "index.html").is_file()
    assert (work / "data/raw/kaggle-15/manifest.json").is_file()
    for dataset in ("youtube-faces-68", "kaggle-15"):
        meta = json.loads((work / "data/augmented" / dataset / "meta.json").read_text())
        rows = meta["counts"]["source_rows"]
        assert rows["train"] + rows["val"] + rows["new_people"] == 4
        # Kaggle rows name no people: no new-people split.
        assert (rows["new_people"] > 0) == (dataset == "youtube-faces-68")
        assert meta["counts"]["samples"]["train"] == rows["train"] * 5  # 4 copies + original
        assert (work / "data/augmented" / dataset / "preview.png").is_file()
        train = json.loads((work / "metrics" / dataset / "train.json").read_text())
        assert train["epochs_run"] == 2 and train["run_id"]
        assert (work / "models" / dataset / "model.pt").is_file()
        refined = dataset == "youtube-faces-68"  # augment.refine is null for kaggle-15
        assert (work / "models" / dataset / "refine" / "model.pt").is_file() == refined
        assert ("refine" in train) == refined
        report = json.loads((work / "metrics" / dataset / "eval.json").read_text())
        assert report["test"]["images"] == 4
        assert report["test_mean_shape_baseline"]["images"] == report["test"]["images"]
        assert report["selection"]["images"] == rows["val"]
        assert report.get("new_people", {}).get("images", 0) == rows["new_people"]
        assert set(report["splits"]) == {"test", "selection"} | (
            {"new_people"} if rows["new_people"] else set()
        )
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

    # Back to the first params: DVC restores train and evaluate from its run cache, but runs
    # register again (its uncached log output turns the run cache off there), and the registry
    # reuses the version that already holds that model instead of adding a duplicate.
    (work / "params.yaml").write_text(
        (work / "params.yaml").read_text().replace("    kaggle-15: 64", "    kaggle-15: 96")
    )
    fifth = dvc(work, env, "repro")
    assert fifth.returncode == 0, fifth.stderr[-3000:]
    assert "Running stage 'register@kaggle-15'" in fifth.stdout
    assert "Running stage 'train@kaggle-15'" not in fifth.stdout
    registered = json.loads((work / "metrics/kaggle-15/register.json").read_text())
    assert registered["version"] == 1, registered
