"""The orchestration's decisions without Prefect: targets, parameter overrides, settings, what
DVC's output says, source fingerprints, the report, and the trigger's check of the servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facekeys.data.fetch import fetch_dataset
from facekeys.data.source_fingerprint import fingerprints_differ, source_fingerprint
from facekeys.errors import FacekeysError
from facekeys.orchestration import data_check, dvc_output, run_report
from facekeys.orchestration import decisions as orch
from tests.conftest import REPO
from tests.tinyproject import free_port, orchestrate
from tests.unit.test_fetch import make_youtube_folder, serve, zip_folder

STAGES = ["fetch", "validate", "augment", "train", "evaluate", "export", "register"]
DATASETS = ["youtube-faces-68", "kaggle-15"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_targets_name_stages_stage_items_or_data_sets():
    assert orch.resolve_targets(None, STAGES, DATASETS) == []
    assert orch.resolve_targets(["all"], STAGES, DATASETS) == []
    assert orch.resolve_targets(["train", "train"], STAGES, DATASETS) == ["train"]
    assert orch.resolve_targets(["evaluate@kaggle-15"], STAGES, DATASETS) == ["evaluate@kaggle-15"]
    assert orch.resolve_targets(["kaggle-15"], STAGES, DATASETS) == [
        f"{s}@kaggle-15" for s in STAGES
    ]
    for bad in ("trian", "train@nope", "", "@kaggle-15"):
        with pytest.raises(FacekeysError, match=r"^targets: .*") as err:
            orch.resolve_targets([bad], STAGES, DATASETS)
        assert "\n" not in str(err.value)


def test_stage_names_come_from_dvc_yaml():
    assert orch.stage_names(REPO) == STAGES


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"train.epochs": 30}, ["-S", "train.epochs=30"]),
        ({"train.lr": 1}, ["-S", "train.lr=1"]),  # an integer is a number
        ({"train.channels_last": False}, ["-S", "train.channels_last=false"]),
        ({"train.loss": "mse"}, ["-S", 'train.loss="mse"']),
        ({"augment.scale_range": [0.9, 1.1]}, ["-S", "augment.scale_range=[0.9, 1.1]"]),
        ({"augment.image_size.kaggle-15": 64}, ["-S", "augment.image_size.kaggle-15=64"]),
    ],
)
def test_param_overrides_become_typed_dvc_set_params(overrides, expected):
    assert orch.param_overrides(overrides, PARAMS) == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.epoch": 3}, "set_params: unknown param 'train.epoch'"),
        ({"nope": 3}, "set_params: unknown param 'nope'"),
        ({"train.epochs.x": 3}, "set_params: unknown param 'train.epochs.x'"),
        ({"train.epochs": "30"}, "set_params: train.epochs must be an integer like 24"),
        ({"train.epochs": 2.5}, "set_params: train.epochs must be an integer"),
        ({"train.epochs": True}, "set_params: train.epochs must be an integer"),
        ({"train.channels_last": 1}, "set_params: train.channels_last must be true or false"),
        ({"train.lr": "fast"}, "set_params: train.lr must be a number"),
        ({"train": 3}, "set_params: train is a section; set one of its keys"),
    ],
)
def test_bad_param_overrides_are_one_line_errors(overrides, message):
    with pytest.raises(FacekeysError) as err:
        orch.param_overrides(overrides, PARAMS)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_settings_read_the_shipped_section_and_refuse_bad_values():
    settings = orch.OrchestrateSettings.from_params(PARAMS)
    assert (settings.prefect_port, settings.mlflow_port) == (4200, 5000)
    assert settings.nightly_active is True and settings.lock_lease_s >= 60
    assert settings.retry_delay(1) == 10 and settings.retry_delay(5) == 60
    for section, message in (
        ({"prefect_port": "4200"}, "prefect_port must be an integer"),
        ({"nightly": {"active": "yes"}}, "nightly_active must be true or false"),
        ({"nightly": {"crn": "0 1 * * *"}}, "has no setting 'nightly_crn'"),
        ({"lock": {"lease_s": 10}}, "lease_s must be >= 60"),
        ({"heartbeat_s": 5}, "heartbeat_s must be >= 30"),
        ({"data_check": 15}, "orchestrate.data_check must be a mapping"),
        ({"data_check": {"minutes": 0}}, "data_check.minutes and runner_poll_s > 0"),
        ({"retry_delays_s": 5}, "retry_delays_s must be a list of numbers"),
    ):
        with pytest.raises(FacekeysError, match=message):
            orch.OrchestrateSettings.from_params({"orchestrate": section})


def test_a_bad_cron_string_is_refused_in_one_line():
    from flows.serve import check_cron

    check_cron("0 2 * * *", "UTC")
    for cron, timezone in (("0 25 * * *", "UTC"), ("every night", "UTC"), ("0 2 * * *", "Mars")):
        with pytest.raises(FacekeysError, match=r"orchestrate.nightly cron .* is not valid"):
            check_cron(cron, timezone)


def test_dvc_output_parsing():
    assert dvc_output.stale_stages("{}") == []
    status = {"train@kaggle-15": [{"changed deps": {}}], "dvc.yaml:fetch@kaggle-15": []}
    assert dvc_output.stale_stages(json.dumps(status)) == ["fetch@kaggle-15", "train@kaggle-15"]
    with pytest.raises(FacekeysError, match="dvc status gave no JSON"):
        dvc_output.stale_stages("not json")
    lines = [
        "Running stage 'fetch@kaggle-15':",
        "> python stages/fetch.py kaggle-15",
        "stage fetch: error: /x.zip: source does not exist (set FACEKEYS_SOURCE_KAGGLE_15 ...)",
        "ERROR: failed to reproduce 'fetch@kaggle-15': failed to run: python ..., exited with 1",
    ]
    assert dvc_output.stages_run(lines) == ["fetch@kaggle-15"]
    assert dvc_output.failure_line(lines).startswith("stage fetch: error: /x.zip")
    assert dvc_output.failure_line(lines[3:]).startswith("ERROR: failed to reproduce")
    assert dvc_output.failure_line([]) == "dvc failed without a message"


def test_a_commands_lines_reach_the_log_as_shown_one_per_progress_bar():
    # A real pipe, as the flow reads a DVC command's output: a progress bar redrawn with
    # carriage returns is one line in its last state, not one line per redraw.
    script = (
        "import sys, time\n"
        "for i in range(1, 4):\n"
        "    sys.stderr.write(f'\\rDownloading:  {i}/3'); sys.stderr.flush(); time.sleep(0.01)\n"
        "sys.stderr.write('\\n')\n"
        "print('Running stage x:\\r\\n\\nd\\u00e9j\\u00e0 vu', flush=True)\n"
        "sys.stdout.buffer.write(b'no newline at the end \\xff')\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as process:
        assert process.stdout is not None
        lines = list(dvc_output.shown_lines(process.stdout))
    assert lines == [
        "Downloading:  3/3",
        "Running stage x:",
        "d\u00e9j\u00e0 vu",
        "no newline at the end \ufffd",
    ]


def test_only_transient_failures_are_retried():
    transient = [
        "stage fetch: error: http://x/a.zip: download failed: [Errno 111] Connection refused",
        "stage fetch: error: http://x/a.zip: download broke off after 10 bytes: timed out",
        "stage train: error: MLflow tracking server http://127.0.0.1:5000 is unreachable (...)",
        "stage register: error: registry http://h: cannot register m: HTTP 503 Service Unavailable",
    ]
    permanent = [
        "stage validate: error: data/raw/x/test.csv: wrong schema for youtube68: expected 137",
        "stage fetch: error: http://x/a.zip: download refused: HTTP 404 Not Found",
        "stage train: error: params.yaml: train.epochs must be an integer",
    ]
    assert all(dvc_output.is_transient(m) for m in transient)
    assert not any(dvc_output.is_transient(m) for m in permanent)


def test_lock_and_event_ids_are_per_workspace(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert orch.lock_name(tmp_path / "a") != orch.lock_name(tmp_path / "b")
    assert orch.lock_name(tmp_path / "a") == orch.lock_name(tmp_path / "a" / ".." / "a")


def fetched(root: Path, source: Path, dataset: str = "youtube-faces-68") -> dict:
    manifest = fetch_dataset(
        dataset,
        str(source),
        root / "data" / "raw" / dataset,
        source_record=root / "data" / "raw" / f"{dataset}.source.json",
    )
    return manifest


def check(root: Path, dataset: str, source: str) -> data_check.SourceCheck:
    params = {"datasets": [dataset], "fetch": {"sources": {dataset: source}}}
    return data_check.check_sources(root, params)[0]


def test_folder_and_zip_sources_are_compared_with_their_last_fetch(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEKEYS_SOURCE_YOUTUBE_FACES_68", raising=False)
    folder = make_youtube_folder(tmp_path / "src")
    work = tmp_path / "work"
    assert check(work, "youtube-faces-68", str(folder)).reason == "never fetched"
    manifest = fetched(work, folder)
    assert "source_fingerprint" not in manifest  # the fetched folder holds data only
    assert check(work, "youtube-faces-68", str(folder)).changed is False
    image = next((folder / "training").iterdir())
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    result = check(work, "youtube-faces-68", str(folder))
    assert result.changed is True and result.reason == "source changed since the last fetch"
    (folder / "training" / "new.jpg").write_bytes(b"x")
    assert check(work, "youtube-faces-68", str(folder)).changed is True

    archive = zip_folder(make_youtube_folder(tmp_path / "zsrc"), tmp_path / "src.zip")
    fetched(work, archive)
    assert check(work, "youtube-faces-68", str(archive)).changed is False
    moved = check(work, "youtube-faces-68", str(folder))
    assert moved.changed is True and moved.reason.startswith("source moved: ")
    archive.write_bytes(archive.read_bytes() + b"\0")
    assert check(work, "youtube-faces-68", str(archive)).changed is True
    with pytest.raises(FacekeysError, match="source does not exist"):
        check(work, "youtube-faces-68", str(tmp_path / "gone"))


def test_url_sources_are_compared_by_their_headers(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEKEYS_SOURCE_YOUTUBE_FACES_68", raising=False)
    payload = zip_folder(make_youtube_folder(tmp_path / "src"), tmp_path / "a.zip").read_bytes()
    work = tmp_path / "work"
    with serve(payload) as base:
        url = f"{base}/data.zip"
        fetched(work, url)
        record = json.loads((work / "data/raw/youtube-faces-68.source.json").read_text())
        assert record["fingerprint"] == {"kind": "url", "content_length": str(len(payload))}
        assert check(work, "youtube-faces-68", url).changed is False
    with serve(payload + b"\0") as base2:
        url2 = f"{base2}/data.zip"
        record["source"] = url2
        (work / "data/raw/youtube-faces-68.source.json").write_text(json.dumps(record))
        assert check(work, "youtube-faces-68", url2).changed is True
    with pytest.raises(FacekeysError, match="unreachable"):
        source_fingerprint(f"http://127.0.0.1:{free_port()}/a.zip", timeout_s=2)


def test_fingerprints_that_cannot_tell():
    assert fingerprints_differ(None, {"kind": "folder"}) is None
    unknown = {"kind": "url", "unknown": True}
    assert fingerprints_differ(unknown, unknown) is None
    old = {"kind": "url", "etag": '"a"', "content_length": "5"}
    assert fingerprints_differ(old, {"kind": "url", "etag": '"b"'}) is True
    assert fingerprints_differ(old, {"kind": "url", "content_length": "5"}) is False

    def derived(base: dict) -> dict:
        return {"kind": "derived", "from": "youtube-faces-68", "source": "u", "base": base}

    # A derived source follows its base's rules: no header is "cannot tell", a header the HEAD
    # answer lacks is not a change, a changed one is.
    assert fingerprints_differ(derived(unknown), derived(unknown)) is None
    assert fingerprints_differ(derived(old), derived({"kind": "url", "etag": '"a"'})) is False
    assert fingerprints_differ(derived(old), derived({"kind": "url", "etag": '"b"'})) is True
    moved = {**derived(old), "source": "v"}
    assert fingerprints_differ(derived(old), moved) is True


def test_report_shows_numbers_before_and_after_and_the_registry_decision(tmp_path):
    metrics = tmp_path / "metrics" / "youtube-faces-68"
    metrics.mkdir(parents=True)
    before = run_report.metrics_snapshot(tmp_path, ["youtube-faces-68"])
    (metrics / "eval.json").write_text(
        json.dumps({"test": {"nme_mean": 0.0392}, "new_people": {"nme_mean": 0.0423}})
    )
    (metrics / "register.json").write_text(
        json.dumps(
            {
                "registered_model": "facekeys-youtube-faces-68",
                "version": 3,
                "alias": "challenger",
                "reason": "not better than the champion",
            }
        )
    )
    after = run_report.metrics_snapshot(tmp_path, ["youtube-faces-68"])
    text = run_report.report_markdown(
        title="t",
        outcome="Completed",
        stages=["train@youtube-faces-68"],
        before=before,
        after=after,
    )
    assert "| test NME | - | 3.920 % |" in text
    assert "| new-people NME | - | 4.230 % |" in text
    assert "Kaggle RMSE" not in text  # no such number for this data set
    assert (
        "Registry: facekeys-youtube-faces-68 version 3 -> @challenger: not better than the "
        "champion" in text
    )
    assert "Stages run: `train@youtube-faces-68`" in text
    failed = run_report.report_markdown(
        title="t", outcome="Failed", stages=[], before=before, after={}, error="stage x: error: y"
    )
    assert "stage x: error: y" in failed


def test_announced_changes_are_not_announced_twice(tmp_path):
    state = tmp_path / "data-check.json"
    changed = {"kaggle-15": {"kind": "file", "bytes": 3, "mtime_ns": 1}}
    assert not data_check.already_announced(state, changed)
    data_check.remember_announced(state, changed)
    assert data_check.already_announced(state, changed)
    assert not data_check.already_announced(state, {"kaggle-15": {"kind": "file", "bytes": 4}})
    assert not data_check.already_announced(state, changed, max_age_s=0)  # an old one is repeated


def test_trigger_names_the_missing_server_and_how_to_start_it(tmp_path):
    params = {"orchestrate": {"prefect_port": free_port(), "mlflow_port": free_port()}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    result = orchestrate(tmp_path, "run", "on-demand", "--watch", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"orchestrate: error: Prefect server http://127.0.0.1:{params['orchestrate']['prefect_port']}"
        "/api is not running: start it with scripts/orchestrate start",
        f"orchestrate: error: MLflow server http://127.0.0.1:{params['orchestrate']['mlflow_port']}"
        " is not running: start it with scripts/orchestrate start",
        "orchestrate: error: the serving process is not running (nothing would execute the run): "
        "start it with scripts/orchestrate start",
    ]
    status = orchestrate(tmp_path, "status", env=env)
    assert status.returncode == 3 and status.stdout.count("not running") == 3


def test_a_bad_setting_stops_start_in_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"orchestrate": {"mlflow_port": "x"}}))
    result = orchestrate(tmp_path, "start")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "orchestrate: error: params.yaml: orchestrate mlflow_port must be an integer, got 'x'"
    )
    assert not (tmp_path / ".orchestrate").exists()


def test_prefect_yaml_agrees_with_the_served_deployments(monkeypatch):
    from flows.serve import build_deployments

    monkeypatch.setenv("FACEKEYS_WORKSPACE", str(REPO))
    served = {d.name: d for d in build_deployments()}
    declared = {
        d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    }
    assert set(declared) == set(served) == {"nightly", "on-demand", "on-data-change", "data-check"}
    for name, deployment in served.items():
        spec = declared[name]
        assert spec["entrypoint"].endswith(":" + deployment.entrypoint.split(":")[-1])
        assert spec.get("parameters", {}) == deployment.parameters
        assert spec["concurrency_limit"]["collision_strategy"] == (
            deployment.concurrency_options.collision_strategy.value
        )
    settings = orch.OrchestrateSettings.from_params(PARAMS)
    nightly = declared["nightly"]["schedules"][0]
    assert (nightly["cron"], nightly["timezone"], nightly["active"]) == (
        settings.nightly_cron,
        settings.nightly_timezone,
        settings.nightly_active,
    )
    assert declared["data-check"]["schedules"][0]["interval"] == settings.data_check_minutes * 60
    trigger = declared["on-data-change"]["triggers"][0]
    assert trigger["expect"] == [data_check.DATA_CHANGED_EVENT]
    assert trigger["parameters"] == served["on-data-change"].triggers[0].parameters


def test_prefect_commands_in_the_project_use_its_server_and_never_a_temporary_one(tmp_path):
    """prefect.toml: a plain ``prefect deployment run`` in the project folder, without the
    exports, talks to the port params.yaml gives the server; with that server down it fails at
    once instead of starting a temporary server (no scheduler, no UI, no deployments)."""
    settings = orch.OrchestrateSettings.from_params(PARAMS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    prefect = str(Path(sys.executable).parent / "prefect")
    view = subprocess.run(
        [prefect, "config", "view"], cwd=REPO, env=env, capture_output=True, text=True
    )
    url = f"http://127.0.0.1:{settings.prefect_port}/api"
    assert f"PREFECT_API_URL='{url}' (from prefect.toml)" in view.stdout, view.stdout
    assert "PREFECT_SERVER_EPHEMERAL_ENABLED='False' (from prefect.toml)" in view.stdout
    toml = (REPO / "prefect.toml").read_text()
    (tmp_path / "prefect.toml").write_text(toml.replace(url, f"http://127.0.0.1:{free_port()}/api"))
    down = subprocess.run(
        [prefect, "deployment", "run", "facekeys-pipeline/on-demand"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1
    assert "All connection attempts failed" in down.stdout + down.stderr
    assert "temporary server" not in (down.stdout + down.stderr).lower()


def test_experiment_names_come_from_dvc_exp_run_output():
    lines = ["Reproducing experiment 'lumpy-bots'", "", "Ran experiment(s): lumpy-bots, sad-cat"]
    assert dvc_output.experiment_names(lines) == ["lumpy-bots", "sad-cat"]
    assert dvc_output.experiment_names(["Running stage 'train@kaggle-15':"]) == []


def test_a_bad_cron_stops_start_before_anything_starts(tmp_path):
    params = {"orchestrate": {"nightly": {"cron": "0 25 * * *"}, "prefect_port": free_port()}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = orchestrate(tmp_path, "start")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("orchestrate: error: params.yaml: orchestrate.nightly cron")
    assert "Invalid cron string" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_derived_source_changes_when_the_set_it_is_made_from_changes(tmp_path, monkeypatch):
    from facekeys.data.fetch import fetch_planned
    from facekeys.data.source_plan import FetchSettings, plan_source
    from tests.unit.test_derive import make_68_set

    for name in ("FACEKEYS_SOURCE_YOUTUBE_FACES_68", "FACEKEYS_SOURCE_KAGGLE_15"):
        monkeypatch.delenv(name, raising=False)
    folder = make_68_set(tmp_path / "yt", train=4, test=2)
    sources = {"youtube-faces-68": str(folder), "kaggle-15": "derived:youtube-faces-68"}
    params = {"datasets": ["youtube-faces-68", "kaggle-15"], "fetch": {"sources": sources}}
    raw = tmp_path / "work" / "data" / "raw"
    for dataset in params["datasets"]:
        plan = plan_source(dataset, sources, FetchSettings())
        fetch_planned(plan, raw / dataset, FetchSettings(), raw, raw / f"{dataset}.source.json")
    assert [c.changed for c in data_check.check_sources(tmp_path / "work", params)] == [
        False,
        False,
    ]
    image = next((folder / "test").iterdir())
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    checks = data_check.check_sources(tmp_path / "work", params)
    assert [(c.dataset, c.changed) for c in checks] == [
        ("youtube-faces-68", True),
        ("kaggle-15", True),
    ]
    assert checks[1].source == "derived:youtube-faces-68"
