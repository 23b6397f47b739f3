"""The local orchestration services: a Prefect server, an MLflow tracking server on the
project's store, and the process that serves the Prefect deployments, each in the background
with its log in ``.orchestrate/logs/``.

    scripts/orchestrate start | stop | status | env | run DEPLOYMENT [prefect args]

State lives in the git-ignored ``.orchestrate/`` of the project: ``prefect/`` (Prefect's home
and SQLite database), ``logs/``, ``run/`` (process ids). Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from facekeys.errors import FacekeysError
from facekeys.orchestration import OrchestrateSettings, check_cron, server_answers
from facekeys.params import load_params

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
    bin_dir = Path(sys.executable).parent
    quiet = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        # mlflow starts uvicorn from PATH; DVC stages run `python` from PATH.
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    base = {**os.environ, **quiet, **client_env(layout, settings)}
    prefect_url = f"http://127.0.0.1:{settings.prefect_port}"
    mlflow_url = f"http://127.0.0.1:{settings.mlflow_port}"
    return [
        Service(
            "prefect-server",
            [
                str(bin_dir / "prefect"),
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
            },
            f"{prefect_url}/api/health",
            90,
            url=prefect_url,
        ),
        Service(
            "mlflow-server",
            [
                str(bin_dir / "mlflow"),
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
        ),
        Service(
            "serve",
            [sys.executable, "-m", "flows.serve"],
            {
                **base,
                "FACEKEYS_WORKSPACE": str(layout.root),
                "PREFECT_RUNNER_POLL_FREQUENCY": str(max(1, round(settings.runner_poll_s))),
                # Heartbeats let the server mark a run Crashed when its process dies.
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(max(30, round(settings.heartbeat_s))),
                "PYTHONUNBUFFERED": "1",
            },
            f"{prefect_url}/api/deployments/name/facekeys-pipeline/on-demand",
            120,
        ),
    ]


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/<pid>/stat), None when gone or
    a zombie: with the pid it names one process, even after the pid was reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def write_pid(path: Path, pid: int) -> None:
    """Records a process as ``pid start-time``."""
    path.write_text(f"{pid} {_start_time(pid) or ''}\n")


def read_pid(path: Path) -> int | None:
    """The process id in ``path`` when that very process is alive (a stale file is removed)."""
    try:
        pid_text, _, started = path.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    now = _start_time(pid)
    if now is None or (started and now != started):
        path.unlink(missing_ok=True)
        return None
    return pid


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(empty log)"])[-1].strip()


def start(layout: Layout, settings: OrchestrateSettings, log=print) -> None:
    """Starts whatever of the three services is not running yet, waiting until each answers.

    Raises:
        FacekeysError: a port held by another program, or a service that exits or never
            answers (its log's last line says why); services this call started are stopped.
    """
    check_cron(settings.nightly_cron, settings.nightly_timezone)
    for folder in (layout.prefect_home, layout.log("x").parent, layout.pid("x").parent):
        folder.mkdir(parents=True, exist_ok=True)
    started: list[Service] = []
    for service in services(layout, settings):
        pid = read_pid(layout.pid(service.name))
        if pid is not None:
            log(f"{service.name}: already running (pid {pid})")
            continue
        if service.url and server_answers(service.ready_url, 1.0):
            _stop_all(layout, [s.name for s in reversed(started)], log)
            raise FacekeysError(
                f"{service.url} already answers but was not started by scripts/orchestrate: "
                f"stop that program or change the port in params.yaml (orchestrate)"
            )
        log_path = layout.log(service.name)
        with open(log_path, "ab") as handle:
            process = subprocess.Popen(
                service.command,
                cwd=layout.root,
                env=service.env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop ends all its children
            )
        write_pid(layout.pid(service.name), process.pid)
        started.append(service)
        deadline = time.monotonic() + service.ready_timeout_s
        launched = time.time() - 1.0
        while not _ready(service, launched):
            if process.poll() is not None or time.monotonic() > deadline:
                why = "exited" if process.poll() is not None else "did not answer in time"
                _stop_all(layout, [s.name for s in reversed(started)], log)
                raise FacekeysError(
                    f"{service.name} {why}: {_last_line(log_path)} (log: {log_path})"
                )
            time.sleep(0.5)
        log(f"{service.name}: started (pid {process.pid}, log {log_path})")


def _ready(service: Service, launched: float) -> bool:
    """Whether a service answers; the serving process only once it has registered its
    deployments anew (the server keeps them from an earlier start)."""
    if service.url:
        return server_answers(service.ready_url, 2.0)
    from datetime import datetime

    try:
        with urllib.request.urlopen(service.ready_url, timeout=2.0) as response:
            updated = json.loads(response.read()).get("updated") or ""
        return datetime.fromisoformat(updated.replace("Z", "+00:00")).timestamp() >= launched
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return False


def _stop_all(layout: Layout, names: list[str], log) -> None:
    for name in names:
        stop_one(layout, name, log)


def stop_one(layout: Layout, name: str, log=print, grace_s: float = 30.0) -> None:
    """Stops one service and every process of its group: SIGTERM, then SIGKILL after grace."""
    pid = read_pid(layout.pid(name))
    if pid is None:
        layout.pid(name).unlink(missing_ok=True)
        return
    # Prefect starts each flow run in a process group of its own: end those with it.
    groups = [pid, *_descendant_groups(pid)]
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.2)
    for group in groups:
        if _group_alive(group):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
    layout.pid(name).unlink(missing_ok=True)
    log(f"{name}: stopped")


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, parent pid, process group, state) of every process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            found.append((int(stat.parent.name), int(fields[1]), int(fields[2]), fields[0]))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _descendant_groups(pid: int) -> list[int]:
    """Process groups of ``pid``'s descendants that differ from its own."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for child, parent, _, _ in processes:
        children.setdefault(parent, []).append(child)
    group_of = {p: g for p, _, g, _ in processes}
    seen, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return sorted({group_of[p] for p in seen} - {group_of.get(pid, pid)})


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is alive (zombies do not count)."""
    return any(group == pgid and state != "Z" for _, _, group, state in _processes())


def stop(layout: Layout, settings: OrchestrateSettings, log=print) -> None:
    """Stops the services in reverse order: the serving process first (it needs the server to
    stop cleanly), then MLflow, then the Prefect server."""
    _stop_all(layout, [s.name for s in reversed(services(layout, settings))], log)


def status(layout: Layout, settings: OrchestrateSettings) -> dict[str, dict[str, object]]:
    """What runs: per service its process id and whether it answers."""
    report = {}
    for service in services(layout, settings):
        pid = read_pid(layout.pid(service.name))
        report[service.name] = {
            "pid": pid,
            "answers": pid is not None and server_answers(service.ready_url, 2.0),
            "url": service.url or None,
            "log": str(layout.log(service.name)),
        }
    return report


def missing_servers(settings: OrchestrateSettings, env: dict[str, str]) -> list[str]:
    """One line per server a trigger needs that does not answer, saying how to start it."""
    problems = []
    prefect_api = env.get("PREFECT_API_URL") or f"http://127.0.0.1:{settings.prefect_port}/api"
    if not server_answers(prefect_api.rstrip("/") + "/health"):
        problems.append(
            f"Prefect server {prefect_api} is not running: start it with scripts/orchestrate start"
        )
    mlflow = env.get("MLFLOW_TRACKING_URI") or f"http://127.0.0.1:{settings.mlflow_port}"
    if mlflow.startswith("http") and not server_answers(mlflow.rstrip("/") + "/health"):
        problems.append(
            f"MLflow server {mlflow} is not running: start it with scripts/orchestrate start"
        )
    return problems


def deployment_exists(prefect_api: str, name: str) -> bool:
    """Whether the server knows deployment ``FLOW/DEPLOYMENT``."""
    try:
        with urllib.request.urlopen(f"{prefect_api}/deployments/name/{name}", timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def _exclusive(layout: Layout):
    """One start or stop at a time per project: two at once would each launch a server."""
    layout.pid("x").parent.mkdir(parents=True, exist_ok=True)
    with open(layout.pid("x").parent / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/orchestrate",
        description=(
            "Local orchestration for facekeys: a Prefect server (UI and API), an MLflow server "
            "on the project's mlflow.db and mlartifacts/, and the process that serves the "
            "deployments nightly, on-demand, on-data-change and data-check. Ports and schedules: "
            "params.yaml, section orchestrate."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="start what is not running (harmless when all run)")
    sub.add_parser("stop", help="stop all: the serving process first, then MLflow and Prefect")
    sub.add_parser("status", help="say what runs")
    sub.add_parser("env", help="print the export lines for another shell")
    run = sub.add_parser(
        "run",
        help="check both servers, then prefect deployment run facekeys-pipeline/DEPLOYMENT",
        description="Extra arguments go to `prefect deployment run` (--param k=v, --watch).",
    )
    run.add_argument("deployment", help="on-demand, nightly or on-data-change")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    layout = Layout(Path.cwd().resolve())
    try:
        settings = OrchestrateSettings.from_params(load_params(layout.root / "params.yaml"))
        env = client_env(layout, settings)
        if args.command == "start":
            with _exclusive(layout):
                start(layout, settings)
            print("\nIn another shell:")
            print("\n".join(f"export {k}={v}" for k, v in env.items()))
            print(f"\nPrefect UI: http://127.0.0.1:{settings.prefect_port}/deployments")
            print(f"MLflow UI:  http://127.0.0.1:{settings.mlflow_port}/#/models")
            print("Run now:    prefect deployment run 'facekeys-pipeline/on-demand' --watch")
        elif args.command == "stop":
            with _exclusive(layout):
                stop(layout, settings)
        elif args.command == "status":
            report = status(layout, settings)
            for name, item in report.items():
                state = "not running" if item["pid"] is None else f"pid {item['pid']}"
                answers = "answers" if item["answers"] else "does not answer"
                where = f" at {item['url']}" if item["url"] else ""
                print(f"{name}: {state}, {answers}{where}")
            return 0 if all(item["answers"] for item in report.values()) else 3
        elif args.command == "env":
            print("\n".join(f"export {k}={v}" for k, v in env.items()))
        elif args.command == "run":
            merged = {**env, **{k: os.environ[k] for k in env if os.environ.get(k)}}
            problems = missing_servers(settings, merged)
            if read_pid(layout.pid("serve")) is None:
                problems.append(
                    "the serving process is not running (nothing would execute the run): start "
                    "it with scripts/orchestrate start"
                )
            name = f"facekeys-pipeline/{args.deployment}"
            if not problems and not deployment_exists(merged["PREFECT_API_URL"], name):
                problems.append(
                    f"deployment {name} is not served: scripts/orchestrate start starts the "
                    "serving process (known: nightly, on-demand, on-data-change)"
                )
            if problems:
                for line in problems:
                    print(f"orchestrate: error: {line}", file=sys.stderr)
                return 1
            prefect = str(Path(sys.executable).parent / "prefect")
            os.execve(
                prefect,
                [prefect, "deployment", "run", name, *extra],
                {**os.environ, **merged},
            )
    except FacekeysError as exc:
        print(f"orchestrate: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
