"""Faults injected for real: a kill in the last seconds of training, runs of dead processes, a
tracking server that hangs after /health, a locked store, a registration done twice."""

from __future__ import annotations

import http.server
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from facekeys.errors import FacekeysError
from facekeys.tracking.gate import CHAMPION
from facekeys.tracking.mlflow_errors import mlflow_errors
from facekeys.tracking.registry import register_version
from facekeys.tracking.runs import HOST_TAG, PID_TAG, MlflowRun
from tests.tinyproject import dvc, kill_when, make_project

pytestmark = pytest.mark.slow


def test_a_kill_after_training_retrains_nothing_and_leaves_no_running_run(tmp_path):
    work, env = make_project(tmp_path)
    prepared = dvc(work, env, "repro", "augment@youtube-faces-68")
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    command = [sys.executable, "stages/train.py", "youtube-faces-68"]
    # Both networks are trained once the history is written; the model is being logged and
    # published: the last seconds of the stage.
    history = work / "metrics/youtube-faces-68/train_history.csv"
    output = kill_when(command, work, env, history)
    assert history.exists(), f"training ended before the kill point: {output[-2000:]}"
    assert not (work / "models/youtube-faces-68/model.pt").exists(), "published before the kill"

    again = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)

    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished for this config; writing its model again") == 2
    assert "epoch 1/" not in again.stderr
    assert (work / "models/youtube-faces-68/model.pt").is_file()
    assert (work / "models/youtube-faces-68/refine/model.pt").is_file()
    assert not (work / "checkpoints/youtube-faces-68").exists()
    assert not (work / "models/.youtube-faces-68.training").exists()
    import mlflow

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"], env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("facekeys-youtube-faces-68")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]  # the killed run, resumed and ended
    trained = json.loads((work / "metrics/youtube-faces-68/train.json").read_text())
    assert trained["run_id"] == runs[0].info.run_id


def test_runs_left_running_by_dead_processes_are_marked_killed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = MlflowRun(uri, "facekeys-faults", {}, {}, (tmp_path / "artifacts").as_uri())
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now names no process
    client = first.client
    host = socket.gethostname()
    orphan = client.create_run(first.experiment_id, tags={HOST_TAG: host, PID_TAG: str(dead.pid)})
    alive = client.create_run(first.experiment_id, tags={HOST_TAG: host, PID_TAG: "1"})
    elsewhere = client.create_run(first.experiment_id, tags={HOST_TAG: "other", PID_TAG: "9"})

    second = MlflowRun(uri, "facekeys-faults", {}, {})
    second.start(None)

    status = {r: client.get_run(r.info.run_id).info.status for r in (orphan, alive, elsewhere)}
    assert status == {orphan: "KILLED", alive: "RUNNING", elsewhere: "RUNNING"}
    assert client.get_run(second.run_id).info.status == "RUNNING"


class _HangsAfterHealth(http.server.BaseHTTPRequestHandler):
    """Answers /health like a live MLflow server, then never answers anything else."""

    def do_GET(self):
        if self.path.startswith("/health"):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")
        else:
            time.sleep(20)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_a_server_that_hangs_after_health_fails_in_one_line_within_the_bound(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HangsAfterHealth)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    started = time.monotonic()
    try:
        with pytest.raises(FacekeysError) as caught, mlflow_errors(uri):
            register_version(uri, "facekeys-hang", "models:/m-1", "r1", "selection.nme_mean",
                             0.05, 0.0, {})  # fmt: skip
    finally:
        server.shutdown()
    message = str(caught.value)
    assert "\n" not in message and uri in message
    assert "no answer within 1 s" in message and "MLFLOW_HTTP_REQUEST_TIMEOUT" in message
    assert time.monotonic() - started < 15


def test_a_locked_store_is_named_as_locked(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowRun(uri, "facekeys-exists", {}, {}, (tmp_path / "a").as_uri())  # creates the tables
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(FacekeysError) as caught, mlflow_errors(uri):
            MlflowRun(uri, "facekeys-new", {}, {}, (tmp_path / "a").as_uri())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    message = str(caught.value)
    assert "\n" not in message and "locked" in message and str(tmp_path) in message


def test_registering_the_same_model_twice_reuses_its_version(tmp_path, tiny_augmented):
    from facekeys.model.training import train
    from tests.model.test_train import TINY

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = MlflowRun(uri, "facekeys-twice", {}, {}, (tmp_path / "artifacts").as_uri())
    summary = train(tiny_augmented, tmp_path / "model", tmp_path / "ckpt.pt", TINY, logger=run)
    (tmp_path / "h.csv").write_text("epoch\n1\n")
    (tmp_path / "p.png").write_bytes(b"png")
    model_uri = run.finish(summary, tmp_path / "model", tmp_path / "p.png", tmp_path / "h.csv")

    def register():
        tags = {"gate_data_sha256": "A"}
        return register_version(uri, "facekeys-twice", model_uri, run.run_id,
                                "selection.nme_mean", 0.05, 0.0, tags)  # fmt: skip

    import mlflow

    before = (mlflow.get_registry_uri(), os.environ.get("MLFLOW_REGISTRY_URI"))
    first, second = register(), register()

    # Registering leaves no store behind in the process (a later client or DVC child would use it).
    assert (mlflow.get_registry_uri(), os.environ.get("MLFLOW_REGISTRY_URI")) == before
    assert (first["version"], first["alias"]) == (1, CHAMPION)
    assert (second["version"], second["alias"]) == (1, CHAMPION)
    assert "already holds this model" in second["reason"]
    versions = run.client.search_model_versions("name='facekeys-twice'")
    assert len(versions) == 1


@pytest.mark.parametrize(
    "setting", ["train.mlflow.required", "evaluate.mlflow_required", "register.mlflow_required"]
)
def test_an_unreachable_server_names_the_callers_own_setting(setting):
    from facekeys.tracking.mlflow_errors import check_reachable
    from tests.tinyproject import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(FacekeysError, match=rf"unreachable .*set {setting}: false to log locally"):
        check_reachable(uri, setting=setting)


def test_a_read_only_store_is_named_as_read_only(tmp_path):
    path = tmp_path / "mlflow.db"
    MlflowRun(f"sqlite:///{path}", "facekeys-exists", {}, {}, (tmp_path / "a").as_uri())
    # SQLite's own read-only mode: the store opens, and every write is refused (as on a
    # read-only mount, which root here cannot make with chmod).
    uri = f"sqlite:///file:{path}?mode=ro&uri=true"
    with pytest.raises(FacekeysError) as caught, mlflow_errors(uri):
        MlflowRun(uri, "facekeys-new", {}, {}, (tmp_path / "a").as_uri())
    message = str(caught.value)
    assert "\n" not in message and "read-only" in message, message


def test_a_store_in_a_folder_that_cannot_be_written_is_named_as_read_only(tmp_path, monkeypatch):
    # /sys stands in for a read-only folder: root, who runs these tests in containers, ignores
    # chmod, and cannot create files in sysfs.
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs here to stand in for a read-only folder")
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pytest.skip("this machine lets the process create files in /sys")
    except OSError:
        pass
    # MLflow tries to open a store 10 times over 100 s before it gives up: once is enough here.
    monkeypatch.setattr("mlflow.store.db.utils.MAX_RETRY_COUNT", 1)
    uri = "sqlite:////sys/mlflow.db"
    with pytest.raises(FacekeysError) as caught, mlflow_errors(uri):
        MlflowRun(uri, "facekeys-new", {}, {}, (tmp_path / "a").as_uri())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"MLflow store {uri}: the store's folder /sys is read-only"), message


def test_an_experiment_in_a_temporary_copy_registers_in_the_workspace_store(tmp_path):
    """`dvc exp run --temp` runs in .dvc/tmp/exps/<run>/: without MLFLOW_TRACKING_URI the
    stages still log and register into the workspace's own mlflow.db, not a throwaway one."""
    import mlflow

    work, env = make_project(tmp_path, tracking_uri="", commit=True)
    command = ("exp", "run", "--temp", "-S", "train.epochs=1", "register@kaggle-15")
    experiment = dvc(work, env, *command)
    assert experiment.returncode == 0, (experiment.stdout + experiment.stderr)[-3000:]
    store = f"sqlite:///{work / 'mlflow.db'}"
    versions = mlflow.MlflowClient(store, store).search_model_versions("name='facekeys-kaggle-15'")
    assert [int(v.version) for v in versions] == [1]
    assert not list((work / ".dvc").rglob("mlflow.db"))
    assert (work / "params.yaml").read_text().count("epochs: 2") >= 1  # the workspace unchanged


def test_predict_from_a_server_that_hangs_fails_in_one_line_within_the_bound(
    tmp_path, monkeypatch, capsys
):
    from facekeys.cli import main
    from facekeys.tracking import mlflow_errors as bounds
    from tests.model.test_predict import photos_with

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HangsAfterHealth)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in (*bounds.MLFLOW_HTTP_DEFAULTS, "MLFLOW_REGISTRY_URI", "MLFLOW_DISABLE_TELEMETRY"):
        monkeypatch.delenv(name, raising=False)
    # The environment sets no bound, so only the one predict applies holds: the defaults it
    # applies, shortened to 1 s here (MLflow's own would wait 120 s).
    monkeypatch.setattr(
        bounds, "MLFLOW_HTTP_DEFAULTS",
        {**bounds.MLFLOW_HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_TIMEOUT": "1"},
    )  # fmt: skip
    photos = photos_with(tmp_path / "photos")
    spec = "models:/facekeys-hang@champion"
    started = time.monotonic()
    try:
        status = main(["predict", str(photos), "--model", spec, "--out", str(tmp_path / "p.csv")])
    finally:
        server.shutdown()

    assert time.monotonic() - started < 10
    assert status == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"facekeys predict: error: {spec}: cannot load from {uri}: "), err
    assert "no answer within 1 s" in err
