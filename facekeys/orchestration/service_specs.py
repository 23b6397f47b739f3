"""What the three local orchestration services are: the Prefect server, the MLflow tracking
server and the serving process, each with its command, environment and the address that says
it is ready, and where a project keeps their state (``.orchestrate/``)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from facekeys.orchestration.decisions import OrchestrateSettings

# Prefect's filesystem lease storage keeps a held workspace lock's lease across a server restart.
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"


@dataclass
class Service:
    """One background process and how to tell that it is ready."""

    name: str
    command: list[str]
    env: dict[str, str]
    ready_url: str
    ready_timeout_s: float
    url: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    """Where the services of one project keep their state."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / ".orchestrate"

    @property
    def prefect_home(self) -> Path:
        return self.state / "prefect"

    def log(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    def pid(self, name: str) -> Path:
        return self.state / "run" / f"{name}.pid"


def client_env(layout: Layout, settings: OrchestrateSettings) -> dict[str, str]:
    """What a shell needs to talk to these services (the ``export`` lines ``start`` prints)."""
    return {
        "PREFECT_HOME": str(layout.prefect_home),
        "PREFECT_API_URL": f"http://127.0.0.1:{settings.prefect_port}/api",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{settings.mlflow_port}",
    }


def services(layout: Layout, settings: OrchestrateSettings) -> list[Service]:
    """The three services, in start order (stop runs the reverse)."""
    base = _base_env(layout, settings)
    return [
        _prefect_server(settings, base),
        _mlflow_server(layout, settings, base),
        _serving_process(layout, settings, base),
    ]


def _base_env(layout: Layout, settings: OrchestrateSettings) -> dict[str, str]:
    """The environment every service starts with: this one, quiet, with the client variables."""
    bin_dir = Path(sys.executable).parent
    quiet = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        # mlflow starts uvicorn from PATH; DVC stages run `python` from PATH.
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return {**os.environ, **quiet, **client_env(layout, settings)}


def _prefect_server(settings: OrchestrateSettings, base: dict[str, str]) -> Service:
    """The Prefect server (UI and API), ready when its health address answers."""
    prefect_url = f"http://127.0.0.1:{settings.prefect_port}"
    return Service(
        "prefect-server",
        [
            str(Path(sys.executable).parent / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(settings.prefect_port),
        ],
        {
            **base,
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
            # Expired leases are revoked by this loop (default every 15 s): a killed run
            # then holds the workspace for its lease plus at most 5 s.
            "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "5",
            # Off by default: without them `prefect deployment run --watch` shows a run's
            # state changes but none of its log lines (DVC's output, a stage's error).
            "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true",
            "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
        },
        f"{prefect_url}/api/health",
        90,
        url=prefect_url,
    )


def _mlflow_server(layout: Layout, settings: OrchestrateSettings, base: dict[str, str]) -> Service:
    """The MLflow tracking server on the project's mlflow.db and mlartifacts/."""
    mlflow_url = f"http://127.0.0.1:{settings.mlflow_port}"
    return Service(
        "mlflow-server",
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(settings.mlflow_port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{layout.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(layout.root / "mlartifacts"),
        ],
        {**base, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        f"{mlflow_url}/health",
        120,
        url=mlflow_url,
    )


def _serving_process(
    layout: Layout, settings: OrchestrateSettings, base: dict[str, str]
) -> Service:
    """The process that serves the deployments, ready once the server lists on-demand."""
    prefect_url = f"http://127.0.0.1:{settings.prefect_port}"
    return Service(
        "serve",
        [sys.executable, "-m", "flows.serve"],
        {
            **base,
            "FACEKEYS_WORKSPACE": str(layout.root),
            "PREFECT_RUNNER_POLL_FREQUENCY": str(max(1, round(settings.runner_poll_s))),
            # Heartbeats let the server mark a run Crashed when its process dies.
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(max(30, round(settings.heartbeat_s))),
            # Flow runs send their log lines every half second (default 2 s): DVC's output
            # reaches the UI and `--watch` while it happens, and `--watch`, which waits 3 s
            # after a run's last line, returns sooner.
            "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
            "PYTHONUNBUFFERED": "1",
        },
        f"{prefect_url}/api/deployments/name/facekeys-pipeline/on-demand",
        120,
    )
