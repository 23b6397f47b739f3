"""The ``facekeys-pipeline`` flow against a temporary Prefect server (``prefect_test_harness``)
on tiny generated data: DVC decides what runs, experiments leave params.yaml alone, failures end
in their own one line, and two runs over one workspace never overlap."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.tinyproject import free_port, make_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A tiny project the flow works on, with quick retries."""

    def quick(params):
        params["orchestrate"].update(retries=2, retry_delays_s=[0.1], on_demand_lock_wait_s=1)

    work, env = make_project(tmp_path, quick, commit=True)
    for key in ("FACEKEYS_SOURCE_YOUTUBE_FACES_68", "FACEKEYS_SOURCE_KAGGLE_15"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.setenv("FACEKEYS_WORKSPACE", str(work))
    return work


def run_flow(**parameters):
    from flows.pipeline import facekeys_pipeline

    return facekeys_pipeline(return_state=True, **parameters)


def ran_stages(state) -> set[str]:
    message = state.message or ""
    assert message.startswith("ran "), message
    return {s.strip() for s in message.split(":", 1)[1].split(",") if s.strip() != "none"}


def latest_report() -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["facekeys-pipeline-report"]))
        )
    return max(artifacts, key=lambda a: a.created).data


def dvc(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=work, capture_output=True, text=True, timeout=300
    )


def test_runs_what_is_stale_skips_when_up_to_date_and_runs_experiments(workspace):
    # One data set keeps this test short; test_pipeline.py runs both through DVC.
    kaggle = {
        f"{stage}@kaggle-15"
        for stage in ("fetch", "validate", "augment", "train", "evaluate", "export", "register")
    }
    first = run_flow(targets=["kaggle-15"])
    assert first.is_completed(), first.message
    assert ran_stages(first) == kaggle
    report = latest_report()
    assert "Registry: facekeys-kaggle-15 version 1 -> @champion" in report
    assert "| Kaggle RMSE (96 px) | - |" in report  # no number before, one after

    second = run_flow(targets=["kaggle-15"])
    assert second.is_completed() and second.message == "up to date: nothing was stale"
    assert "Up to date" in latest_report()

    # A change upstream of the target makes it stale too (dvc status --with-deps).
    params = workspace / "params.yaml"
    params.write_text(
        params.read_text().replace("max_quarantine_fraction: 0.1", "max_quarantine_fraction: 0.2")
    )
    third = run_flow(targets=["register@kaggle-15"])
    assert ran_stages(third) == {"validate@kaggle-15"}  # same valid rows: nothing further

    forced = run_flow(targets=["kaggle-15"], force=True)
    assert ran_stages(forced) == kaggle

    # An experiment: params.yaml stays as it is, DVC lists the run, and its model is registered
    # in the workspace's store, not in a store inside the temporary copy.
    subprocess.run(["git", "add", "-A"], cwd=workspace, check=True)
    subprocess.run(["git", "commit", "-qm", "ran"], cwd=workspace, check=True)
    before = params.read_bytes()
    experiment = run_flow(targets=["register@kaggle-15"], set_params={"train.epochs": 1})
    assert experiment.is_completed(), experiment.message
    assert "train@kaggle-15" in ran_stages(experiment)
    assert params.read_bytes() == before
    report = latest_report()
    assert "Experiment `" in report and "`dvc exp show` lists its params" in report
    # "after" is the experiment's own numbers (its commit's), not the workspace's.
    name = re.search(r"Experiment `([^`]+)`", report).group(1)
    committed = dvc(workspace, "exp", "show", "--json")
    assert name in committed.stdout
    version = re.search(r"Registry: facekeys-kaggle-15 version (\d+)", report)
    assert version and version.group(1) == "3", report  # first run, forced rerun, experiment
    assert "| test NME |" in report
    shown = json.loads(dvc(workspace, "exp", "show", "--json").stdout)
    epochs = [
        exp["data"]["params"]["params.yaml"]["data"]["train"]["epochs"]
        for commit in shown
        for exp in commit.get("experiments") or []
        for exp in exp.get("revs", [])
        if exp.get("data")
    ]
    assert 1 in epochs, shown
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    store = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = store.search_model_versions("name='facekeys-kaggle-15'")
    assert len(versions) == 3  # first run, forced rerun, experiment
    assert_dvc_views_show_the_headline_numbers(workspace)


HEADLINE_KEYS = (
    "test_nme", "rmse_px", "int8_ms", "alias", "version", "selection_nme", "quarantined",
)  # fmt: skip


def assert_dvc_views_show_the_headline_numbers(work: Path) -> None:
    """Issue 18: DVC's metrics are a few headline numbers per data set, so that its two views
    compare runs at a glance in a 160-column terminal; the detail files are plain outputs."""
    narrow = {**os.environ, "COLUMNS": "160"}

    def shown(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=work,
            env=narrow,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    every_metric = shown("metrics", "show")
    assert "metrics/kaggle-15/headline/evaluate.json" in every_metric, every_metric
    for detail in ("eval.json", "export.json", "register.json", "train.json", "validate.json"):
        assert f"metrics/kaggle-15/{detail}" not in every_metric
    compared = shown("exp", "show", "--only-changed")
    for detail_key in ("nme_median", "max_abs_difference", "gate_metric", "paired_bootstrap"):
        assert detail_key not in every_metric and detail_key not in compared
    keep = "^(Experiment|Created|" + "|".join(HEADLINE_KEYS) + r"|train\.epochs)$"
    views = [
        shown("metrics", "show", "metrics/kaggle-15/headline"),
        shown("exp", "show", "--only-changed", "--drop", ".*", "--keep", keep),
        every_metric,
        compared,
    ]
    # --only-changed: the experiment reran train to register, not validate or export.
    changed = [key for key in HEADLINE_KEYS if key not in ("int8_ms", "quarantined")]
    for view, keys in zip(views, [HEADLINE_KEYS, changed, HEADLINE_KEYS, changed], strict=True):
        assert all(key in view for key in keys), view
    for view in views[:3]:
        assert max(len(line) for line in view.splitlines()) <= 160, view


def test_bad_requests_fail_in_one_line_and_change_nothing(workspace):
    params = (workspace / "params.yaml").read_bytes()
    cases = {
        "targets: unknown target 'nope'": {"targets": ["nope"]},
        "set_params: unknown param 'train.nope'": {"set_params": {"train.nope": 1}},
        "set_params: train.epochs must be an integer": {"set_params": {"train.epochs": "many"}},
        "set_params: train.channels_last must be true or false": {
            "set_params": {"train.channels_last": 1}
        },
    }
    for expected, parameters in cases.items():
        state = run_flow(**parameters)
        assert state.is_failed() and state.message.startswith(expected), state.message
        assert "\n" not in state.message
    assert (workspace / "params.yaml").read_bytes() == params
    assert not (workspace / "dvc.lock").exists() and not (workspace / "data").exists()


def test_an_unreachable_source_fails_the_data_check_and_the_refetch_in_one_line(
    workspace, monkeypatch
):
    from flows.pipeline import facekeys_data_check

    monkeypatch.setenv("FACEKEYS_SOURCE_KAGGLE_15", str(workspace / "missing.zip"))
    state = facekeys_data_check(return_state=True)
    assert state.is_failed() and "missing.zip" in state.message, state.message
    assert "\n" not in state.message
    state = run_flow(refetch_changed=True)
    assert state.is_failed() and "missing.zip" in state.message, state.message
    assert "\n" not in state.message and "missing.zip" in latest_report()
    assert not (workspace / "dvc.lock").exists() and not (workspace / "data").exists()
    assert not (workspace / ".orchestrate" / "data-check.json").exists(), "nothing announced"


def test_failing_stage_ends_with_its_own_line_and_only_transient_ones_are_retried(
    workspace, monkeypatch
):
    monkeypatch.setenv("FACEKEYS_SOURCE_KAGGLE_15", str(workspace / "missing.zip"))
    state = run_flow(targets=["fetch@kaggle-15"])
    assert state.is_failed()
    assert state.message.startswith("stage fetch: error: "), state.message
    assert "missing.zip: source does not exist" in state.message
    assert state.message.endswith("(after 1 attempt)")
    assert "stage fetch: error: " in latest_report()
    assert not (workspace / "data" / "raw" / "kaggle-15").exists(), "nothing half-fetched"
    assert not (workspace / "dvc.lock").exists()

    monkeypatch.setenv("FACEKEYS_SOURCE_KAGGLE_15", f"http://127.0.0.1:{free_port()}/k.zip")
    state = run_flow(targets=["fetch@kaggle-15"])
    assert state.is_failed() and "download failed" in state.message, state.message
    assert state.message.endswith("(after 3 attempts)")  # retries: 2

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    state = run_flow()
    assert state.is_failed()
    assert "is not running: start it with scripts/orchestrate start" in state.message


@pytest.fixture
def slow_workspace(tmp_path, monkeypatch):
    """A one-stage pipeline whose stage writes when it starts and ends, outside DVC's outputs."""
    work = tmp_path / "slow"
    work.mkdir()
    stamps = tmp_path / "stamps.txt"
    release = tmp_path / "release"
    # The stage holds on until the test creates `release` (at most 60 s): no race with the clock.
    (work / "slow.py").write_text(
        "import os, time\n"
        f"log = open({str(stamps)!r}, 'a')\n"
        "log.write(f'start {time.time()}\\n'); log.flush()\n"
        "time.sleep(0.5)\n"
        "deadline = time.time() + 60\n"
        f"while not os.path.exists({str(release)!r}) and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
        "open('out.txt', 'w').write('done')\n"
        "log.write(f'end {time.time()}\\n')\n"
    )
    stage = {"cmd": f"{sys.executable} slow.py", "deps": ["slow.py"], "outs": ["out.txt"]}
    (work / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"slow": stage}}))
    params = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
    orchestrate = {**params["orchestrate"], "on_demand_lock_wait_s": 1}
    (work / "params.yaml").write_text(yaml.safe_dump({"orchestrate": orchestrate}))
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=work, check=True)
    monkeypatch.setenv("FACEKEYS_WORKSPACE", str(work))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return work, stamps, release


def intervals(stamps: Path) -> list[tuple[float, float]]:
    events = [line.split() for line in stamps.read_text().splitlines()]
    starts = [float(t) for kind, t in events if kind == "start"]
    ends = [float(t) for kind, t in events if kind == "end"]
    return list(zip(starts, ends, strict=True))


def test_two_runs_over_one_workspace_never_overlap(slow_workspace):
    work, stamps, release = slow_workspace
    release.touch()
    states = []

    def forced_run():
        states.append(run_flow(force=True, wait_for_lock=True))

    threads = [threading.Thread(target=forced_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(states) == 2 and all(s.is_completed() for s in states), [s.message for s in states]
    first, second = sorted(intervals(stamps))
    assert first[1] <= second[0], "the second stage started before the first one ended"

    # An on-demand run (wait_for_lock false) is refused while another one holds the workspace.
    stamps.unlink()
    release.unlink()
    waiting = threading.Thread(target=forced_run)
    waiting.start()
    deadline = time.monotonic() + 60
    while not stamps.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    by_hand = dvc(work, "repro", "--force")  # a `dvc repro` typed meanwhile
    refused = run_flow(force=True, wait_for_lock=False)
    release.touch()
    waiting.join(timeout=120)
    assert refused.is_failed() and "is busy: another pipeline run holds" in refused.message
    # DVC's own lock refuses it ("Unable to acquire lock" or "... is busy ... rwlock").
    assert by_hand.returncode != 0
    assert "Unable to acquire lock" in by_hand.stderr or "rwlock" in by_hand.stderr
    assert len(intervals(stamps)) == 1


def test_prefect_yaml_deploys_to_a_process_work_pool_that_a_worker_runs(slow_workspace):
    import shutil

    from prefect.settings import PREFECT_API_URL

    work, stamps, release = slow_workspace
    release.touch()
    repo = Path(__file__).parents[2]
    shutil.copy(repo / "prefect.yaml", work / "prefect.yaml")
    shutil.copytree(repo / "flows", work / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "FACEKEYS_WORKSPACE": str(work),
    }
    prefect = str(Path(sys.executable).parent / "prefect")

    def cli(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [prefect, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result

    cli("work-pool", "create", "facekeys", "--type", "process")
    cli("--no-prompt", "deploy", "--all")
    cli("deployment", "run", "facekeys-pipeline/on-demand", "--param", "force=true")
    cli("worker", "start", "--pool", "facekeys", "--run-once")
    assert len(intervals(stamps)) == 1, "the worker did not run the pipeline"
