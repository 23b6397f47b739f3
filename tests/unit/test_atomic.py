"""Atomic writes under real faults: writers killed with SIGKILL, a file where a folder should
be, a folder the operating system refuses to write, and a stage reporting them in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from facekeys.data.atomic_files import (
    atomic_dir,
    atomic_file,
    remove_stale_staging,
    write_files_together,
    write_json,
)
from facekeys.errors import OutputError
from facekeys.stage_runner import run_stage
from tests.conftest import REPO

# A writer that stages a part of its output, says where it is, and waits to be killed.
WRITER = """
import sys, time
from pathlib import Path
from facekeys.data.atomic_files import atomic_dir, atomic_file

target, kind = Path(sys.argv[1]), sys.argv[2]
if kind == "dir":
    with atomic_dir(target) as staging:
        (staging / "part.bin").write_bytes(b"x" * 100_000)
        print("ready", flush=True)
        time.sleep(600)
else:
    with atomic_file(target, "wb") as handle:
        handle.write(b"x" * 100_000)
        handle.flush()
        print("ready", flush=True)
        time.sleep(600)
"""


def start_writer(target: Path, kind: str) -> subprocess.Popen:
    """A real process inside ``atomic_dir``/``atomic_file`` of ``target``, past its first write."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), kind],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def staging_of(target: Path, pid: int) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.{pid}.*.tmp"))


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_the_next_write_removes_what_a_killed_writer_staged(tmp_path, kind):
    target = tmp_path / "out" / ("augmented" if kind == "dir" else "model.pt")
    killed = start_writer(target, kind)
    alive = start_writer(target, kind)
    try:
        assert len(staging_of(target, killed.pid)) == 1
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(timeout=30) == -signal.SIGKILL
        assert len(staging_of(target, killed.pid)) == 1, "SIGKILL leaves the staging behind"

        if kind == "dir":
            with atomic_dir(target) as staging:
                (staging / "complete.txt").write_text("all of it")
            assert [p.name for p in target.iterdir()] == ["complete.txt"]
        else:
            with atomic_file(target, "wb") as handle:
                handle.write(b"all of it")
            assert target.read_bytes() == b"all of it"

        assert staging_of(target, killed.pid) == [], "a dead writer's staging is removed"
        assert len(staging_of(target, alive.pid)) == 1, "a live writer's staging is kept"
        assert staging_of(target, os.getpid()) == []
    finally:
        for proc in (killed, alive):
            proc.kill()
            proc.wait(timeout=30)


def test_a_killed_replacement_gives_the_previous_output_back(tmp_path):
    """A writer killed between moving the old folder aside and moving the new one in leaves
    the old output in its ``.old`` folder and none at the target: it is put back."""
    target = tmp_path / "augmented"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    aside = tmp_path / f".augmented.{int(dead.stdout)}.abc123_x.old"
    (aside / "content").mkdir(parents=True)
    (aside / "content" / "train.npz").write_text("previous")

    assert remove_stale_staging(target) == [aside]
    assert (target / "train.npz").read_text() == "previous"
    assert not aside.exists()


def test_a_file_in_the_way_is_one_line_and_nothing_is_written(tmp_path):
    (tmp_path / "metrics").write_text("a file, where the stage expects a folder")
    path = tmp_path / "metrics" / "x" / "eval.json"
    with pytest.raises(OutputError) as caught:
        write_json(path, {"nme": 0.1})
    assert (
        str(caught.value) == f"{path}: cannot write: {tmp_path / 'metrics'} is a file, not a folder"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics"]


def run_stage_in_process(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """A stage script in a fresh process, as DVC runs it, in a project folder of its own."""
    (tmp_path / "params.yaml").write_text("datasets: [x]\n")
    script = (
        "from pathlib import Path\n"
        "from facekeys.data.atomic_files import write_json\n"
        "from facekeys.stage_runner import run_stage\n"
        f"def main(params, argv):\n{body}\n"
        "run_stage('evaluate', main)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stage_metrics_folder_is_a_file(tmp_path):
    (tmp_path / "metrics").write_text("")
    result = run_stage_in_process(tmp_path, "    write_json('metrics/x/eval.json', {'nme': 1})")
    assert result.returncode == 1
    assert result.stderr == (
        "stage evaluate: error: metrics/x/eval.json: cannot write: metrics is a file, not a "
        "folder\n"
    )


def test_stage_missing_input_is_one_line(tmp_path):
    result = run_stage_in_process(tmp_path, "    Path('metrics/x/train.json').read_text()")
    assert result.returncode == 1
    assert result.stderr == (
        "stage evaluate: error: metrics/x/train.json: No such file or directory\n"
    )


def test_stage_folder_the_system_refuses(tmp_path):
    """sysfs refuses new files even to root: a read-only folder where chmod cannot make one."""
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs here to stand in for a read-only folder")
    result = run_stage_in_process(tmp_path, "    write_json('/sys/eval.json', {'nme': 1})")
    if result.returncode == 0:
        Path("/sys/eval.json").unlink(missing_ok=True)
        pytest.skip("this machine lets the process create files in /sys")
    assert result.returncode == 1
    assert result.stderr in (
        "stage evaluate: error: /sys/eval.json: cannot write: Permission denied\n",
        "stage evaluate: error: /sys/eval.json: cannot write: Read-only file system\n",
        "stage evaluate: error: /sys/eval.json: cannot write: Operation not permitted\n",
    )


def test_run_stage_in_this_process_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("datasets: [x]\n")
    (tmp_path / "models").write_text("")

    def body(params, argv):
        with atomic_file("models/x/model.pt", "wb") as handle:
            handle.write(b"weights")

    with pytest.raises(SystemExit) as exited:
        run_stage("train", body)
    assert exited.value.code == 1
    assert capsys.readouterr().err == (
        "stage train: error: models/x/model.pt: cannot write: models is a file, not a folder\n"
    )


def test_files_written_together_are_renamed_together_under_the_folder_lock(tmp_path):
    """While another writer holds the folder (a real flock from a second open), neither file of
    the set changes; then both do. A write that fails leaves both as they were."""
    import fcntl
    import threading

    table, errors = tmp_path / "preds.csv", tmp_path / "preds.errors.csv"
    table.write_text("old table")
    errors.write_text("old errors")
    holder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    writer = threading.Thread(
        target=write_files_together,
        args=(
            [(table, lambda h: h.write("new table")), (errors, lambda h: h.write("new errors"))],
        ),
    )
    writer.start()
    writer.join(timeout=0.5)
    try:
        assert writer.is_alive(), "the renames wait for the folder lock"
        assert (table.read_text(), errors.read_text()) == ("old table", "old errors")
    finally:
        os.close(holder)
    writer.join(timeout=30)
    assert (table.read_text(), errors.read_text()) == ("new table", "new errors")

    (tmp_path / "full").write_text("a file where the second output's folder should be")
    with pytest.raises(OutputError) as caught:
        write_files_together(
            [(table, lambda h: h.write("third table")), (tmp_path / "full" / "x.csv", print)]
        )
    assert str(caught.value) == (
        f"{tmp_path / 'full' / 'x.csv'}: cannot write: {tmp_path / 'full'} is a file, not a folder"
    )
    assert (table.read_text(), errors.read_text()) == ("new table", "new errors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "preds.csv", "preds.errors.csv"]
