"""Fetching a data set into ``data/raw/<dataset>/`` in a fixed layout.

A source is a local folder, a local zip, an http(s) URL of a zip, or ``derived:<dataset>``
(made from another fetched data set). Where a source comes from is decided first
(``facekeys.data.source_plan``); this module then brings its files into a staging folder
(``facekeys.data.download``, ``facekeys.data.extract``, ``facekeys.data.derive_kaggle15``), writes the manifest, and
replaces the output folder atomically, so a broken fetch leaves nothing half-written. The
source's fingerprint (``facekeys.data.source_fingerprint``) is recorded beside the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facekeys.data.atomic_files import atomic_dir, sha256_file, write_json
from facekeys.data.dataset_layout import DATASETS, DatasetLayout
from facekeys.data.derive_kaggle15 import DERIVABLE, parse_derived
from facekeys.data.download import download_zip
from facekeys.errors import FacekeysError
from facekeys.data.extract import copy_from_folder, extract_from_zip
from facekeys.data.held_out_test import hold_out_unlabelled_test
from facekeys.data.kaggle_credentials import KaggleCredentials
from facekeys.data.source_fingerprint import (
    derived_source_fingerprint,
    fingerprints_differ,
    local_fingerprint,
    plan_fingerprint,
    url_fingerprint,
)
from facekeys.data.source_plan import FetchSettings, SourcePlan, setting_name, source_env_var


def fetch_planned(
    plan: SourcePlan,
    out: str | os.PathLike[str],
    settings: FetchSettings | None = None,
    raw_root: str | os.PathLike[str] = "data/raw",
    source_record: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Fetches a data set as planned by ``plan_source`` (see ``fetch_dataset``).

    A derived data set is made from its base data set's folder under ``raw_root`` when that
    folder was fetched from the base's current source and the source is unchanged since;
    otherwise the base is fetched into a temporary folder first (so the order in which DVC runs
    the two fetches does not matter).

    Raises:
        FacekeysError: as ``fetch_dataset``; a derived source whose base data is missing names
            the base's setting.
    """
    settings = settings or FetchSettings()
    what = (plan.dataset, plan.source, out, settings, plan.origin, source_record)
    if plan.base is None:
        return fetch_dataset(*what, credentials=plan.credentials)
    with _base_folder(plan, Path(out).parent, settings, Path(raw_root)) as (folder, fingerprint):
        derived = derived_source_fingerprint(plan.base, fingerprint)
        return fetch_dataset(*what, derived_input=folder, derived_fingerprint=derived)


@contextlib.contextmanager
def _base_folder(
    plan: SourcePlan, scratch: Path, settings: FetchSettings, raw_root: Path
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The fetched folder a derived data set is made from, and its source's fingerprint."""
    base = plan.base
    assert base is not None
    fetched = raw_root / base.dataset
    record = _read_record(raw_root / f"{base.dataset}.source.json")
    try:
        current: dict[str, Any] | None = plan_fingerprint(base, settings.timeout_s)
    except FacekeysError:
        current = None  # fetched below, which says what is wrong with the source
    if (
        current is not None
        and (fetched / "manifest.json").is_file()
        and record.get("source") == base.source
        and fingerprints_differ(record.get("fingerprint"), current) is False
    ):
        yield fetched, current
        return
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{base.dataset}-", dir=scratch) as tmp:
        base_record = Path(tmp) / "source.json"
        try:
            fetch_planned(base, Path(tmp) / base.dataset, settings, raw_root, base_record)
        except FacekeysError as exc:
            raise FacekeysError(
                f"{plan.source}: the {base.dataset} data it is made from cannot be fetched "
                f"({setting_name(base.dataset, base.origin)}): {exc}"
            ) from None
        yield Path(tmp) / base.dataset, _read_record(base_record).get("fingerprint") or {}


def _read_record(path: Path) -> dict[str, Any]:
    """A JSON object read from ``path``; empty where the file is missing or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def fetch_dataset(
    dataset: str,
    source: str,
    out: str | os.PathLike[str],
    settings: FetchSettings | None = None,
    source_origin: str = "argument",
    source_record: str | os.PathLike[str] | None = None,
    *,
    credentials: KaggleCredentials | None = None,
    derived_input: str | os.PathLike[str] | None = None,
    derived_fingerprint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Brings ``dataset`` from ``source`` into ``out`` and writes ``out/manifest.json``.

    Args:
        dataset: A key of ``DATASETS``.
        source: Local folder, local zip, or http(s) URL of a zip.
        out: Output folder; replaced as a whole on success, untouched on failure.
        settings: Download and extraction limits.
        source_origin: Where ``source`` was configured (recorded in the manifest).
        source_record: Where to write the source, its origin and its fingerprint
            (``source_fingerprint``) once the folder is in place: what the orchestrator's data
            check compares the source with later.
        credentials: Kaggle credentials, sent (as basic auth) only to a competition URL.
        derived_input: For a ``derived:`` source: the fetched folder it is made from.
        derived_fingerprint: For a ``derived:`` source: the fingerprint to record.

    Returns:
        The manifest: data set, source, and sha256 and size of every CSV, image counts.

    Raises:
        FacekeysError: unknown data set, missing source, failed download, unsafe or incomplete
            archive.
    """
    settings = settings or FetchSettings()
    if dataset not in DATASETS:
        raise FacekeysError(f"unknown data set {dataset!r}; known: {', '.join(DATASETS)}")
    layout = DATASETS[dataset]
    with atomic_dir(Path(out)) as staging:
        if parse_derived(source) is not None:
            if derived_input is None or DERIVABLE.get(dataset) != parse_derived(source):
                raise FacekeysError(f"{dataset}: source {source!r} cannot be derived here")
            fingerprint, extra = derived_fingerprint, _derive(dataset, Path(derived_input), staging)
        elif source.startswith(("http://", "https://")):
            setting = setting_name(dataset, source_origin)
            fingerprint, extra = _from_url(source, layout, staging, settings, credentials, setting)
        else:
            fingerprint, extra = _from_local(dataset, source, layout, staging, settings), {}
        if layout.format == "kaggle15":
            held_out = hold_out_unlabelled_test(staging)
            if held_out:
                extra["test_held_out"] = held_out
        manifest = _manifest(dataset, source, source_origin, extra, layout, staging)
        write_json(staging / "manifest.json", manifest)
    if source_record is not None:
        _write_source_record(source_record, dataset, source, source_origin, fingerprint)
    return manifest


def _write_source_record(
    path: str | os.PathLike[str],
    dataset: str,
    source: str,
    source_origin: str,
    fingerprint: dict[str, Any] | None,
) -> None:
    """Records the source and its fingerprint, for the orchestrator's data check.

    Beside the folder, not in it: a source touched without a change of content must not make
    every later stage stale.
    """
    write_json(
        path,
        {
            "dataset": dataset,
            "source": source,
            "source_origin": source_origin,
            "fingerprint": fingerprint,
        },
    )


def _from_url(
    url: str,
    layout: DatasetLayout,
    staging: Path,
    settings: FetchSettings,
    credentials: KaggleCredentials | None,
    setting: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Downloads and extracts a zip; returns its fingerprint and what the manifest adds."""
    download = staging / ".download.zip"
    headers = download_zip(url, download, settings, credentials, setting)
    fingerprint = url_fingerprint(headers)
    extract_from_zip(download, layout, staging, settings, label=url)
    download.unlink()
    extra: dict[str, Any] = {}
    if credentials is not None:
        extra["credentials"] = (
            "environment" if credentials.origin == "environment" else "kaggle.json"
        )
    return fingerprint, extra


def _from_local(
    dataset: str, source: str, layout: DatasetLayout, staging: Path, settings: FetchSettings
) -> dict[str, Any] | None:
    """Copies a local folder or extracts a local zip; returns the source's fingerprint."""
    path = Path(source.removeprefix("file://")).expanduser()
    # Taken before copying: a source that changes during the copy reads as changed later.
    fingerprint = local_fingerprint(path) if path.exists() else None
    if path.is_dir():
        copy_from_folder(path, layout, staging, settings)
    elif path.is_file():
        if not zipfile.is_zipfile(path):
            raise FacekeysError(f"{path}: source is neither a folder nor a zip file")
        extract_from_zip(path, layout, staging, settings, label=str(path))
    else:
        raise FacekeysError(
            f"{path}: source does not exist (set {source_env_var(dataset)} to a local "
            "folder, zip or URL)"
        )
    return fingerprint


def _manifest(
    dataset: str,
    source: str,
    source_origin: str,
    extra: dict[str, Any],
    layout: DatasetLayout,
    staging: Path,
) -> dict[str, Any]:
    """What ``manifest.json`` records: the source, ``extra``, and every CSV and image folder."""
    return {
        "dataset": dataset,
        "source": source,
        "source_origin": source_origin,
        **extra,
        "csvs": {
            name: {
                "sha256": sha256_file(staging / name),
                "bytes": (staging / name).stat().st_size,
            }
            for name in layout.csvs
        },
        "image_dirs": {
            name: {"files": sum(1 for p in (staging / name).rglob("*") if not p.is_dir())}
            for name in layout.image_dirs
        },
    }


def _derive(dataset: str, folder: Path, staging: Path) -> dict[str, Any]:
    """Makes ``dataset`` from a fetched folder; returns what the manifest records about it."""
    from tqdm import tqdm

    from facekeys.data.derive_kaggle15 import derive_kaggle15

    base = DERIVABLE[dataset]
    base_manifest = _read_record(folder / "manifest.json")
    with tqdm(
        total=None, unit="img", desc=f"derive {dataset}", disable=None, file=sys.stderr
    ) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        splits = derive_kaggle15(folder, staging, progress=progress)
    return {
        "derived_from": {
            "dataset": base,
            "source": base_manifest.get("source"),
            "csvs": base_manifest.get("csvs"),
        },
        "derived_rows": splits,
    }
