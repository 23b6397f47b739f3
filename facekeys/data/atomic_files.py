"""Atomic writes: a killed process never leaves a half-written output behind.

Every output is staged beside its target (same file system, so the final rename is atomic) under
a hidden name that carries the writer's process id: ``.<name>.<pid>.<random>.tmp`` (and
``.<name>.<pid>.<random>.old`` for a folder being replaced). A process killed with SIGKILL cannot
clean up, so the next write of the same target removes the staging entries of writers that are
no longer alive; a live writer's entries are never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from facekeys.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; outputs get the usual permissions instead.
_UMASK = _umask()


def _staging_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _staging_pattern(path: Path) -> re.Pattern[str]:
    # tempfile's random part has no dots, so a target whose name extends this one ("a" and
    # "a.1") never matches the other's entries.
    # A trailing extension (``.tmp.mp4``) is allowed: some writers choose the container by it.
    return re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]+\.(tmp|old)(\.\w+)?")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (killed, waiting to be reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no procfs (not Linux), or it just ended: trust os.kill
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def remove_stale_staging(path: str | os.PathLike[str]) -> list[Path]:
    """Removes the staging entries of ``path`` left by writers that are no longer alive.

    A dead writer's ``.old`` folder holds the previous output when the writer was killed between
    moving it aside and moving the new one in; it is put back where ``path`` is missing.

    Returns:
        The entries removed (or restored), for logs and tests.
    """
    path = Path(path)
    pattern = _staging_pattern(path)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:  # nothing to clean where the folder cannot be listed; writing will say why
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or pid_alive(int(match[1])):
            continue
        stale = Path(entry.path)
        previous = stale / "content"
        if match[2] == "old" and not path.exists() and not path.is_symlink():
            with contextlib.suppress(OSError):
                os.replace(previous, path)
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        removed.append(stale)
    return removed


def _make_parent(path: Path) -> None:
    """Creates the folder of ``path``; a file in the way becomes one line naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise OutputError(f"{path}: cannot write: {blocker} is a file, not a folder") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _write_failure(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"{path}: cannot write: {exc.strerror or exc}")


def _is_own_write(exc: BaseException, tmp: str) -> bool:
    # Writes through the handle fail without a file name (ENOSPC, EFBIG); errors that name
    # another file come from the caller's own reads and keep their message.
    return isinstance(exc, OSError) and exc.filename in (None, tmp)


def _staging_file(path: Path, extension: str = "") -> tuple[int, str]:
    """A new hidden file beside ``path`` (descriptor and name), named for this process; its name
    ends in ``.tmp`` plus ``extension``."""
    try:
        return tempfile.mkstemp(
            prefix=_staging_prefix(path), suffix=".tmp" + extension, dir=path.parent
        )
    except OSError as exc:
        raise _write_failure(path, exc) from None


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fails now, in one line, where ``path`` could not be written later.

    Creates the folder of ``path`` and a staging file in it (removed at once), so that a long
    job finds a read-only folder or a file in the way before its work, not after.

    Raises:
        OutputError: The folder cannot be created or written.
    """
    path = Path(path)
    _make_parent(path)
    if path.is_dir():
        raise OutputError(f"{path}: cannot write: it is a folder")
    fd, tmp = _staging_file(path)
    os.close(fd)
    os.unlink(tmp)


def write_files_together(
    writers: Sequence[tuple[str | os.PathLike[str], Callable[[Any], None]]],
    mode: str = "w",
    **open_kwargs: Any,
) -> None:
    """Writes files that belong together (a table and its errors file) so they stay a set.

    ``writer(handle)`` fills a temporary file beside each path; the files are renamed onto
    their paths only once all of them are written and synced, under an exclusive lock of the
    first path's folder. So a failed write changes none of them, and two processes writing the
    same set never leave a mix of both (each one's renames happen together); only a kill between
    the renames themselves could.

    Raises:
        OutputError: A file cannot be written (read-only folder, full disk, a file in the way);
            all paths are then left as they were.
    """
    targets = [Path(p) for p, _ in writers]
    temps: list[str] = []
    try:
        for target, writer in zip(targets, (w for _, w in writers), strict=True):
            remove_stale_staging(target)
            _make_parent(target)
            fd, tmp = _staging_file(target)
            temps.append(tmp)
            os.chmod(tmp, 0o666 & ~_UMASK)
            try:
                with os.fdopen(fd, mode, **open_kwargs) as handle:
                    writer(handle)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                if _is_own_write(exc, tmp):
                    raise _write_failure(target, exc) from None
                raise
        with _locked_folder(targets[0].parent):
            for target, tmp in zip(targets, temps, strict=True):
                try:
                    os.replace(tmp, target)
                except OSError as exc:
                    raise _write_failure(target, exc) from None
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked_folder(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on a folder: no lock file is left behind."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # cannot be opened for locking: renames still happen, unserialised
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _staged(path: Path, extension: str = "") -> Iterator[tuple[int, str]]:
    """A staging file beside ``path`` (descriptor, name), renamed onto ``path`` when the body
    succeeds and removed when it fails; the body closes the descriptor."""
    remove_stale_staging(path)
    _make_parent(path)
    fd, tmp = _staging_file(path, extension)
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _is_own_write(exc, tmp):
            raise _write_failure(path, exc) from None
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> Iterator[Any]:
    """Opens a temporary file beside ``path`` and renames it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it was.

    Raises:
        OutputError: ``path`` cannot be written (read-only folder, full disk, a file in the way).
    """
    with _staged(Path(path)) as (fd, _), os.fdopen(fd, mode, **open_kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields the name of a staging file beside ``path`` for a writer that needs a file name, not
    a handle (``cv2.VideoWriter``), and renames it onto ``path`` on success.

    The staging name keeps the extension of ``path`` (``.out.mp4.<pid>.<random>.tmp.mp4``):
    such writers pick the container format by it. On any exception the staging file is removed
    and ``path`` is left as it was.

    Raises:
        OutputError: ``path`` cannot be written (read-only folder, full disk, a file in the way).
    """
    path = Path(path)
    with _staged(path, path.suffix) as (fd, tmp):
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Writes ``data`` as indented, key-sorted JSON, atomically."""
    with atomic_file(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields an empty staging folder that replaces ``path`` as a whole on success.

    The staging folder lives beside ``path`` (same file system, so the final rename is atomic).
    An old ``path`` is moved aside first and deleted only after the new one is in place.
    Staging folders of killed writers of ``path`` are removed first.

    Raises:
        OutputError: The staging folder cannot be created or moved into place.
    """
    path = Path(path)
    remove_stale_staging(path)
    _make_parent(path)
    prefix = _staging_prefix(path)
    try:
        staging = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise _write_failure(path, exc) from None
    os.chmod(staging, 0o777 & ~_UMASK)
    try:
        yield staging
        old = None
        try:
            if path.exists() or path.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=path.parent))
                os.replace(path, old / "content")
            os.replace(staging, path)
        except OSError as exc:
            if old is not None and os.path.lexists(old / "content"):
                os.replace(old / "content", path)  # the previous output, not nothing
                shutil.rmtree(old, ignore_errors=True)
            raise _write_failure(path, exc) from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Returns the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
