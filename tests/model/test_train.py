"""Training behaviour on tiny data: shapes, learning, exact resume after SIGKILL, MLflow."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from facekeys.errors import FacekeysError
from facekeys.inference.predictor import KeypointPredictor
from facekeys.model.checkpoints import load_model
from facekeys.model.networks import ARCHITECTURES, build_model
from facekeys.model.settings import TrainSettings
from facekeys.model.training import train

TINY = TrainSettings(
    architecture="heatmap", width=8, epochs=6, batch_size=16, lr=0.01, ema_decay=0.9,
    early_stopping_patience=100, threads=1, warmup_epochs=0.2,
)  # fmt: skip


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize(("points", "channels", "size"), [(68, 1, 64), (15, 1, 96), (68, 3, 32)])
def test_output_shapes(architecture, points, channels, size):
    model = build_model(architecture, points, channels, size, width=8).eval()
    with torch.no_grad():
        out = model(torch.zeros(3, channels, size, size))
    assert out.shape == (3, points, 2)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("stride", [4, 8])
def test_soft_argmax_reads_the_centre_of_a_peaked_cell(stride):
    # A heatmap that is (almost) one-hot at cell (row 2, column 5) must read out that cell's
    # centre, pixel stride * j + (stride - 1) / 2, in fractions of the input side.
    size = 64
    model = build_model("heatmap", 3, 1, size, width=8, heatmap_stride=stride).eval()
    grid = size // stride
    logits = torch.full((1, 3, grid, grid), -50.0)
    logits[0, :, 2, 5] = 50.0
    model.heatmaps.forward = lambda features: logits  # the read-out is what is tested
    with torch.no_grad():
        out = model(torch.zeros(1, 1, size, size))
    expected = torch.tensor([5 * stride + (stride - 1) / 2, 2 * stride + (stride - 1) / 2]) / size
    assert out.shape == (1, 3, 2)
    torch.testing.assert_close(out[0], expected.expand(3, 2), atol=1e-5, rtol=0)


def test_architecture_options_are_stored_in_the_card_and_rebuilt(tiny_augmented, tmp_path):
    settings = dataclasses.replace(TINY, epochs=1, heatmap_stride=4, stem_block=False)
    train(tiny_augmented, tmp_path / "model", tmp_path / "ckpt.pt", settings)
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert (card["heatmap_stride"], card["stem_block"]) == (4, False)
    model, _ = load_model(tmp_path / "model")  # strict state-dict load: same layers
    assert model.fine is not None and model.grid == card["input"]["size"] // 4
    assert isinstance(model.backbone.stem[3], torch.nn.Identity)
    with_block = build_model("heatmap", 68, 1, card["input"]["size"], width=8)
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in with_block.parameters()
    )
    with pytest.raises(FacekeysError, match="heatmap_stride must be 4 or 8"):
        dataclasses.replace(TINY, heatmap_stride=2).check()
    with pytest.raises(FacekeysError, match="stem_block must be true or false"):
        dataclasses.replace(TINY, stem_block="false").check()


def test_cards_from_before_the_architecture_options_load_as_stride_8_with_stem(
    tiny_augmented, tmp_path
):
    train(
        tiny_augmented,
        tmp_path / "model",
        tmp_path / "ckpt.pt",
        dataclasses.replace(TINY, epochs=1),
    )
    card_path = tmp_path / "model" / "model.json"
    card = json.loads(card_path.read_text())
    assert (card.pop("heatmap_stride"), card.pop("stem_block")) == (8, True)
    card_path.write_text(json.dumps(card))  # as written before the two keys existed
    model, _ = load_model(tmp_path / "model")
    assert model.fine is None and not isinstance(model.backbone.stem[3], torch.nn.Identity)


def test_tiny_training_lowers_the_loss(tiny_augmented, tmp_path):
    summary = train(tiny_augmented, tmp_path / "model", tmp_path / "ckpt.pt", TINY)
    history = summary["history"]
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert summary["best_val_nme"] < history[0]["val_nme"]
    assert not (tmp_path / "ckpt.pt").exists(), "the checkpoint is removed after success"
    model, card = load_model(tmp_path / "model")
    assert card["crop_policy"]["size"] == 32 and card["input"]["mean"] == 0.5
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert set(state) == set(model.state_dict())


def test_unknown_settings_are_one_line_errors():
    with pytest.raises(FacekeysError, match="unknown keys"):
        TrainSettings.from_params({"epochz": 3})
    with pytest.raises(FacekeysError, match="architecture must be one of"):
        TrainSettings.from_params({"architecture": "vgg"})


RUNNER = """
import sys, dataclasses, json
from facekeys.model.training import train
from facekeys.model.settings import TrainSettings
settings = TrainSettings(**json.loads(sys.argv[4]))
train(sys.argv[1], sys.argv[2], sys.argv[3], settings, log=lambda line: None)
"""


def run_training(data: Path, out: Path, ckpt: Path, settings: TrainSettings) -> subprocess.Popen:
    args = [str(data), str(out), str(ckpt), json.dumps(dataclasses.asdict(settings))]
    return subprocess.Popen([sys.executable, "-c", RUNNER, *args], stderr=subprocess.PIPE)


def test_sigkill_then_resume_gives_the_same_weights(tiny_augmented, tmp_path):
    settings = dataclasses.replace(TINY, epochs=8)
    clean = run_training(tiny_augmented, tmp_path / "clean", tmp_path / "clean.pt", settings)
    assert clean.wait(timeout=300) == 0, clean.stderr.read().decode()

    killed = run_training(tiny_augmented, tmp_path / "resumed", tmp_path / "ckpt.pt", settings)
    deadline = time.monotonic() + 300
    while not (tmp_path / "ckpt.pt").exists():  # the first epoch's checkpoint
        assert killed.poll() is None and time.monotonic() < deadline, "finished before the kill"
        time.sleep(0.01)
    time.sleep(0.3)  # into a later epoch
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    saved_epoch = torch.load(tmp_path / "ckpt.pt", weights_only=True)["epoch"]
    assert saved_epoch < settings.epochs - 1, "killed too late to test a resume"
    assert not (tmp_path / "resumed" / "model.pt").exists()

    resumed = run_training(tiny_augmented, tmp_path / "resumed", tmp_path / "ckpt.pt", settings)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    a = torch.load(tmp_path / "clean" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_checkpoint_of_another_config_is_not_resumed(tiny_augmented, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    first = dataclasses.replace(TINY, epochs=2)
    run_training(tiny_augmented, tmp_path / "a", ckpt, first).wait(timeout=300)
    # An interrupted run of a different config leaves a checkpoint behind...
    torch.save({"config_hash": "something-else", "epoch": 1}, ckpt)
    summary = train(tiny_augmented, tmp_path / "b", ckpt, first, log=lambda line: None)
    assert summary["epochs_run"] == 2  # ...which is ignored: training starts afresh


def test_mlflow_run_in_a_temporary_sqlite_store(tiny_augmented, tmp_path, monkeypatch):
    import mlflow

    from facekeys.model.training_log import write_history_csv
    from facekeys.tracking.runs import MlflowRun, loss_plot

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = MlflowRun(
        uri,
        "facekeys-test",
        params={"train": dataclasses.asdict(TINY)},
        tags={"git_commit": "abc"},
        artifact_root=(tmp_path / "artifacts").as_uri(),
    )
    summary = train(tiny_augmented, tmp_path / "model", tmp_path / "ckpt.pt", TINY, logger=run)
    history = summary.pop("history")
    write_history_csv(tmp_path / "history.csv", history)
    loss_plot(history, tmp_path / "loss.png")
    run.finish(summary, tmp_path / "model", tmp_path / "loss.png", tmp_path / "history.csv")

    client = mlflow.tracking.MlflowClient(uri, registry_uri=uri)
    stored = client.get_run(run.run_id)
    assert stored.data.params["train.architecture"] == "heatmap"
    assert stored.data.tags["git_commit"] == "abc"
    nme = client.get_metric_history(run.run_id, "val_nme")
    assert [m.step for m in nme] == list(range(1, TINY.epochs + 1))
    artifacts = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"loss.png", "history.csv", "model.json"} <= artifacts

    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in
              ((32, 32), (40, 56), (50, 30, 3))]  # fmt: skip
    encoded = [cv2.imencode(".png", image)[1].tobytes() for image in images]
    out = loaded.predict(pd.DataFrame({"image": encoded}))  # the example had 2 images; 3 work
    assert out.shape == (3, 136) and list(out.columns[:3]) == ["x0", "y0", "x1"]
    reference = KeypointPredictor.from_dir(tmp_path / "model")
    expected = reference.to_label_convention(reference.predict(images)).reshape(3, -1)
    assert np.allclose(out.to_numpy(), expected, atol=1e-4)


def test_unreachable_tracking_server_fails_fast():
    from facekeys.tracking.mlflow_errors import check_reachable

    start = time.monotonic()
    with pytest.raises(FacekeysError, match="unreachable"):
        check_reachable("http://127.0.0.1:9", timeout_s=2)
    assert time.monotonic() - start < 10


def test_a_store_whose_artifacts_live_on_a_server_is_refused_before_training(tmp_path):
    import mlflow

    from facekeys.errors import FacekeysError
    from facekeys.tracking.runs import MlflowRun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment(
        "facekeys-served", artifact_location="mlflow-artifacts:/1"
    )
    with pytest.raises(FacekeysError, match=r"keeps its artifacts on an MLflow server"):
        MlflowRun(uri, "facekeys-served", params={}, tags={})


def test_an_unreadable_checkpoint_means_training_afresh(tiny_augmented, tmp_path):
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(b"PK\x03\x04 truncated by a full disk")
    lines: list[str] = []
    settings = dataclasses.replace(TINY, epochs=1)
    summary = train(tiny_augmented, tmp_path / "model", checkpoint, settings, log=lines.append)
    assert summary["epochs_run"] == 1 and (tmp_path / "model" / "model.pt").is_file()
    assert any("unreadable checkpoint" in line and "starting afresh" in line for line in lines)
