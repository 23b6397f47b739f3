"""MLflow's process-wide URIs are set for one call and restored afterwards."""

from __future__ import annotations

import os

import pytest

mlflow = pytest.importorskip("mlflow")

from facekeys.tracking.stores import mlflow_uris  # noqa: E402


def test_the_uris_hold_inside_the_block_and_are_restored_after(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///outer.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    inner = f"sqlite:///{tmp_path / 'inner.db'}"

    with mlflow_uris(inner):
        assert mlflow.get_tracking_uri() == inner
        assert mlflow.get_registry_uri() == inner
        assert os.environ["MLFLOW_REGISTRY_URI"] == inner

    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///outer.db"
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.get_tracking_uri() == "sqlite:///outer.db"
    assert mlflow.get_registry_uri() == "sqlite:///outer.db"


def test_the_uris_are_restored_when_the_block_fails(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before = mlflow.get_tracking_uri()

    with pytest.raises(RuntimeError), mlflow_uris(f"sqlite:///{tmp_path / 'a.db'}"):
        raise RuntimeError("inside")

    assert mlflow.get_tracking_uri() == before
    assert "MLFLOW_TRACKING_URI" not in os.environ
