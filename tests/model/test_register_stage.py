"""The register stage (stages/register.py) on a workspace written by hand: the settings and
evaluations it refuses in one line, and the tags a registered version carries."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from facekeys.errors import FacekeysError
from facekeys.tracking.runs import model_weights_sha256
from tests.conftest import REPO

DATASET = "youtube-faces-68"


def _stage() -> ModuleType:
    """stages/register.py as a module (stages/ is not a package)."""
    spec = importlib.util.spec_from_file_location("register_stage", REPO / "stages" / "register.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _workspace(
    root: Path, selection: dict, model_dir: Path | None = None, model_uri: str = "models:/m-1",
    run_id: str = "r1",
) -> None:  # fmt: skip
    """A workspace as train and evaluate leave it: the model folder, train.json and an eval.json
    that scored this model with ``selection`` as its selection rows."""
    model = root / "models" / DATASET
    if model_dir is None:
        model.mkdir(parents=True)
    else:
        shutil.copytree(model_dir, model)
    metrics = root / "metrics" / DATASET
    metrics.mkdir(parents=True)
    train = {"model_uri": model_uri, "run_id": run_id, "tracking_uri": None}
    (metrics / "train.json").write_text(json.dumps(train))
    reported = {"nme_mean": 0.01, "auc_10": 0.9, "data_sha256": "t", "non_finite_points": 0}
    report = {
        "format": "youtube68",
        "model": {"run_id": run_id, "weights_sha256": model_weights_sha256(model)},
        "test": reported,
        "new_people": reported,
        "selection": {"auc_10": 0.8, "data_sha256": "s", "non_finite_points": 0, **selection},
    }
    (metrics / "eval.json").write_text(json.dumps(report))


def _params(gate: str) -> dict:
    register = {"gate_metric": {DATASET: gate}, "min_improvement": {DATASET: 0.0005}}
    return {"datasets": [DATASET], "register": register}


@pytest.mark.parametrize(
    ("gate", "words"),
    [
        ("test.nme_mean", r"is 'test.nme_mean': the gate must read the selection rows"),
        ("new_people.nme_mean", r"reported splits \(test, new_people\) are read by no choice"),
        ("selection.auc_10", r"no paired bootstrap exists for 'auc_10'.*use one of nme_mean"),
    ],
)
def test_a_gate_metric_the_gate_cannot_use_is_refused_in_one_line(
    tmp_path, monkeypatch, gate, words
):
    """The eval.json has a value for each of these keys: only the setting stops the stage."""
    _workspace(tmp_path, {"nme_mean": 0.05})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FacekeysError, match=words) as caught:
        _stage().main(_params(gate), [DATASET])
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"params.yaml: register.gate_metric for {DATASET}")


def test_an_evaluation_with_non_finite_points_is_refused_in_one_line(tmp_path, monkeypatch):
    # A finite mean beside non-finite points: the count alone must stop the registration.
    _workspace(tmp_path, {"nme_mean": 0.05, "non_finite_points": 3})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FacekeysError) as caught:
        _stage().main(_params("selection.nme_mean"), [DATASET])
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        f"metrics/{DATASET}/eval.json: the model predicts 3 labelled points of selection as "
        "NaN or infinity; not registered"
    )


def test_a_registered_version_carries_the_hash_of_its_logged_code(
    logged_model, tmp_path, monkeypatch
):
    import mlflow

    from facekeys.tracking.registered_models import logged_code_sha256

    uri, model_uri, run_id = logged_model
    work = tmp_path / "work"
    _workspace(work, {"nme_mean": 0.05}, tmp_path / "model", model_uri, run_id)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    _stage().main(_params("selection.nme_mean"), [DATASET])

    record = json.loads((work / "metrics" / DATASET / "register.json").read_text())
    client = mlflow.tracking.MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version(record["registered_model"], str(record["version"]))
    assert len(version.tags["code_sha256"]) == 64
    assert version.tags["code_sha256"] == logged_code_sha256(uri, model_uri)
    assert version.tags["gate_metric"] == "selection.nme_mean"
