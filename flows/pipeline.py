"""Prefect flows over the DVC pipeline: ``facekeys-pipeline`` (what the ``nightly``,
``on-demand`` and ``on-data-change`` deployments run) and ``facekeys-data-check`` (compares the
data sources with their last fetch and emits an event when one changed).

Wiring only: DVC decides what is stale and runs the stages; ``facekeys.orchestration.decisions``,
``dvc_output``, ``data_check`` and ``run_report`` hold the decisions; ``flows.dvc_tasks`` runs
DVC and streams its output into the run's logs; these flows hold the workspace lock, retry what
is transient and leave a report.

Longer than 350 lines: both flows share the run's named steps, which read best in one place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.exceptions import FailedRun
from prefect.states import Completed, Failed

from facekeys.errors import FacekeysError
from facekeys.orchestration import data_check, dvc_output, run_report
from facekeys.orchestration import decisions as orch
from facekeys.params import load_params
from flows.dvc_tasks import dvc_run, dvc_stale


class _NoTracebackForReportedFailure(logging.Filter):
    """Drops the engine's traceback for a run that failed with the one line the flow already
    logged (a stage's own error, a bad parameter): the line stays the run's last word."""

    def filter(self, record: logging.LogRecord) -> bool:
        reported = record.exc_info and isinstance(record.exc_info[1], FailedRun)
        return not (reported and record.getMessage().startswith("Engine execution exited"))


logging.getLogger("prefect.flow_runs").addFilter(_NoTracebackForReportedFailure())

#: The title of every report the pipeline flow leaves.
_TITLE = "facekeys pipeline"


def workspace() -> Path:
    """The DVC workspace the flows work on: ``FACEKEYS_WORKSPACE``, else the current folder."""
    return Path(os.environ.get("FACEKEYS_WORKSPACE") or Path.cwd()).resolve()


def _settings(root: Path) -> tuple[dict[str, Any], orch.OrchestrateSettings]:
    params = load_params(root / "params.yaml")
    return params, orch.OrchestrateSettings.from_params(params)


def _head_timeout(params: dict[str, Any]) -> float:
    """The fetch stage's own network timeout, for the cheap HEAD requests of the data check."""
    value = (params.get("fetch") or {}).get("timeout_s", 60)
    return float(value) if isinstance(value, int | float) else 60.0


def tracking_uri(settings: orch.OrchestrateSettings) -> str:
    """Where pipeline runs log: ``MLFLOW_TRACKING_URI``, else the local MLflow server."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"http://127.0.0.1:{settings.mlflow_port}"


def _fail(title: str, message: str, before: dict[str, Any], stages: list[str]) -> Any:
    get_run_logger().error(message)
    create_markdown_artifact(
        run_report.report_markdown(
            title=title, outcome="Failed", stages=stages, before=before, after={}, error=message
        ),
        key="facekeys-pipeline-report",
        description="facekeys pipeline run",
    )
    return Failed(message=message)


def _wait_for_mlflow(uri: str, settings: orch.OrchestrateSettings) -> str | None:
    """None when the tracking server answers, possibly after retries; else why not."""
    if not uri.startswith(("http://", "https://")):
        return None
    logger = get_run_logger()
    for attempt in range(settings.retries + 1):
        if orch.server_answers(uri.rstrip("/") + "/health"):
            return None
        if attempt < settings.retries:
            delay = settings.retry_delay(attempt + 1)
            logger.warning("MLflow server %s does not answer; retrying in %.0f s", uri, delay)
            time.sleep(delay)
    return (
        f"MLflow server {uri} is not running: start it with scripts/orchestrate start "
        "(or point MLFLOW_TRACKING_URI at a running one)"
    )


@dataclass(frozen=True)
class _Request:
    """What one pipeline run was asked to do, checked against dvc.yaml and params.yaml.

    Attributes:
        targets: DVC targets (empty: the whole pipeline).
        overrides: ``-S key=value`` arguments; any makes the run a DVC experiment.
        force: Rerun the targets even when nothing is stale.
        refetch_changed: Fetch again the data sets whose source changed.
        uri: The MLflow tracking URI the stages log to.
    """

    targets: list[str]
    overrides: list[str]
    force: bool
    refetch_changed: bool
    uri: str


@flow(name="facekeys-pipeline", log_prints=True)
def facekeys_pipeline(
    targets: list[str] | None = None,
    force: bool = False,
    set_params: dict[str, Any] | None = None,
    refetch_changed: bool = False,
    wait_for_lock: bool = True,
) -> Any:
    """Brings the DVC pipeline up to date: runs what is stale, or nothing.

    Args:
        targets: Stages (``train``, ``train@kaggle-15``) or data sets (``kaggle-15``) to
            reproduce, with everything they depend on; empty: the whole pipeline.
        force: Rerun the targets even when nothing is stale.
        set_params: Parameter overrides such as ``{"train.epochs": 30}``: run as a DVC
            experiment in a temporary copy (``dvc exp run --temp -S ...``), so params.yaml and
            git stay as they are; ``dvc exp show`` lists it, ``dvc exp apply`` brings it back.
        refetch_changed: Fetch again the data sets whose source changed since their last fetch
            (what the data-change trigger asks for).
        wait_for_lock: Wait while another pipeline holds the workspace (scheduled and
            data-change runs); False refuses at once (on-demand runs).
    """
    root = workspace()
    try:
        params, settings = _settings(root)
        dvc_targets = orch.resolve_targets(
            targets, orch.stage_names(root), list(params.get("datasets") or [])
        )
        overrides = orch.param_overrides(set_params, params)
    except FacekeysError as exc:
        return _fail(_TITLE, str(exc), {}, [])
    datasets = list(params.get("datasets") or [])
    uri = tracking_uri(settings)
    problem = _wait_for_mlflow(uri, settings)
    if problem:
        return _fail(_TITLE, problem, run_report.metrics_snapshot(root, datasets), [])
    request = _Request(dvc_targets, overrides, force, refetch_changed, uri)
    return _under_workspace_lock(root, params, settings, request, wait_for_lock)


def _under_workspace_lock(
    root: Path,
    params: dict[str, Any],
    settings: orch.OrchestrateSettings,
    request: _Request,
    wait_for_lock: bool,
) -> Any:
    """Runs the request while holding the workspace's lock; a busy workspace fails the run
    when it may not wait (or waited longer than the on-demand wait)."""
    from prefect.concurrency.sync import concurrency

    datasets = list(params.get("datasets") or [])
    name = orch.lock_name(root)
    ensure_lock(name)
    try:
        with concurrency(
            name,
            occupy=1,
            strict=True,
            timeout_seconds=None if wait_for_lock else settings.on_demand_lock_wait_s,
            lease_duration=settings.lock_lease_s,
        ):
            get_run_logger().info("holding the workspace lock %s (%s)", name, root)
            # Read under the lock: a queued run must not count the previous run's changes.
            before = run_report.metrics_snapshot(root, datasets)
            return _locked_run(root, params, settings, request, before)
    except TimeoutError:
        return _fail(
            _TITLE,
            f"workspace {root} is busy: another pipeline run holds {name}; try again later or "
            "pass --param wait_for_lock=true to queue",
            run_report.metrics_snapshot(root, datasets),
            [],
        )


def _locked_run(
    root: Path,
    params: dict[str, Any],
    settings: orch.OrchestrateSettings,
    request: _Request,
    before: dict[str, Any],
) -> Any:
    """The run itself, under the lock: what to refetch, what is stale, the DVC commands with
    their retries, and the report."""
    logger = get_run_logger()
    try:
        refetch = _sources_to_refetch(root, params) if request.refetch_changed else []
        stale = dvc_stale(root, request.targets)
    except FacekeysError as exc:
        return _fail(_TITLE, str(exc), before, [])
    logger.info("stale: %s", ", ".join(stale) if stale else "nothing")
    if not (stale or request.force or request.overrides or refetch):
        markdown = run_report.report_markdown(
            title=_TITLE,
            outcome="Up to date: nothing to run",
            stages=[],
            before=before,
            after=before,
        )
        create_markdown_artifact(markdown, key="facekeys-pipeline-report")
        return Completed(message="up to date: nothing was stale")
    commands = _dvc_commands(refetch, request)
    ran, experiments, failure = _run_with_retries(root, commands, settings, request.uri)
    if failure is not None:
        return _fail(_TITLE, failure, before, list(dict.fromkeys(ran)))
    return _report_finished(root, request, commands[-1], ran, experiments, before)


def _sources_to_refetch(root: Path, params: dict[str, Any]) -> list[str]:
    """The data sets whose source changed since their last fetch (each check is logged).

    Raises:
        FacekeysError: a source is unreachable or missing.
    """
    checks = data_check.check_sources(root, params, timeout_s=_head_timeout(params))
    for check in checks:
        get_run_logger().info("source of %s: %s", check.dataset, check.reason)
    return [c.dataset for c in checks if c.changed]


def _dvc_commands(refetch: list[str], request: _Request) -> list[list[str]]:
    """A forced fetch per changed source, then ``dvc repro`` (or ``dvc exp run --temp`` with
    the overrides) of the targets."""
    commands = [["dvc", "repro", "--force", "--single-item", f"fetch@{d}"] for d in refetch]
    force = request.force
    if request.overrides:
        commands.append(
            ["dvc", "exp", "run", "--temp", *(["-f"] if force else []), *request.overrides]
        )
        commands[-1] += request.targets
    else:
        commands.append(["dvc", "repro", *(["--force"] if force else []), *request.targets])
    return commands


def _run_with_retries(
    root: Path, commands: list[list[str]], settings: orch.OrchestrateSettings, uri: str
) -> tuple[list[str], list[str], str | None]:
    """Runs the commands in order, retrying a transient failure after the configured delays.

    Returns:
        The stages run (in order, repeats included), the experiments named, and the failure's
        one line with its attempt count (None when every command succeeded).
    """
    logger = get_run_logger()
    ran: list[str] = []
    experiments: list[str] = []
    for command in commands:
        for attempt in range(settings.retries + 1):
            code, lines = dvc_run(root, command, uri)
            ran += dvc_output.stages_run(lines)
            experiments += dvc_output.experiment_names(lines)
            if code == 0:
                break
            message = dvc_output.failure_line(lines)
            if attempt == settings.retries or not dvc_output.is_transient(message):
                attempts = f"after {attempt + 1} attempt{'s' if attempt else ''}"
                return ran, experiments, f"{message} ({attempts})"
            delay = settings.retry_delay(attempt + 1)
            logger.warning("transient failure, retry %d in %.0f s: %s", attempt + 1, delay, message)
            time.sleep(delay)
    return ran, experiments, None


def _report_finished(
    root: Path,
    request: _Request,
    command: list[str],
    ran: list[str],
    experiments: list[str],
    before: dict[str, Any],
) -> Any:
    """The report of a finished run (numbers before and after, MLflow links) and its state."""
    overrides = request.overrides
    # An experiment's numbers are in its commit (the last it ran), not in the workspace.
    experiment = experiments[-1] if overrides and experiments else None
    after = run_report.metrics_snapshot(root, list(before), experiment)
    stages = list(dict.fromkeys(ran))
    outcome = f"Experiment {', '.join(experiments)} finished" if overrides else "Completed"
    create_markdown_artifact(
        run_report.report_markdown(
            title=_TITLE,
            outcome=outcome,
            stages=stages,
            before=before,
            after=after,
            command=command,
            experiments=experiments if overrides else None,
        ),
        key="facekeys-pipeline-report",
        description="facekeys pipeline run",
    )
    for key, link in run_report.mlflow_links(request.uri, after).items():
        create_link_artifact(link, link_text=key, key=key)
    return Completed(message=f"ran {len(stages)} stage(s): {', '.join(stages) or 'none'}")


def ensure_lock(name: str) -> None:
    """Creates the workspace's global concurrency limit (1 slot) where it does not exist yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


@flow(name="facekeys-data-check", log_prints=True)
def facekeys_data_check() -> Any:
    """Compares every data source with its last fetch (sizes, times, HTTP headers: nothing is
    downloaded) and emits ``facekeys.data.changed`` for the workspace when one changed; the
    ``on-data-change`` deployment's trigger turns that event into a pipeline run."""
    from prefect.events import emit_event

    logger = get_run_logger()
    root = workspace()
    try:
        params, settings = _settings(root)
        checks = data_check.check_sources(root, params, timeout_s=_head_timeout(params))
    except FacekeysError as exc:
        logger.error(str(exc))
        return Failed(message=str(exc))
    for check in checks:
        logger.info("%s (%s): %s", check.dataset, check.source, check.reason)
    changed = {c.dataset: c.fingerprint for c in checks if c.changed}
    if not changed:
        return Completed(message="no source changed")
    state_file = root / ".orchestrate" / "data-check.json"
    if data_check.already_announced(
        state_file, changed, max_age_s=4 * 60 * settings.data_check_minutes
    ):
        logger.info("already announced; the triggered run has not fetched yet")
        return Completed(message="change already announced")
    event = emit_event(
        event=data_check.DATA_CHANGED_EVENT,
        resource={
            "prefect.resource.id": f"facekeys.workspace.{orch.workspace_id(root)}",
            "prefect.resource.name": str(root),
        },
        payload={"datasets": sorted(changed)},
    )
    data_check.remember_announced(state_file, changed)
    logger.info("emitted %s for %s", data_check.DATA_CHANGED_EVENT, ", ".join(sorted(changed)))
    return Completed(message=f"changed: {', '.join(sorted(changed))} (event {event and event.id})")
