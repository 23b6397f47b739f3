"""The local orchestration services: a Prefect server, an MLflow tracking server on the
project's store, and the process that serves the Prefect deployments, each in the background
with its log in ``.orchestrate/logs/``; starting, stopping and checking them, and the
``scripts/orchestrate`` command line. What each service is: ``service_specs``; its process by
pid file: ``service_processes``.

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
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from facekeys.errors import FacekeysError
from facekeys.orchestration.decisions import OrchestrateSettings, check_cron, server_answers
from facekeys.orchestration.service_processes import end_process_groups, read_pid, write_pid
from facekeys.orchestration.service_specs import Layout, Service, client_env, services
from facekeys.params import load_params


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
    end_process_groups(pid, grace_s)
    layout.pid(name).unlink(missing_ok=True)
    log(f"{name}: stopped")


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


def _parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/orchestrate``."""
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
    return parser


def _start_command(layout: Layout, settings: OrchestrateSettings, env: dict[str, str]) -> int:
    """``start``: starts the services, then prints what another shell needs."""
    with _exclusive(layout):
        start(layout, settings)
    print("\nIn another shell:")
    print("\n".join(f"export {k}={v}" for k, v in env.items()))
    print(f"\nPrefect UI: http://127.0.0.1:{settings.prefect_port}/deployments")
    print(f"MLflow UI:  http://127.0.0.1:{settings.mlflow_port}/#/models")
    print("Run now:    prefect deployment run 'facekeys-pipeline/on-demand' --watch")
    return 0


def _status_command(layout: Layout, settings: OrchestrateSettings) -> int:
    """``status``: one line per service; exit status 3 unless all of them answer."""
    report = status(layout, settings)
    for name, item in report.items():
        state = "not running" if item["pid"] is None else f"pid {item['pid']}"
        answers = "answers" if item["answers"] else "does not answer"
        where = f" at {item['url']}" if item["url"] else ""
        print(f"{name}: {state}, {answers}{where}")
    return 0 if all(item["answers"] for item in report.values()) else 3


def _run_command(
    layout: Layout,
    settings: OrchestrateSettings,
    env: dict[str, str],
    deployment: str,
    extra: list[str],
) -> int:
    """``run``: checks that the servers and the serving process are up, then becomes
    ``prefect deployment run`` (returns only when a check failed)."""
    merged = {**env, **{k: os.environ[k] for k in env if os.environ.get(k)}}
    problems = missing_servers(settings, merged)
    if read_pid(layout.pid("serve")) is None:
        problems.append(
            "the serving process is not running (nothing would execute the run): start "
            "it with scripts/orchestrate start"
        )
    name = f"facekeys-pipeline/{deployment}"
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
    return 0  # not reached: execve replaced this process


def main(argv: list[str] | None = None) -> int:
    """Runs one ``scripts/orchestrate`` command.

    Args:
        argv: the arguments (default: the process's own).

    Returns:
        The exit status: 0, 1 for an error (printed in one line), 3 from ``status`` when a
        service does not answer.
    """
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    layout = Layout(Path.cwd().resolve())
    try:
        settings = OrchestrateSettings.from_params(load_params(layout.root / "params.yaml"))
        env = client_env(layout, settings)
        if args.command == "start":
            return _start_command(layout, settings, env)
        if args.command == "stop":
            with _exclusive(layout):
                stop(layout, settings)
        elif args.command == "status":
            return _status_command(layout, settings)
        elif args.command == "env":
            print("\n".join(f"export {k}={v}" for k, v in env.items()))
        elif args.command == "run":
            return _run_command(layout, settings, env, args.deployment, extra)
    except FacekeysError as exc:
        print(f"orchestrate: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
