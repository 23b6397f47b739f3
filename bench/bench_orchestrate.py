"""Orchestration overhead: the pipeline through Prefect against DVC alone, on tiny data.

Starts the real services (``python -m facekeys.orchestration.services start``: a Prefect
server, an MLflow server and the serving process, on free ports) over a tiny generated workspace,
then measures in the same run:

- ``full_tiny_pipeline``: ``prefect deployment run 'facekeys-pipeline/on-demand' --watch`` on a
  fresh workspace until Completed, beside ``dvc repro`` on a second fresh workspace logging to
  the same MLflow server (the baseline). Goal (issue 14): under 10 % overhead.
- ``up_to_date``: the same trigger on the now up-to-date workspace (median of ``--repeats``),
  runner poll included (``orchestrate.runner_poll_s``, 5 s as shipped), beside a bare
  ``dvc repro`` no-op. Goal: under 15 s.

Usage: python bench/bench_orchestrate.py [--repeats 3] [--watch-interval 1]
Prints one line per case.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.tinyproject import exported, free_port, make_project, orchestrate  # noqa: E402

BIN = Path(sys.executable).parent


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd[:5])}\n{(result.stdout + result.stderr)[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="up-to-date triggers to time")
    parser.add_argument(
        "--watch-interval", type=int, default=1, help="seconds between the CLI's state polls"
    )
    args = parser.parse_args()
    prefect_port, mlflow_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-orchestrate-") as tmp:
        served_root, direct_root = Path(tmp) / "served", Path(tmp) / "direct"
        served_root.mkdir()
        direct_root.mkdir()

        def ports(params: dict, prefix: str) -> None:
            params["orchestrate"].update(prefect_port=prefect_port, mlflow_port=mlflow_port)
            params["register"]["model_name_prefix"] = prefix

        served, env = make_project(served_root, lambda p: ports(p, "bench-served"), commit=True)
        direct, direct_env = make_project(direct_root, lambda p: ports(p, "bench-direct"))
        for key in [k for k in env if k.startswith(("PREFECT_", "MLFLOW_TRACKING"))]:
            del env[key]
        start = orchestrate(served, "start", env=env)
        if start.returncode != 0:
            sys.exit(start.stderr)
        env.update(exported(start.stdout))
        direct_env["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
        trigger = [
            str(BIN / "prefect"),
            "deployment",
            "run",
            "facekeys-pipeline/on-demand",
            "--watch",
            "--watch-interval",
            str(args.watch_interval),
        ]
        dvc_repro = [sys.executable, "-m", "dvc", "repro"]
        try:
            direct_s = timed(dvc_repro, direct, direct_env)
            served_s = timed(trigger, served, env)
            overhead = 100 * (served_s - direct_s) / direct_s
            print(
                f"full_tiny_pipeline: prefect_watch_s={served_s:.1f} | "
                f"baseline_dvc_repro_s={direct_s:.1f} | overhead={overhead:.1f}% | "
                f"goal<10% {'MET' if overhead < 10 else 'MISSED'}",
                flush=True,
            )
            noop = statistics.median(
                timed(dvc_repro, served, {**env, "DVC_NO_ANALYTICS": "1"})
                for _ in range(args.repeats)
            )
            watched = [timed(trigger, served, env) for _ in range(args.repeats)]
            median = statistics.median(watched)
            print(
                f"up_to_date: prefect_watch_s={median:.1f} "
                f"(min {min(watched):.1f}, max {max(watched):.1f}, n={len(watched)}) | "
                f"baseline_dvc_repro_noop_s={noop:.1f} | "
                f"goal<15s {'MET' if median < 15 else 'MISSED'}",
                flush=True,
            )
        finally:
            orchestrate(served, "stop", env={**os.environ, **env})


if __name__ == "__main__":
    main()
