"""Faults injected into the real stage scripts of a tiny project: a kill while a model folder is
published, an unreachable tracking server, a full disk, outputs that cannot be written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facekeys.data.atomic_files import sha256_file
from facekeys.errors import FacekeysError
from facekeys.inference.predictor import KeypointPredictor
from tests.tinyproject import dvc, free_port, kill_when, make_project

pytestmark = pytest.mark.slow

YT, KAGGLE = "youtube-faces-68", "kaggle-15"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A tiny project with kaggle-15 trained and evaluated (in its own store) and the 68-point
    set augmented: what each test copies before breaking something."""
    work, env = make_project(tmp_path_factory.mktemp("stage-faults"))
    result = dvc(work, env, "repro", f"evaluate@{KAGGLE}", f"augment@{YT}")
    assert result.returncode == 0, result.stderr[-3000:]
    return work, env


@pytest.fixture
def project(prepared, tmp_path) -> tuple[Path, dict[str, str]]:
    """A copy of the prepared project, its store and its code, that a test may break."""
    source, env = prepared
    work = tmp_path / "project"
    shutil.copytree(source, work, symlinks=True)
    uri = env["MLFLOW_TRACKING_URI"].replace(str(source), str(work))
    return work, {**env, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(work)}


def stage(
    work: Path, env: dict[str, str], name: str, dataset: str, *wrapper: str
) -> subprocess.CompletedProcess:
    """Runs ``stages/<name>.py <dataset>`` in ``work`` (behind ``wrapper``, a ``-c`` script and
    its arguments, where given), as DVC would."""
    command = [sys.executable, *wrapper, f"stages/{name}.py", dataset]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The last line of a failed stage, checked to be its only error and no traceback."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.splitlines()[-1]


def registered_versions(uri: str, name: str) -> list[int]:
    import mlflow

    client = mlflow.MlflowClient(uri, uri)
    return sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))


# Runs a stage script with os.replace patched: right after the refinement network is moved into
# models/<dataset>/refine, it says so in the file argv[1] and waits to be killed.
STOP_AFTER_REFINE = """
import os, runpy, sys, time
from pathlib import Path
ready, refine, real_replace = Path(sys.argv[1]), ("models", sys.argv[3], "refine"), os.replace
def replace(source, target, *args, **kwargs):
    real_replace(source, target, *args, **kwargs)
    if Path(target).parts[-3:] == refine:
        ready.write_text("refine/ published")
        time.sleep(600)
os.replace = replace
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_kill_while_publishing_leaves_a_folder_predict_refuses_and_a_rerun_completes(
    project, tmp_path, capsys
):
    from facekeys.cli import main
    from tests.model.test_predict import photos_with

    work, env = project
    model_dir = work / "models" / YT
    (model_dir / "refine").mkdir(parents=True)
    (model_dir / "model.pt").write_bytes(b"the previous first network")
    shutil.copy(work / "models" / KAGGLE / "model.json", model_dir / "model.json")  # a valid card
    (model_dir / "refine" / "model.pt").write_bytes(b"the previous refinement network")
    ready = tmp_path / "ready"
    command = [sys.executable, "-c", STOP_AFTER_REFINE, str(ready), "stages/train.py", YT]
    output = kill_when(command, work, env, ready)
    assert ready.exists(), f"the stage ended before publishing: {output[-3000:]}"

    # The new refinement network is in place, and no first network at all: never the old one.
    assert not (model_dir / "model.pt").exists()
    published_refine = torch.load(model_dir / "refine" / "model.pt", weights_only=True)
    photos = photos_with(tmp_path / "photos")
    refused = ["predict", str(photos), "--model", str(model_dir), "--out", str(tmp_path / "p.csv")]
    assert main(refused) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"facekeys predict: error: {model_dir}: ")
    assert "model.pt" in err
    with pytest.raises(FacekeysError, match=rf"^{re.escape(str(model_dir / 'model.pt'))}: "):
        KeypointPredictor.from_dir(model_dir)
    assert (work / "checkpoints" / YT).is_dir(), "the checkpoints went before the model was out"

    again = stage(work, env, "train", YT)

    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished for this config; writing its model again") == 2
    assert "epoch 1/" not in again.stderr
    predictor = KeypointPredictor.from_dir(model_dir)
    assert predictor.refine is not None
    assert predictor.card["refine_sha256"] == sha256_file(model_dir / "refine" / "model.pt")
    rebuilt = torch.load(model_dir / "refine" / "model.pt", weights_only=True)
    assert rebuilt.keys() == published_refine.keys()
    assert all(torch.equal(rebuilt[k], published_refine[k]) for k in rebuilt)
    assert not (work / "checkpoints" / YT).exists()
    assert not (work / "models" / f".{YT}.training").exists()


@pytest.mark.parametrize("name", ["evaluate", "register"])
def test_an_unreachable_server_names_the_stages_own_setting(project, name):
    work, env = project
    uri = f"http://127.0.0.1:{free_port()}"
    before = (work / "metrics" / KAGGLE / "eval.json").stat().st_mtime_ns

    result = stage(work, {**env, "MLFLOW_TRACKING_URI": uri}, name, KAGGLE)

    line = one_line_error(result)
    assert line.startswith(f"stage {name}: error: MLflow tracking server {uri} is unreachable (")
    assert line.endswith(f"set {name}.mlflow_required: false to log locally")
    if name == "evaluate":  # found before the model is scored, not after every split
        assert "test: " not in result.stderr
        assert (work / "metrics" / KAGGLE / "eval.json").stat().st_mtime_ns == before


# Runs a stage script with files capped at argv[1] bytes: a write past it fails with EFBIG
# (SIGXFSZ ignored), as a disk that fills up while the stage writes its outputs.
FULL_DISK = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_evaluate_on_a_full_disk_fails_in_one_line_and_leaves_no_half_written_file(project):
    work, env = project
    metrics = work / "metrics" / KAGGLE
    before = {p: p.read_bytes() for p in metrics.rglob("*") if p.is_file()}

    result = stage(work, env, "evaluate", KAGGLE, "-c", FULL_DISK, "1000")

    line = one_line_error(result)
    found = re.fullmatch(r"stage evaluate: error: (\S+): cannot write: File too large", line)
    assert found, line
    failed = work / found[1]
    assert failed.parent == metrics and failed.read_bytes() == before[failed]
    assert not [p.name for p in work.rglob(".*.tmp")]
    after = {p for p in metrics.rglob("*") if p.is_file()}
    assert after == set(before)


def test_train_with_a_file_for_its_metrics_folder_fails_before_any_epoch(project):
    work, env = project
    metrics = work / "metrics" / YT
    shutil.rmtree(metrics)
    metrics.write_text("a file where the metrics folder should be")

    result = stage(work, env, "train", YT)

    assert one_line_error(result) == (
        f"stage train: error: metrics/{YT}/train.json: cannot write: metrics/{YT} is a file, "
        "not a folder"
    )
    assert "epoch " not in result.stderr
    assert not (work / "checkpoints" / YT).exists()
    assert not (work / "models" / f".{YT}.training").exists()
    import mlflow

    store = env["MLFLOW_TRACKING_URI"]
    assert mlflow.MlflowClient(store).get_experiment_by_name(f"facekeys-{YT}") is None


def test_evaluate_with_an_output_blocked_fails_before_scoring(project):
    work, env = project
    headline = work / "metrics" / KAGGLE / "headline"
    shutil.rmtree(headline)
    headline.write_text("a file where the headline folder should be")
    before = (work / "metrics" / KAGGLE / "eval.json").stat().st_mtime_ns

    result = stage(work, env, "evaluate", KAGGLE)

    assert one_line_error(result) == (
        f"stage evaluate: error: metrics/{KAGGLE}/headline/evaluate.json: cannot write: "
        f"metrics/{KAGGLE}/headline is a file, not a folder"
    )
    assert "test: " not in result.stderr
    assert (work / "metrics" / KAGGLE / "eval.json").stat().st_mtime_ns == before


def test_register_with_an_output_blocked_fails_before_registering(project):
    work, env = project
    headline = work / "metrics" / KAGGLE / "headline"
    shutil.rmtree(headline)
    headline.write_text("a file where the headline folder should be")

    result = stage(work, env, "register", KAGGLE)

    assert one_line_error(result) == (
        f"stage register: error: metrics/{KAGGLE}/headline/register.json: cannot write: "
        f"metrics/{KAGGLE}/headline is a file, not a folder"
    )
    assert registered_versions(env["MLFLOW_TRACKING_URI"], f"facekeys-{KAGGLE}") == []
    assert not (work / "metrics" / KAGGLE / "register.json").exists()
