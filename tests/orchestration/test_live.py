"""The real thing on tiny data: ``scripts/orchestrate``'s services (a Prefect server, an MLflow
server, the serving process) on free local ports, ``prefect deployment run`` from the command
line, the nightly schedule across a restart, a data change that triggers a run, and what the
Prefect and MLflow UIs show in headless Chromium. The tests run in file order on one set of
services; the last one stops them and checks that nothing is left.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.tinyproject import REPO, exported, free_port, make_project, orchestrate

pytestmark = pytest.mark.slow

# Twelve hours from now: a fixed time once fired in the middle of a CI run (02:30), and the
# scheduled run then held the workspace that the on-demand test needed.
NIGHTLY = f"{time.gmtime().tm_min} {(time.gmtime().tm_hour + 12) % 24} * * *"
SCREENSHOTS = REPO / "tests" / "screenshots"


class Live:
    """A started set of services over a tiny workspace."""

    def __init__(self, work: Path, env: dict[str, str], prefect_port: int, mlflow_port: int):
        self.work, self.env = work, env
        self.prefect = f"http://127.0.0.1:{prefect_port}"
        self.mlflow = f"http://127.0.0.1:{mlflow_port}"

    def orchestrate(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return orchestrate(self.work, *args, env=self.env, timeout=timeout)

    def prefect_cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).parent / "prefect"), *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def api(self, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.prefect}/api/{path}", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def deployment(self, name: str) -> dict:
        return self.api(f"deployments/name/{name}")

    def runs(self, deployment: dict, states: list[str] | None = None) -> list[dict]:
        flt: dict = {"deployments": {"id": {"any_": [deployment["id"]]}}}
        if states:
            flt["flow_runs"] = {"state": {"type": {"any_": states}}}
        return self.api("flow_runs/filter", flt)

    def log_entries(self, run_id: str) -> list[dict]:
        body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
        return self.api("logs/filter", body)

    def logs(self, run_id: str) -> list[str]:
        return [entry["message"] for entry in self.log_entries(run_id)]

    def finished(self, run_ids: list[str], timeout: float = 300) -> list[dict]:
        """The flow runs once each is in a final state (in the order asked)."""
        final = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
        deadline = time.monotonic() + timeout
        while True:
            runs = [self.api(f"flow_runs/{run_id}") for run_id in run_ids]
            if all(r["state"]["type"] in final for r in runs) or time.monotonic() > deadline:
                return runs
            time.sleep(1)


def run_id(cli: subprocess.CompletedProcess) -> str:
    """The flow run a ``prefect deployment run`` created."""
    assert cli.returncode in (0, 1), cli.stdout[-2000:] + cli.stderr[-2000:]
    return cli.stdout.split("UUID: ")[1].split()[0]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    prefect_port, mlflow_port = free_port(), free_port()

    def edit(params):
        params["orchestrate"].update(
            prefect_port=prefect_port, mlflow_port=mlflow_port, runner_poll_s=1
        )
        params["orchestrate"]["nightly"]["cron"] = NIGHTLY
        # One data set (the one without a refinement network) keeps the suite short; the flow
        # tests and the README's full run cover both.
        params["datasets"] = ["kaggle-15"]

    work, env = make_project(tmp, edit, tracking_uri="", commit=True)
    for key in list(env):
        if key.startswith(("PREFECT_", "MLFLOW_TRACKING")):
            del env[key]
    live = Live(work, env, prefect_port, mlflow_port)
    started = live.orchestrate("start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        env.update(exported(started.stdout))
        yield live
    finally:
        live.orchestrate("stop")


def test_start_prints_the_addresses_and_a_second_start_is_harmless(live):
    assert live.env["PREFECT_API_URL"] == f"{live.prefect}/api"
    assert live.env["MLFLOW_TRACKING_URI"] == live.mlflow
    assert live.env["PREFECT_HOME"] == str(live.work / ".orchestrate" / "prefect")
    again = live.orchestrate("start")
    assert again.returncode == 0
    assert again.stdout.count("already running") == 3, again.stdout
    status = live.orchestrate("status")
    assert status.returncode == 0 and status.stdout.count("answers at") == 2, status.stdout


def test_on_demand_run_from_the_command_line(live):
    result = live.prefect_cli(
        "deployment", "run", "facekeys-pipeline/on-demand", "--watch", "--watch-timeout", "900"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Completed" in result.stdout
    for dataset in ("kaggle-15",):
        name = f"facekeys-{dataset}"
        with urllib.request.urlopen(
            f"{live.mlflow}/api/2.0/mlflow/registered-models/get?name={name}", timeout=10
        ) as response:
            model = json.loads(response.read())["registered_model"]
        assert {"alias": "champion", "version": "1"} in model["aliases"], model
        # The stages logged to the server, not to a store of their own.
        train = json.loads((live.work / "metrics" / dataset / "train.json").read_text())
        assert train["tracking_uri"] == live.mlflow
    run = live.runs(live.deployment("facekeys-pipeline/on-demand"))[0]
    logs = live.logs(run["id"])
    assert any("Running stage 'train@kaggle-15'" in line for line in logs), logs[-20:]
    # The run's report and its links into the MLflow UI: the training run and the version.
    artifacts = live.api("artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
    by_key = {a["key"]: a for a in artifacts}
    assert "facekeys-kaggle-15" in by_key["facekeys-pipeline-report"]["data"]
    train = json.loads((live.work / "metrics" / "kaggle-15" / "train.json").read_text())
    # Prefect keeps a link artifact as the markdown of the link.
    run_link = by_key["mlflow-run-kaggle-15"]["data"]
    assert re.fullmatch(
        rf"\[mlflow-run-kaggle-15\]\({re.escape(live.mlflow)}/#/experiments/\d+/runs/"
        rf"{train['run_id']}\)",
        run_link,
    ), run_link
    model_link = by_key["mlflow-model-kaggle-15"]["data"]
    assert f"({live.mlflow}/#/models/facekeys-kaggle-15/versions/1)" in model_link


def test_a_bad_request_fails_in_one_line_on_the_command_line_and_changes_nothing(live):
    before = {p: (live.work / p).read_bytes() for p in ("params.yaml", "dvc.lock")}
    result = live.prefect_cli(
        "deployment", "run", "facekeys-pipeline/on-demand", "--param", 'targets=["nope"]', "--watch"
    )
    assert result.returncode == 1
    run = live.api(f"flow_runs/{run_id(result)}")
    assert run["state"]["type"] == "FAILED"
    assert run["state"]["message"].startswith("targets: unknown target 'nope'"), run["state"]
    # The run's log, streamed by --watch (and wrapped to the terminal's width).
    assert "targets: unknown target 'nope'" in " ".join(result.stdout.split()), result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert before == {p: (live.work / p).read_bytes() for p in before}


def test_nightly_schedule_has_runs_after_a_restart_of_the_serving_process(live):
    from facekeys.orchestration.service_specs import Layout
    from facekeys.orchestration.services import stop_one

    def scheduled() -> tuple[dict, list[dict]]:
        deployment = live.deployment("facekeys-pipeline/nightly")
        deadline = time.monotonic() + 30
        runs = live.runs(deployment, ["SCHEDULED"])
        while not runs and time.monotonic() < deadline:
            time.sleep(0.5)
            runs = live.runs(deployment, ["SCHEDULED"])
        return deployment, runs

    deployment, runs = scheduled()
    assert runs and deployment["schedules"][0]["schedule"]["cron"] == NIGHTLY
    stop_one(Layout(live.work), "serve", log=lambda line: None)
    assert not live.deployment("facekeys-pipeline/nightly")["paused"]
    restarted = live.orchestrate("start")
    assert restarted.returncode == 0 and "serve: started" in restarted.stdout, restarted.stdout
    assert "serve: pid" in live.orchestrate("status").stdout  # alive, deployments registered
    deployment, runs = scheduled()
    assert not deployment["paused"] and deployment["schedules"][0]["active"]
    assert runs, "no scheduled nightly run after the restart"


def test_a_changed_source_triggers_a_pipeline_run_that_fetches_it_again(live):
    source = Path(live.env["FACEKEYS_SOURCE_KAGGLE_15"]) / "test.zip"
    os.utime(source, (time.time() + 60, time.time() + 60))
    on_change = live.deployment("facekeys-pipeline/on-data-change")
    assert not live.runs(on_change)
    check = live.prefect_cli("deployment", "run", "facekeys-data-check/data-check", "--watch")
    assert check.returncode == 0, check.stdout[-2000:]
    deadline = time.monotonic() + 240
    done: list[dict] = []
    while not done and time.monotonic() < deadline:
        time.sleep(1)
        done = live.runs(on_change, ["COMPLETED", "FAILED", "CRASHED"])
    assert done, "the data-change event produced no finished run"
    assert done[0]["state"]["type"] == "COMPLETED", done[0]["state"]
    logs = "\n".join(live.logs(done[0]["id"]))
    assert "source of kaggle-15: source changed since the last fetch" in logs
    assert "Running stage 'fetch@kaggle-15'" in logs
    # The same bytes: DVC reruns nothing after the fetch.
    assert "Running stage 'validate@kaggle-15'" not in logs
    record = json.loads((live.work / "data/raw/kaggle-15.source.json").read_text())
    from facekeys.data.source_fingerprint import source_fingerprint

    assert record["fingerprint"] == source_fingerprint(str(source.parent))
    # The refetch recorded the new fingerprint: the next check finds nothing to announce.
    again = live.prefect_cli("deployment", "run", "facekeys-data-check/data-check", "--watch")
    assert again.returncode == 0 and len(live.runs(on_change)) == 1


def test_a_second_trigger_of_a_busy_deployment_is_refused_on_demand_and_queued_nightly(live):
    # After the data-change test: these forced trainings leave evaluate and register stale, and
    # a whole-pipeline run after them would register a second version (@challenger).
    forced = ["--param", "force=true", "--param", 'targets=["train@kaggle-15"]']
    for deployment, expected in (("on-demand", "CANCELLED"), ("nightly", "COMPLETED")):
        name = f"facekeys-pipeline/{deployment}"
        ids = [run_id(live.prefect_cli("deployment", "run", name, *forced)) for _ in range(2)]
        first, second = live.finished(ids)
        assert first["state"]["type"] == "COMPLETED", first["state"]
        assert second["state"]["type"] == expected, second["state"]
        if expected == "COMPLETED":  # waited for the first one's slot, then ran
            assert second["start_time"] >= first["end_time"], (first, second)


@pytest.mark.timeout(900)
def test_a_killed_run_frees_the_workspace_within_its_lease_and_training_resumes(live):
    import signal

    from facekeys.orchestration.service_processes import _descendant_groups, read_pid
    from facekeys.orchestration.service_specs import Layout

    params = live.work / "params.yaml"
    # Long enough to kill it mid-training: one-step epochs, each ending with a checkpoint.
    params.write_text(
        params.read_text()
        .replace("epochs: 2\n  batch_size", "epochs: 12\n  batch_size")
        .replace("early_stopping_patience: 5", "early_stopping_patience: 1000")
    )
    targets = ["--param", 'targets=["train@kaggle-15"]']
    started = live.prefect_cli("deployment", "run", "facekeys-pipeline/on-demand", *targets)
    assert started.returncode == 0, started.stdout
    started_id = run_id(started)
    checkpoint = live.work / "checkpoints" / "kaggle-15" / "last.pt"
    deadline = time.monotonic() + 180
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists(), "training never wrote a checkpoint"
    from facekeys.orchestration.decisions import lock_name

    limit = f"v2/concurrency_limits/{lock_name(live.work)}"
    assert live.api(limit)["active_slots"] == 1, "the training run does not hold the workspace"
    serve = read_pid(Layout(live.work).pid("serve"))
    groups = [serve, *_descendant_groups(serve)]
    for group in groups:  # the machine dies: the serving process and its flow runs
        os.killpg(group, signal.SIGKILL)
    killed_at = time.monotonic()
    # The lock is free once Prefect's repossessor revokes the expired lease; watching the slot
    # itself keeps the flow's start-up and its wait between tries out of the measurement.
    while live.api(limit)["active_slots"] and time.monotonic() < killed_at + 300:
        time.sleep(1)
    held = time.monotonic() - killed_at
    lease = 60  # orchestrate.lock.lease_s
    # The lease runs from its last renewal (at most one lease before the kill); the repossessor
    # looks every 5 s (services.py sets it), plus slack for a slow machine.
    assert held < lease + 20, f"the workspace stayed locked {held:.0f} s after the kill"
    assert live.orchestrate("start").returncode == 0
    again = live.prefect_cli(
        "deployment", "run", "facekeys-pipeline/nightly", *targets, "--watch", timeout=600
    )
    assert again.returncode == 0, again.stdout[-3000:]
    entries = live.log_entries(run_id(again))
    logs = [entry["message"] for entry in entries]
    assert any("resuming from checkpoints/kaggle-15/last.pt" in line for line in logs), logs
    # Heartbeats stopped: Prefect's automation marks the killed run Crashed (3 x 30 s).
    killed = live.api(f"flow_runs/{started_id}")
    deadline = time.monotonic() + 150
    while killed["state"]["type"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(2)
        killed = live.api(f"flow_runs/{started_id}")
    assert killed["state"]["type"] == "CRASHED", killed["state"]


def test_a_held_workspace_lock_keeps_its_lease_across_a_restart_of_the_prefect_server(live):
    """Leases live on disk (services.py sets Prefect's filesystem lease storage): a lock held
    when the server restarts can still be renewed and released, and would still expire."""
    from facekeys.orchestration.decisions import lock_name
    from facekeys.orchestration.service_specs import Layout
    from facekeys.orchestration.services import stop_one

    def post(path: str, body: dict) -> int:
        request = urllib.request.Request(
            f"{live.prefect}/api/v2/concurrency_limits/{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    name = lock_name(live.work)
    assert post("", {"name": name, "limit": 1}) in (201, 409)  # as the flow creates it
    held = live.api(
        "v2/concurrency_limits/increment-with-lease",
        {"names": [name], "slots": 1, "mode": "concurrency", "lease_duration": 60},
    )
    for service in ("serve", "prefect-server"):  # the serving process first, as stop does
        stop_one(Layout(live.work), service, log=lambda line: None)
    assert live.orchestrate("start").returncode == 0
    assert live.api(f"v2/concurrency_limits/{name}")["active_slots"] == 1
    # 410 Gone here would mean the lease was lost and the slot held for good.
    assert post(f"leases/{held['lease_id']}/renew", {"lease_duration": 60}) == 204
    assert post("decrement-with-lease", {"lease_id": held["lease_id"]}) == 204
    assert live.api(f"v2/concurrency_limits/{name}")["active_slots"] == 0


@pytest.mark.timeout(900)  # may install chromium first
def test_prefect_and_mlflow_uis_show_the_deployment_and_the_champion(live):
    from tests.browser import ensure_chromium, screenshot, wait_for_text

    if ensure_chromium() is None:
        pytest.skip("no chromium and cannot install it (needs root and apt-get)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = f"{live.prefect}/deployments"
    dom = wait_for_text(page, ["on-demand", "nightly", "on-data-change"])
    screenshot(page, SCREENSHOTS / "prefect-deployments.png")
    for name in ("on-demand", "nightly", "on-data-change", "facekeys-pipeline"):
        assert name in dom
    # The on-demand deployment's own page: its flow, entry point and concurrency limit (its run
    # list fills in later than a headless render waits; the screenshot usually shows it).
    deployment = live.deployment("facekeys-pipeline/on-demand")
    page = f"{live.prefect}/deployments/deployment/{deployment['id']}"
    needles = ["on-demand", "flows/pipeline.py:facekeys_pipeline", "Concurrency Limit"]
    dom = wait_for_text(page, needles)
    screenshot(page, SCREENSHOTS / "prefect-on-demand.png")
    missing = [needle for needle in needles if needle not in dom]
    assert not missing, f"{missing} not on {page}"
    # The alias tag of the registry's table, not the word in a banner: MLflow renders it as a
    # tag titled with the alias, followed by the version it points to.
    alias_tag = re.compile(r'title="champion"[^>]*data-component-id="[^"]*aliases')
    with urllib.request.urlopen(
        f"{live.mlflow}/api/2.0/mlflow/registered-models/get?name=facekeys-kaggle-15", timeout=10
    ) as response:
        model = json.loads(response.read())["registered_model"]
    assert {a["alias"] for a in model.get("aliases", [])} == {"champion"}, model  # v1 only
    page = f"{live.mlflow}/#/models"
    # The aliases column fills in after the table (its own request): under the parallel suite's
    # load three renders once missed it, so this page gets more tries.
    dom = wait_for_text(page, ["facekeys-kaggle-15", 'title="champion"'], attempts=5)
    screenshot(page, SCREENSHOTS / "mlflow-models.png")
    assert "facekeys-kaggle-15" in dom
    assert len(alias_tag.findall(dom)) == 1, "no @champion alias shown for the model"
    page = f"{live.mlflow}/#/models/facekeys-kaggle-15"
    dom = wait_for_text(page, ["Version 1", 'title="champion"'], attempts=5)
    screenshot(page, SCREENSHOTS / "mlflow-model-kaggle-15.png")
    assert alias_tag.search(dom)


def test_stop_leaves_nothing_running_and_triggers_then_name_the_missing_server(live):
    pids = {
        name: int((live.work / ".orchestrate" / "run" / f"{name}.pid").read_text().split()[0])
        for name in ("serve", "mlflow-server", "prefect-server")
    }
    stopped = live.orchestrate("stop")
    assert stopped.returncode == 0
    lines = stopped.stdout.splitlines()
    assert lines == ["serve: stopped", "mlflow-server: stopped", "prefect-server: stopped"]
    left = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            pgid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
            cwd = os.readlink(proc / "cwd")
        except (OSError, IndexError, ValueError):
            continue
        if pgid in pids.values() or cwd.startswith(str(live.work)):
            left.append(proc.name)
    assert not left, f"processes left: {left}"
    status = live.orchestrate("status")
    assert status.returncode == 3 and status.stdout.count("not running") == 3
    trigger = live.orchestrate("run", "on-demand", "--watch", timeout=60)
    assert trigger.returncode == 1
    assert f"Prefect server {live.prefect}/api is not running: start it with" in trigger.stderr
    assert f"MLflow server {live.mlflow} is not running: start it with" in trigger.stderr
    assert "Traceback" not in trigger.stderr
