"""The promotion gate, in a temporary SQLite registry, and the champion served over HTTP."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from facekeys.tracking.gate import CHALLENGER, CHAMPION, decide
from facekeys.tracking.registry import register_version


@pytest.mark.parametrize(
    ("new", "champion", "alias", "words"),
    [
        (0.05, None, CHAMPION, "first model"),
        (0.04, 0.05, CHAMPION, "beats the champion's 0.05 by 0.01"),
        (0.0499, 0.05, CHALLENGER, "by only"),  # better, but by less than min_improvement
        (0.05, 0.05, CHALLENGER, "equals the champion's"),
        (0.06, 0.05, CHALLENGER, "worse than the champion's"),
        (float("nan"), 0.05, CHALLENGER, "not comparable"),
    ],
)
def test_gate_decisions(new, champion, alias, words):
    decision = decide("test.nme_mean", new, champion, min_improvement=0.0005)
    assert decision.alias == alias and words in decision.reason


def test_a_registered_model_loads_without_running_the_code_logged_beside_it(
    logged_model, tmp_path, monkeypatch
):
    """facekeys reads only the logged networks (weights_only) with its own code: a model logged
    by an older facekeys (another package layout), or with tampered code, loads the same."""
    from facekeys.inference.predictor import KeypointPredictor
    from facekeys.tracking.model_specs import load_any_model

    uri, model_uri, run_id = logged_model
    register_version(uri, "facekeys-old", model_uri, run_id, "test.nme_mean", 0.05, 0.0, {})
    logged = [p for p in (tmp_path / "artifacts").rglob("MLmodel")]
    assert len(logged) == 1
    code = logged[0].parent
    for path in code.rglob("*.py"):
        path.write_text("raise SystemExit('logged code ran')\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    loaded = load_any_model("models:/facekeys-old/1")

    direct = KeypointPredictor.from_dir(tmp_path / "model")
    image = np.random.default_rng(2).integers(0, 255, (48, 40), dtype=np.uint8)
    assert np.allclose(loaded.predict([image]), direct.predict([image]))


def test_registry_aliases_follow_the_gate(logged_model, monkeypatch):
    import mlflow
    import pandas as pd

    uri, model_uri, run_id = logged_model

    def register(value, run=run_id):
        return register_version(uri, "facekeys-tiny", model_uri, run, "test.nme_mean", value,
                                0.0005, {"git_commit": "abc"})  # fmt: skip

    first, better, worse = (register(v) for v in (0.05, 0.04, 0.045))
    # The same model scored the same again is the same version; a tie needs another run.
    client = mlflow.tracking.MlflowClient(uri, registry_uri=uri)
    other_run = client.create_run(client.get_run(run_id).info.experiment_id).info.run_id
    equal = register(0.04, run=other_run)
    other_metric = register_version(uri, "facekeys-tiny", model_uri, run_id, "test.rmse_px", 0.001,
                                    0.0, {})  # fmt: skip
    # Gated on another metric: not comparable with the champion, so no alias at all.
    assert other_metric["alias"] is None and "not comparable" in other_metric["reason"]
    assert (first["alias"], first["version"]) == (CHAMPION, 1)
    assert (better["alias"], better["previous_champion_version"]) == (CHAMPION, 1)
    assert worse["alias"] == CHALLENGER and "worse" in worse["reason"]
    assert equal["alias"] == CHALLENGER and "equals" in equal["reason"]
    champion = client.get_model_version_by_alias("facekeys-tiny", CHAMPION)
    challenger = client.get_model_version_by_alias("facekeys-tiny", CHALLENGER)
    # @challenger: the best version that is not the champion (0.04 ties with it).
    assert (str(champion.version), str(challenger.version)) == ("2", "4")
    assert champion.tags["git_commit"] == "abc" and "beats" in champion.description
    assert "equals" in challenger.description

    from facekeys.errors import FacekeysError
    from facekeys.tracking.model_specs import load_any_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    via_cli_path = load_any_model("models:/facekeys-tiny@champion")  # facekeys predict --model
    assert via_cli_path.predict([np.zeros((40, 40), np.uint8)]).shape == (1, 68, 2)
    with pytest.raises(FacekeysError, match=r"models:/facekeys-tiny@nobody: cannot load from"):
        load_any_model("models:/facekeys-tiny@nobody")
    mlflow.set_registry_uri(uri)
    mlflow.set_tracking_uri(uri)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = mlflow.pyfunc.load_model("models:/facekeys-tiny@champion")
    # MLflow warns at every load of a PythonModel whose predict it cannot read a type from.
    assert not [w for w in caught if "type hints to the `predict`" in str(w.message)]
    image = np.random.default_rng(1).integers(0, 255, (48, 40), dtype=np.uint8)
    out = loaded.predict(pd.DataFrame({"image": [cv2.imencode(".jpg", image)[1].tobytes()]}))
    assert out.shape == (1, 136) and np.isfinite(out.to_numpy()).all()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_champion_is_served_over_http(logged_model, tmp_path):
    uri, model_uri, run_id = logged_model
    register_version(uri, "facekeys-served", model_uri, run_id, "test.nme_mean", 0.05, 0.0, {})
    port = _free_port()
    venv_bin = Path(sys.executable).parent  # mlflow runs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
           "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    mlflow_cli = venv_bin / "mlflow"
    server = subprocess.Popen(
        [str(mlflow_cli), "models", "serve", "-m", "models:/facekeys-served@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    output = server.stdout.read().decode(errors="replace") if server.stdout else ""
                    pytest.fail(f"mlflow models serve did not come up:\n{output[-3000:]}")
                time.sleep(0.5)
        image = np.random.default_rng(2).integers(0, 255, (30, 50), dtype=np.uint8)
        payload = {"dataframe_split": {"columns": ["image"], "data": [
            [base64.b64encode(cv2.imencode(".png", image)[1].tobytes()).decode()]]}}  # fmt: skip
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        rows = answer["predictions"]
        assert len(rows) == 1 and len(rows[0]) == 136
        assert all(-20 < rows[0][f"x{j}"] < 70 for j in range(68))  # image pixels, 50 wide
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_the_gate_compares_like_with_like_and_keeps_a_champion(logged_model, monkeypatch):
    import mlflow

    import facekeys.tracking.registry as registry
    from facekeys.errors import FacekeysError

    uri, model_uri, run_id = logged_model
    client = mlflow.tracking.MlflowClient(uri, registry_uri=uri)

    def register(value, test="A", rescore=None, name="facekeys-gate"):
        return register_version(uri, name, model_uri, run_id, "test.nme_mean", value, 0.0005,
                                {registry.GATE_DATA_TAG: test}, rescore=rescore)  # fmt: skip

    def aliases(name="facekeys-gate"):
        return {a: registry._alias_version(client, name, a) for a in (CHAMPION, CHALLENGER)}

    with pytest.raises(FacekeysError, match="no finite score"):
        register(float("nan"))
    with pytest.raises(FacekeysError, match="no finite score"):
        register(float("inf"))
    assert register(0.05)["alias"] == CHAMPION  # v1 (nothing was registered above)
    assert register(0.06)["alias"] == CHALLENGER  # v2
    worse = register(0.07)  # v3: a loser worse than the challenger takes no alias
    assert worse["alias"] is None and worse["load_with"] == "models:/facekeys-gate/3"
    assert aliases() == {CHAMPION: "1", CHALLENGER: "2"}

    # An easier test set cannot crown a model: without re-scoring it is not comparable ...
    other = register(0.01, test="B")  # v4
    assert other["alias"] is None and "scored on other data" in other["reason"]
    assert aliases()[CHAMPION] == "1"
    # ... and with re-scoring the champion is judged on the same data first.
    scored = []
    rescored = register(0.03, test="B", rescore=lambda u: scored.append(u) or 0.02)  # v5
    assert scored == ["models:/facekeys-gate/1"] and rescored["alias"] is None
    assert "re-scored on this data, 0.02" in rescored["reason"]
    # The champion keeps its new score: no second re-scoring, and @challenger is now the best
    # version scored like it (v4, 0.01 on B, which was never compared).
    tags = client.get_model_version("facekeys-gate", "1").tags
    assert (tags[registry.GATE_DATA_TAG], float(tags[registry.GATE_TAG])) == ("B", 0.02)
    assert tags["gate_previous"] == "test.nme_mean=0.05 on A"
    assert aliases() == {CHAMPION: "1", CHALLENGER: "4"}
    better = register(0.009, test="B", rescore=lambda u: pytest.fail("scored again"))  # v6
    assert better["alias"] == CHAMPION and aliases()[CHAMPION] == "6"

    # A champion that cannot be scored fairly on the new data: kept when the data differ, but
    # a new held-out split (its training rows may include the gate rows) starts a new line.
    unfair = register(0.2, test="C", rescore=lambda u: registry.Incomparable("sees other labels"))
    assert unfair["alias"] is None and "sees other labels" in unfair["reason"]
    assert aliases()[CHAMPION] == "6"
    resplit = registry.Incomparable("was trained with another held-out split", new_line=True)
    leader = register(0.3, test="D", rescore=lambda u: resplit)
    assert leader["alias"] == CHAMPION and "a new line starts" in leader["reason"]
    client.set_registered_model_alias("facekeys-gate", CHAMPION, "6")  # back, for what follows

    # The champion's version deleted: the best remaining comparable version is the reference
    # and takes the alias back when the newcomer does not beat it.
    client.delete_model_version("facekeys-gate", "6")
    after = register(0.05, test="B")  # v9; v4 (0.01) is the best left on test data B
    assert after["alias"] is None and "best existing version 4" in after["reason"]
    assert aliases()[CHAMPION] == "4"

    # Two registrations at once: this one read "no champion" before the other set one.
    late = _register_in_a_race(logged_model, monkeypatch, "facekeys-race", 0.06, paired=None)
    assert late["alias"] == CHALLENGER and aliases("facekeys-race")[CHAMPION] == "1"


def test_an_evaluation_of_another_model_is_refused():
    from facekeys.errors import FacekeysError
    from facekeys.tracking.gate import check_scored_model

    report = {"model": {"run_id": "r1", "weights_sha256": "w1"}}
    check_scored_model(report, {"run_id": "r1"}, "w1", "kaggle-15")
    with pytest.raises(FacekeysError, match=r"eval.json scored another model \(run_id 'r1'"):
        check_scored_model(report, {"run_id": "r2"}, "w1", "kaggle-15")
    with pytest.raises(FacekeysError, match=r"weights_sha256 'w1'.*rerun evaluate@kaggle-15"):
        check_scored_model(report, {"run_id": "r1"}, "w2", "kaggle-15")
    with pytest.raises(FacekeysError, match="scored another model"):
        check_scored_model({}, {"run_id": "r1"}, "w1", "kaggle-15")  # an old eval.json


def test_a_registered_version_can_be_scored_again(logged_model, tmp_path):
    from facekeys.tracking.registered_models import registered_model_dir

    uri, model_uri, run_id = logged_model
    register_version(uri, "facekeys-dl", model_uri, run_id, "test.nme_mean", 0.05, 0.0, {})
    folder = registered_model_dir(uri, "models:/facekeys-dl/1", tmp_path / "dl")
    assert (folder / "model.pt").is_file() and (folder / "model.json").is_file()


def test_the_code_a_model_runs_is_hashed(logged_model):
    from facekeys.errors import FacekeysError
    from facekeys.tracking.registered_models import logged_code_sha256

    uri, model_uri, _ = logged_model
    first = logged_code_sha256(uri, model_uri)
    assert len(first) == 64 and first == logged_code_sha256(uri, model_uri)
    with pytest.raises(FacekeysError, match="cannot read its logged code"):
        logged_code_sha256(uri, "models:/m-0000000000000000000000000000dead")


def _noise(low: float) -> dict:
    """A paired bootstrap's result whose one-sided lower bound of the gain is ``low``."""
    return {"gain": 0.01, "low": low, "high": 0.02, "clusters": 9, "confidence": 0.95,
            "draws": 100}  # fmt: skip


def test_a_gain_within_the_noise_does_not_crown(logged_model):
    uri, model_uri, run_id = logged_model

    def register(value, low):
        return register_version(uri, "facekeys-noise", model_uri, run_id, "test.nme_mean", value,
                                0.0005, {}, paired=lambda u: _noise(low))  # fmt: skip

    assert register(0.05, -1.0)["alias"] == CHAMPION  # first model: nothing to compare with
    within = register(0.04, -0.001)
    assert within["alias"] == CHALLENGER and "not beyond noise" in within["reason"]
    assert within["paired_bootstrap"]["low"] == -0.001
    beyond = register(0.04, 0.002)
    assert beyond["alias"] == CHAMPION and "lower bound 0.002" in beyond["reason"]


def _client_and_aliases(uri):
    import mlflow

    import facekeys.tracking.registry as registry

    client = mlflow.tracking.MlflowClient(uri, registry_uri=uri)

    def aliases(name):
        return {a: registry._alias_version(client, name, a) for a in (CHAMPION, CHALLENGER)}

    return client, aliases


def test_without_a_champion_the_best_version_is_beaten_only_beyond_the_noise(logged_model):
    """The champion's version deleted: the best remaining version is the reference, and a gain
    over it within the noise of the paired bootstrap does not crown the newcomer."""
    uri, model_uri, run_id = logged_model
    client, aliases = _client_and_aliases(uri)
    asked = []

    def register(value, paired=None):
        return register_version(uri, "facekeys-deleted", model_uri, run_id, "test.nme_mean",
                                value, 0.0005, {}, paired=paired)  # fmt: skip

    register(0.06)  # v1
    register(0.05)  # v2, the champion
    client.delete_model_version("facekeys-deleted", "2")
    within = register(0.04, paired=lambda u: asked.append(u) or _noise(-0.001))  # v3

    assert asked == ["models:/facekeys-deleted/1"], "not compared with the best version left"
    assert within["alias"] == CHALLENGER and "not beyond noise" in within["reason"]
    assert "version 1 is @champion" in within["reason"]
    assert within["paired_bootstrap"]["low"] == -0.001
    assert aliases("facekeys-deleted") == {CHAMPION: "1", CHALLENGER: "3"}


def _register_in_a_race(logged_model, monkeypatch, name, value, paired):
    """Registers ``value`` under ``name`` (whose champion, 0.05, is version 1) as if another
    registration had set that champion after this one first read "no champion"."""
    import facekeys.tracking.registry as registry

    uri, model_uri, run_id = logged_model
    register_version(uri, name, model_uri, run_id, "test.nme_mean", 0.05, 0.0005, {})
    real = registry._reference
    calls = []

    def stale_first(*args, **kwargs):
        calls.append(1)
        return registry._Reference(None, None) if len(calls) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(registry, "_reference", stale_first)
    record = register_version(uri, name, model_uri, run_id, "test.nme_mean", value, 0.0005, {},
                              paired=paired)  # fmt: skip
    assert len(calls) == 2, "the champion was not read again before the alias was set"
    return record


def test_a_champion_found_again_is_beaten_only_beyond_the_noise(logged_model, monkeypatch):
    asked = []
    late = _register_in_a_race(logged_model, monkeypatch, "facekeys-race-noise", 0.04,
                               paired=lambda u: asked.append(u) or _noise(-0.001))  # fmt: skip

    # 0.04 beats the champion's 0.05 by more than the margin, but within the noise.
    assert asked == ["models:/facekeys-race-noise/1"]
    assert late["alias"] == CHALLENGER and "not beyond noise" in late["reason"]
    assert late["paired_bootstrap"]["low"] == -0.001
    _, aliases = _client_and_aliases(logged_model[0])
    assert aliases("facekeys-race-noise") == {CHAMPION: "1", CHALLENGER: "2"}


def test_the_description_states_the_final_decision(logged_model, monkeypatch):
    uri, model_uri, run_id = logged_model
    client, _ = _client_and_aliases(uri)
    # First read "no champion" ("first model"), then the champion found again: the decision
    # changed after the version was created.
    late = _register_in_a_race(logged_model, monkeypatch, "facekeys-described", 0.04,
                               paired=lambda u: _noise(-0.001))  # fmt: skip
    description = client.get_model_version("facekeys-described", "2").description
    assert description == late["reason"]
    assert "first model" not in description and "not beyond noise" in description
    assert "paired bootstrap over 9 groups of images" in description
    assert "lower bound -0.001" in description

    # A loser worse than @challenger: its description says it got no alias.
    worse = register_version(uri, "facekeys-described", model_uri, run_id, "test.nme_mean",
                             0.06, 0.0005, {})  # fmt: skip
    assert worse["alias"] is None
    assert client.get_model_version("facekeys-described", "3").description == worse["reason"]
    assert worse["reason"].endswith("@challenger is version 2: no alias, loaded by its number")


def test_a_changed_gate_metric_rescores_and_retags_the_champion(logged_model):
    from facekeys.tracking.gate import GATE_DATA_TAG, GATE_TAG

    uri, model_uri, run_id = logged_model
    client, aliases = _client_and_aliases(uri)

    def register(metric, value, rescore=None):
        return register_version(uri, "facekeys-metric", model_uri, run_id, metric, value, 0.0005,
                                {GATE_DATA_TAG: "A"}, rescore=rescore)  # fmt: skip

    register("test.nme_mean", 0.05)  # v1, the champion
    scored = []
    kept = register("selection.nme_mean", 0.07, lambda u: scored.append(u) or 0.06)  # v2

    assert scored == ["models:/facekeys-metric/1"]
    reason = kept["reason"]
    assert "(version 1) was gated on 'test.nme_mean': re-scored on this data, 0.06" in reason
    assert kept["alias"] == CHALLENGER and "worse than the champion's 0.06" in reason
    tags = client.get_model_version("facekeys-metric", "1").tags
    assert (tags["gate_metric"], float(tags[GATE_TAG])) == ("selection.nme_mean", 0.06)
    assert tags["gate_previous"] == "test.nme_mean=0.05 on A"
    assert aliases("facekeys-metric") == {CHAMPION: "1", CHALLENGER: "2"}
    # Scored on the new metric now: compared by its tags, without scoring it again.
    better = register("selection.nme_mean", 0.05, lambda u: pytest.fail("scored again"))  # v3
    assert better["alias"] == CHAMPION and better["previous_champion_value"] == 0.06
    assert aliases("facekeys-metric") == {CHAMPION: "3", CHALLENGER: "1"}


@pytest.mark.parametrize("rescored", [float("nan"), float("inf")])
def test_a_champion_without_a_finite_score_on_new_data_loses(logged_model, rescored):
    from facekeys.tracking.gate import GATE_DATA_TAG

    uri, model_uri, run_id = logged_model
    client, aliases = _client_and_aliases(uri)

    def register(value, data, **gate):
        return register_version(uri, "facekeys-nonfinite", model_uri, run_id, "test.nme_mean",
                                value, 0.0005, {GATE_DATA_TAG: data}, **gate)  # fmt: skip

    register(0.05, "A")  # v1, the champion
    newcomer = register(
        0.2,
        "B",
        rescore=lambda u: rescored,
        paired=lambda u: pytest.fail("compared with a non-finite champion"),
    )

    assert newcomer["alias"] == CHAMPION and newcomer["previous_champion_version"] == 1
    assert "not finite: a finite score wins" in newcomer["reason"]
    assert "first model" not in newcomer["reason"]
    assert aliases("facekeys-nonfinite")[CHAMPION] == "2"
    assert client.get_model_version("facekeys-nonfinite", "1").tags[GATE_DATA_TAG] == "A"
