"""The serving process: registers the deployments of ``facekeys-pipeline`` and
``facekeys-data-check`` with the Prefect server and runs their flow runs in this workspace.

    python -m flows.serve        (scripts/orchestrate start runs it in the background)

Schedules come from params.yaml (``orchestrate``) at every start, and stopping this process
leaves them active (``pause_on_shutdown=False``), so a restart never pauses the nightly run.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Interval

from facekeys.errors import FacekeysError
from facekeys.orchestration import decisions as orch
from facekeys.orchestration.data_check import DATA_CHANGED_EVENT
from facekeys.orchestration.decisions import check_cron
from flows.pipeline import _settings, facekeys_data_check, facekeys_pipeline, workspace

ONE_AT_A_TIME_QUEUED = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
)
ONE_AT_A_TIME_REFUSED = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)


def build_deployments() -> list[Any]:
    """The four deployments, from params.yaml's ``orchestrate`` section."""
    root = workspace()
    _, settings = _settings(root)
    check_cron(settings.nightly_cron, settings.nightly_timezone)
    tags = ["facekeys", f"workspace-{orch.workspace_id(root)}"]
    nightly = facekeys_pipeline.to_deployment(
        "nightly",
        schedules=[
            Cron(
                settings.nightly_cron,
                timezone=settings.nightly_timezone,
                active=settings.nightly_active,
            )
        ],
        parameters={"wait_for_lock": True},
        concurrency_limit=ONE_AT_A_TIME_QUEUED,
        description="dvc repro of whatever went stale, on the cron schedule in params.yaml",
        tags=tags,
    )
    on_demand = facekeys_pipeline.to_deployment(
        "on-demand",
        parameters={"wait_for_lock": False},
        concurrency_limit=ONE_AT_A_TIME_REFUSED,
        description=(
            "prefect deployment run 'facekeys-pipeline/on-demand' --watch [--param targets=...] "
            "[--param force=true] [--param set_params='{\"train.epochs\": 30}']"
        ),
        tags=tags,
    )
    on_data_change = facekeys_pipeline.to_deployment(
        "on-data-change",
        triggers=[
            DeploymentEventTrigger(
                name=f"facekeys data changed ({root.name})",
                expect={DATA_CHANGED_EVENT},
                match={"prefect.resource.id": f"facekeys.workspace.{orch.workspace_id(root)}"},
                parameters={"refetch_changed": True, "wait_for_lock": True},
            )
        ],
        parameters={"refetch_changed": True, "wait_for_lock": True},
        concurrency_limit=ONE_AT_A_TIME_QUEUED,
        description="fetches the changed data sets again and reruns what that makes stale",
        tags=tags,
    )
    data_check = facekeys_data_check.to_deployment(
        "data-check",
        schedules=[Interval(timedelta(minutes=settings.data_check_minutes))],
        concurrency_limit=ONE_AT_A_TIME_REFUSED,
        description="compares the data sources with their last fetch; emits an event on a change",
        tags=tags,
    )
    return [nightly, on_demand, on_data_change, data_check]


ZOMBIE_AUTOMATION = "facekeys: crash flow runs whose process died"


def ensure_zombie_automation(heartbeat_s: float) -> None:
    """Creates, once per server, Prefect's automation that marks a flow run Crashed when its
    heartbeats stop (its process was killed or its machine died) for three heartbeat periods,
    so a dead run does not stay "Running" in the UI."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    with get_client(sync_client=True) as client:
        if client.read_automations_by_name(ZOMBIE_AUTOMATION):
            return
    ends = ("Completed", "Failed", "Cancelled", "Crashed")
    Automation(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in ends)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=3 * heartbeat_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {3 * heartbeat_s:.0f} s: the run's process died",
            )
        ],
    ).create()


def main() -> None:
    """Serves the deployments until stopped (SIGTERM or Ctrl-C)."""
    from prefect import serve
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    try:
        deployments = build_deployments()
    except FacekeysError as exc:
        print(f"facekeys serve: error: {exc}", file=sys.stderr)
        sys.exit(1)
    ensure_zombie_automation(float(PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() or 180))
    serve(*deployments, pause_on_shutdown=False)


if __name__ == "__main__":
    main()
