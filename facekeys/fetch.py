"""Fetching a data set into ``data/raw/<dataset>/`` in a fixed layout.

A source is a local folder, a local zip, or an http(s) URL of a zip. Downloads stream into a
temporary file with a progress bar; extraction refuses unsafe member names and caps the bytes it
writes; the output folder is replaced atomically, so a broken fetch leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from facekeys.atomic import atomic_dir, sha256_file, write_json
from facekeys.datasets import DATASETS, DatasetLayout
from facekeys.derive import DERIVABLE, DERIVED_PREFIX, parse_derived
from facekeys.errors import FacekeysError
from facekeys.kaggle import (
    KaggleCredentials,
    check_secure,
    find_credentials,
    is_competition_download,
    kaggle_json_path,
    refusal_message,
)


@dataclass(frozen=True)
class FetchSettings:
    """Limits of a fetch (the ``fetch`` section of params.yaml).

    Attributes:
        timeout_s: Seconds a download may go without receiving data.
        max_download_bytes: Largest download accepted.
        max_extract_bytes: Most bytes written when extracting zips (zip-bomb guard).
        kaggle_hosts: Hosts whose competition download URLs get the Kaggle credentials.
    """

    timeout_s: float = 60.0
    max_download_bytes: int = 10_000_000_000
    max_extract_bytes: int = 20_000_000_000
    kaggle_hosts: tuple[str, ...] = ("www.kaggle.com", "kaggle.com")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FetchSettings:
        """Builds settings from the ``fetch`` params section (``sources`` is read elsewhere)."""
        values = {k: v for k, v in params.items() if k in cls.__dataclass_fields__}
        hosts = values.get("kaggle_hosts", cls.kaggle_hosts)
        if not isinstance(hosts, list | tuple) or not all(isinstance(h, str) for h in hosts):
            raise FacekeysError("params.yaml: fetch.kaggle_hosts must be a list of host names")
        values["kaggle_hosts"] = tuple(hosts)
        return cls(**values)


def source_env_var(dataset: str) -> str:
    """Name of the environment variable that overrides a data set's source."""
    return "FACEKEYS_SOURCE_" + dataset.upper().replace("-", "_")


def resolve_source(dataset: str, configured: str) -> tuple[str, str]:
    """Returns the source to use and where it came from (the environment or params)."""
    env = source_env_var(dataset)
    if os.environ.get(env):
        return os.environ[env], f"env:{env}"
    return configured, "params"


def setting_name(dataset: str, origin: str) -> str:
    """The setting a source came from, as a user would look for it in messages."""
    return (
        origin.removeprefix("env:")
        if origin.startswith("env:")
        else (f"fetch.sources.{dataset} in params.yaml")
    )


@dataclass(frozen=True)
class SourcePlan:
    """Where one data set will come from, decided before anything is fetched.

    Attributes:
        dataset: The data set.
        source: A folder, a zip, an http(s) URL, or ``derived:<dataset>``.
        origin: Where the source was configured: ``params`` or ``env:<VARIABLE>``.
        credentials: Kaggle credentials for a competition download URL, where found.
        base: For a derived source: the plan of the data set it is derived from.
        note: One line for the user (why the data is derived and how to get the real one).
    """

    dataset: str
    source: str
    origin: str
    credentials: KaggleCredentials | None = None
    base: SourcePlan | None = None
    note: str = ""


def plan_source(
    dataset: str,
    sources: dict[str, Any],
    settings: FetchSettings | None = None,
    environ: dict[str, str] | None = None,
) -> SourcePlan:
    """Decides where ``dataset`` comes from: ``FACEKEYS_SOURCE_*`` first, then params.

    A Kaggle competition URL gets the user's Kaggle credentials; without any, a data set that
    can be derived (``kaggle-15``) is derived from the 68-point set instead, with a note saying
    so. Nothing is read from the network.

    Args:
        dataset: The data set.
        sources: The ``fetch.sources`` params section.
        settings: Fetch settings (the Kaggle hosts).
        environ: The environment (default ``os.environ``).

    Raises:
        FacekeysError: no source configured, a ``derived:`` source this data set cannot have,
            or unusable Kaggle credentials (one line naming the setting or file).
    """
    settings = settings or FetchSettings()
    environ = os.environ if environ is None else environ
    configured = sources.get(dataset)
    if not configured or not isinstance(configured, str):
        raise FacekeysError(f"params.yaml: fetch.sources.{dataset} is not set")
    env = source_env_var(dataset)
    source, origin = (environ[env], f"env:{env}") if environ.get(env) else (configured, "params")
    derived = parse_derived(source)
    if derived is not None:
        if DERIVABLE.get(dataset) != derived:
            can = f"derived:{DERIVABLE[dataset]}" if dataset in DERIVABLE else "none"
            raise FacekeysError(
                f"{setting_name(dataset, origin)}: {dataset} cannot be {source!r} "
                f"(derived sources it can have: {can})"
            )
        note = (
            f"{dataset}: derived from {derived} ({source}), not the original data; for that, "
            f"set {setting_name(dataset, origin)} to its download URL or a local copy"
        )
        base = plan_source(derived, sources, settings, environ)
        return SourcePlan(dataset, source, origin, base=base, note=note)
    if source.startswith(("http://", "https://")) and is_competition_download(
        source, settings.kaggle_hosts
    ):
        credentials = find_credentials(environ)
        if credentials is None and dataset in DERIVABLE:
            derived = DERIVABLE[dataset]
            note = (
                f"{dataset}: no Kaggle credentials found, so it is derived from {derived} "
                "(the same faces in Kaggle's layout, not Kaggle's photos); for the competition's "
                f"own data, set KAGGLE_USERNAME and KAGGLE_KEY or write "
                f"{kaggle_json_path(environ)}, then run `scripts/pipeline -f fetch@{dataset}`"
            )
            base = plan_source(derived, sources, settings, environ)
            return SourcePlan(
                dataset,
                DERIVED_PREFIX + derived,
                origin + " (no Kaggle credentials)",
                base=base,
                note=note,
            )
        if credentials is not None:
            check_secure(source, setting_name(dataset, origin))
        return SourcePlan(dataset, source, origin, credentials=credentials)
    return SourcePlan(dataset, source, origin)


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
        derived = _derived_fingerprint(plan.base, fingerprint)
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


def plan_fingerprint(plan: SourcePlan, timeout_s: float = 10.0) -> dict[str, Any]:
    """``source_fingerprint`` of a planned source; a derived one is its base's fingerprint."""
    if plan.base is not None:
        return _derived_fingerprint(plan.base, plan_fingerprint(plan.base, timeout_s))
    return source_fingerprint(plan.source, timeout_s, plan.credentials)


def fingerprints_differ(recorded: dict[str, Any] | None, current: dict[str, Any]) -> bool | None:
    """Whether two fingerprints (``source_fingerprint``, ``plan_fingerprint``) say the source
    changed; None when they cannot tell (a URL answer without ``ETag``, ``Last-Modified`` or
    length). A derived source compares its base's fingerprints by the same rules."""
    if not recorded:
        return None
    if recorded.get("kind") != current.get("kind"):
        return True
    if current.get("kind") == "derived":
        if (recorded.get("from"), recorded.get("source")) != (
            current.get("from"),
            current.get("source"),
        ):
            return True
        return fingerprints_differ(recorded.get("base"), current.get("base") or {})
    if current.get("kind") != "url":
        return recorded != current
    keys = [
        k for k in ("etag", "last_modified", "content_length") if k in recorded and k in current
    ]
    if not keys:
        return None
    return any(recorded[k] != current[k] for k in keys)


def _derived_fingerprint(base: SourcePlan, fingerprint: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "derived", "from": base.dataset, "source": base.source, "base": fingerprint}


def _read_record(path: Path) -> dict[str, Any]:
    import json

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
    out = Path(out)
    extra: dict[str, Any] = {}
    with atomic_dir(out) as staging:
        if parse_derived(source) is not None:
            if derived_input is None or DERIVABLE.get(dataset) != parse_derived(source):
                raise FacekeysError(f"{dataset}: source {source!r} cannot be derived here")
            fingerprint = derived_fingerprint
            extra = _derive(dataset, Path(derived_input), staging)
        elif source.startswith(("http://", "https://")):
            download = staging / ".download.zip"
            headers = _download(
                source, download, settings, credentials, setting_name(dataset, source_origin)
            )
            fingerprint = _url_fingerprint(headers)
            _from_zip(download, layout, staging, settings, label=source)
            download.unlink()
            if credentials is not None:
                extra["credentials"] = (
                    "environment" if credentials.origin == "environment" else ("kaggle.json")
                )
        else:
            path = Path(source.removeprefix("file://")).expanduser()
            # Taken before copying: a source that changes during the copy reads as changed later.
            fingerprint = _local_fingerprint(path) if path.exists() else None
            if path.is_dir():
                _from_folder(path, layout, staging, settings)
            elif path.is_file():
                if not zipfile.is_zipfile(path):
                    raise FacekeysError(f"{path}: source is neither a folder nor a zip file")
                _from_zip(path, layout, staging, settings, label=str(path))
            else:
                raise FacekeysError(
                    f"{path}: source does not exist (set {source_env_var(dataset)} to a local "
                    "folder, zip or URL)"
                )
        if layout.format == "kaggle15":
            held_out = _hold_out_unlabelled_test(staging)
            if held_out:
                extra["test_held_out"] = held_out
        manifest = {
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
        write_json(staging / "manifest.json", manifest)
    if source_record is not None:
        # Beside the folder, not in it: a source touched without a change of content must not
        # make every later stage stale.
        write_json(
            source_record,
            {
                "dataset": dataset,
                "source": source,
                "source_origin": source_origin,
                "fingerprint": fingerprint,
            },
        )
    return manifest


def source_fingerprint(
    source: str, timeout_s: float = 10.0, credentials: KaggleCredentials | None = None
) -> dict[str, Any]:
    """A cheap fingerprint of a source, to tell whether it changed since the last fetch.

    A folder: the relative path, size and modification time of every file (a digest of them);
    a zip file: its size and modification time; a URL: the ``ETag``, ``Last-Modified`` and
    ``Content-Length`` a HEAD request returns. Nothing is read or downloaded.

    Args:
        source: A folder, a zip file or an http(s) URL, as configured for ``fetch``.
        timeout_s: Seconds a HEAD request may take.
        credentials: Kaggle credentials for a competition URL (never sent on to redirects).

    Returns:
        A JSON-able mapping; two are equal exactly when the source looks unchanged. A URL
        whose server sends none of the three headers gets ``{"kind": "url", "unknown": true}``.

    Raises:
        FacekeysError: the source does not exist or the server cannot be reached.
    """
    if source.startswith(("http://", "https://")):
        request = urllib.request.Request(
            source, method="HEAD", headers={"User-Agent": "facekeys-fetch"}
        )
        if credentials is not None:
            request.add_unredirected_header("Authorization", credentials.authorization())
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return _url_fingerprint(response.headers)
        except urllib.error.HTTPError as exc:
            if credentials is not None and exc.url == source:
                raise FacekeysError(refusal_message(source, exc.code, credentials)) from None
            raise FacekeysError(f"{source}: HEAD refused: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FacekeysError(f"{source}: unreachable: {reason}") from None
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.exists():
        raise FacekeysError(f"{path}: source does not exist")
    return _local_fingerprint(path)


def _url_fingerprint(headers: Any) -> dict[str, Any]:
    found = {
        key: headers.get(name)
        for key, name in (
            ("etag", "ETag"),
            ("last_modified", "Last-Modified"),
            ("content_length", "Content-Length"),
        )
        if headers.get(name)
    }
    return {"kind": "url", **found} if found else {"kind": "url", "unknown": True}


def _local_fingerprint(path: Path) -> dict[str, Any]:
    import hashlib

    if path.is_file():
        info = path.stat()
        return {"kind": "file", "bytes": info.st_size, "mtime_ns": info.st_mtime_ns}
    digest = hashlib.sha256()
    files = total = 0
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = Path(root) / name
            info = full.lstat()
            rel = full.relative_to(path).as_posix()
            digest.update(f"{rel}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
            files += 1
            total += info.st_size
    return {"kind": "folder", "files": files, "bytes": total, "sha256": digest.hexdigest()}


def _download(
    url: str,
    dest: Path,
    settings: FetchSettings,
    credentials: KaggleCredentials | None = None,
    setting: str = "fetch.sources",
) -> Any:
    """Streams ``url`` into ``dest``; returns the response headers."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "facekeys-fetch"})
    kaggle = is_competition_download(url, settings.kaggle_hosts)
    if credentials is not None and kaggle:
        # Unredirected: Kaggle answers with a redirect to signed storage, which must not see it.
        request.add_unredirected_header("Authorization", credentials.authorization())
    try:
        response = urllib.request.urlopen(request, timeout=settings.timeout_s)
    except urllib.error.HTTPError as exc:
        if kaggle and exc.url == url:
            raise FacekeysError(refusal_message(url, exc.code, credentials, setting)) from None
        if exc.url != url:  # refused by where Kaggle (or another server) redirected to
            host = urllib.parse.urlsplit(exc.url).hostname
            raise FacekeysError(
                f"{url}: download refused by {host} after a redirect: HTTP {exc.code} {exc.reason}"
            ) from None
        hint = (
            " (the source needs credentials: download it yourself and point the "
            "FACEKEYS_SOURCE_<DATASET> variable at the file)"
            if exc.code in (401, 403)
            else ""
        )
        raise FacekeysError(
            f"{url}: download refused: HTTP {exc.code} {exc.reason}{hint}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FacekeysError(f"{url}: download failed: {reason}") from None
    with response:
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        if total is not None and total > settings.max_download_bytes:
            raise FacekeysError(
                f"{url}: download is {total} bytes > max_download_bytes "
                f"{settings.max_download_bytes}"
            )
        received = 0
        with (
            open(dest, "wb") as handle,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=f"download {Path(url).name or url}",
                disable=None,
                file=sys.stderr,
            ) as bar,
        ):
            while True:
                try:
                    chunk = response.read(1 << 20)
                except (OSError, urllib.error.URLError) as exc:
                    raise FacekeysError(
                        f"{url}: download broke off after {received} bytes: {exc}"
                    ) from None
                if not chunk:
                    break
                received += len(chunk)
                if received > settings.max_download_bytes:
                    raise FacekeysError(
                        f"{url}: download exceeds max_download_bytes {settings.max_download_bytes}"
                    )
                handle.write(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise FacekeysError(f"{url}: download broke off: got {received} of {total} bytes")
    if not zipfile.is_zipfile(dest):
        raise FacekeysError(f"{url}: downloaded file is not a zip archive")
    return response.headers


def _locate(entries: set[str], layout: DatasetLayout) -> str | None:
    """Finds the folder prefix ('' or 'a/b/') under which the whole layout is present."""
    prefixes = {""}
    for entry in entries:
        parts = PurePosixPath(entry).parts
        prefixes.update("".join(p + "/" for p in parts[:k]) for k in range(1, len(parts)))
    zips = dict(layout.csv_zips)
    for prefix in sorted(prefixes, key=lambda p: (p.count("/"), p)):
        csvs_ok = all(
            prefix + csv in entries or (csv in zips and prefix + zips[csv] in entries)
            for csv in layout.csvs
        )
        dirs_ok = all(prefix + d + "/" in entries for d in layout.image_dirs)
        if csvs_ok and dirs_ok:
            return prefix
    return None


def _expected(layout: DatasetLayout) -> str:
    zips = dict(layout.csv_zips)
    parts = [f"{c} (or {zips[c]})" if c in zips else c for c in layout.csvs]
    parts += [d + "/" for d in layout.image_dirs]
    return ", ".join(parts)


def _from_folder(
    source: Path, layout: DatasetLayout, staging: Path, settings: FetchSettings
) -> None:
    entries: set[str] = set()
    for root, dirs, files in os.walk(source):
        rel = Path(root).relative_to(source)
        if len(rel.parts) > 3:
            dirs.clear()
            continue
        prefix = "" if rel == Path(".") else rel.as_posix() + "/"
        entries.update(prefix + d + "/" for d in dirs)
        entries.update(prefix + f for f in files)
    prefix = _locate(entries, layout)
    if prefix is None:
        raise FacekeysError(f"{source}: does not hold the expected layout: {_expected(layout)}")
    base = source / prefix
    zips = dict(layout.csv_zips)
    for csv in layout.csvs:
        if (base / csv).is_file():
            _refuse_links_out(base / csv, source)
            shutil.copyfile(base / csv, staging / csv)
        else:
            _refuse_links_out(base / zips[csv], source)
            _csv_from_inner_zip(base / zips[csv], csv, staging, settings)
    for d in layout.image_dirs:
        _refuse_links_out(base / d, source)
        for root, dirs, files in os.walk(base / d):
            for name in dirs:
                if (Path(root) / name).is_symlink():
                    raise FacekeysError(f"{Path(root) / name}: a symbolic link to a folder")
            for name in files:
                _refuse_links_out(Path(root) / name, source)
        # Links that stay inside the source are copied as the files they point to, so data/raw
        # (and the DVC cache) never holds a link.
        shutil.copytree(base / d, staging / d, symlinks=False)


def _refuse_links_out(path: Path, source: Path) -> None:
    """Refuses a symbolic link that leaves the source folder, as archive members are refused:
    nothing outside the source may be copied into data/raw."""
    if not path.is_symlink():
        return
    target, root = path.resolve(), source.resolve()
    if target != root and root not in target.parents:
        raise FacekeysError(f"{path}: symbolic link leaves the source folder (to {target})")


def _from_zip(
    archive: Path, layout: DatasetLayout, staging: Path, settings: FetchSettings, label: str
) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FacekeysError(f"{label}: not a readable zip archive ({exc})") from None
    with zf:
        members = {info.filename: info for info in zf.infolist()}
        entries = set(members)
        for name in members:  # folders are often implicit in zips
            parts = PurePosixPath(name).parts
            entries.update("".join(p + "/" for p in parts[: k + 1]) for k in range(len(parts) - 1))
        prefix = _locate(entries, layout)
        if prefix is None:
            raise FacekeysError(
                f"{label}: archive does not hold the expected layout: {_expected(layout)}"
            )
        wanted = [prefix + c for c in layout.csvs]
        wanted += [prefix + z for _, z in layout.csv_zips]
        budget = _Budget(settings.max_extract_bytes, label)
        for name, info in members.items():
            rel = name[len(prefix) :]
            top = rel.split("/", 1)[0]
            in_dirs = name.startswith(prefix) and top in layout.image_dirs and "/" in rel
            if not (name in wanted or in_dirs) or info.is_dir():
                continue
            _check_member(info, label)
            _extract_member(zf, info, staging / rel, budget)
    zips = dict(layout.csv_zips)
    for csv in layout.csvs:
        if not (staging / csv).is_file():
            _csv_from_inner_zip(staging / zips[csv], csv, staging, settings)
        if csv in zips and (staging / zips[csv]).exists():
            (staging / zips[csv]).unlink()


def _csv_from_inner_zip(inner: Path, csv: str, staging: Path, settings: FetchSettings) -> None:
    try:
        zf = zipfile.ZipFile(inner)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FacekeysError(f"{inner}: not a readable zip archive ({exc})") from None
    with zf:
        matches = [i for i in zf.infolist() if PurePosixPath(i.filename).name == csv]
        if len(matches) != 1:
            raise FacekeysError(f"{inner}: expected exactly one {csv} inside, found {len(matches)}")
        _check_member(matches[0], str(inner))
        _extract_member(
            zf, matches[0], staging / csv, _Budget(settings.max_extract_bytes, str(inner))
        )


class _Budget:
    def __init__(self, limit: int, label: str) -> None:
        self.left = limit
        self.limit = limit
        self.label = label

    def spend(self, amount: int) -> None:
        self.left -= amount
        if self.left < 0:
            raise FacekeysError(
                f"{self.label}: extracting exceeds max_extract_bytes {self.limit} (zip bomb?)"
            )


def _check_member(info: zipfile.ZipInfo, label: str) -> None:
    name = info.filename
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or ".." in parts or "\\" in name or ":" in parts[0]:
        raise FacekeysError(f"{label}: unsafe path in archive: {name!r}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise FacekeysError(f"{label}: archive member {name!r} is a symbolic link")


def _extract_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, budget: _Budget
) -> None:
    # Stream and count real bytes: a zip's declared sizes can lie.
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zf.open(info) as src, open(dest, "wb") as dst:
            while chunk := src.read(1 << 20):
                budget.spend(len(chunk))
                dst.write(chunk)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        NotImplementedError,
    ) as exc:
        raise FacekeysError(f"{budget.label}: cannot extract {info.filename!r}: {exc}") from None


def _derive(dataset: str, folder: Path, staging: Path) -> dict[str, Any]:
    """Makes ``dataset`` from a fetched folder; returns what the manifest records about it."""
    from tqdm import tqdm

    from facekeys.derive import derive_kaggle15

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


# Share of Kaggle's fully labelled training rows held out as the test split where the source's
# own test.csv carries no labels (as the competition's does).
HELD_OUT_SHARE = 0.15


def _hold_out_unlabelled_test(staging: Path) -> dict[str, Any] | None:
    """Replaces an unlabelled Kaggle ``test.csv`` by labelled rows held out of ``training.csv``.

    Kaggle's competition ``test.csv`` has only ``ImageId`` and ``Image``: nothing to score on.
    Rows with all 15 points are held out by a hash of their pixels (deterministic, independent
    of row order); every other row stays in ``training.csv``, malformed ones included, for
    validation to quarantine with a reason.
    """
    import csv
    import hashlib

    from facekeys.csvfile import MAX_FIELD_CHARS

    test, training = staging / "test.csv", staging / "training.csv"
    csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        with open(test, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            names = [name.strip() for name in header]
            if "Image" not in names or any(name.endswith("_x") for name in names):
                return None  # labelled, or not Kaggle's layout at all: validation judges it
            unlabelled = sum(1 for row in reader if row)
        kept = held = 0
        with (
            open(training, encoding="utf-8-sig", newline="") as source,
            open(staging / ".training.csv", "w", encoding="utf-8", newline="") as train_out,
            open(staging / ".test.csv", "w", encoding="utf-8", newline="") as test_out,
        ):
            rows = csv.reader(source)
            train_header = next(rows, [])
            writers = csv.writer(train_out), csv.writer(test_out)
            for writer in writers:
                writer.writerow(train_header)
            for row in rows:
                if not row:
                    continue  # a blank line is no record (validation counts it the same way)
                full = len(row) == len(train_header) and all(v.strip() for v in row)
                digest = hashlib.sha256(row[-1].encode()).digest()
                if full and int.from_bytes(digest[:8], "big") / 2**64 < HELD_OUT_SHARE:
                    writers[1].writerow(row)
                    held += 1
                else:
                    writers[0].writerow(row)
                    kept += 1
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        where = getattr(exc, "filename", None) or f"{training.name} or {test.name}"
        raise FacekeysError(f"{where}: cannot split off a labelled test set: {exc}") from None
    os.replace(staging / ".training.csv", training)
    os.replace(staging / ".test.csv", test)
    return {
        "reason": "the source's test.csv has no keypoints (Kaggle's competition test set)",
        "unlabelled_test_rows_dropped": unlabelled,
        "share_of_full_rows": HELD_OUT_SHARE,
        "test_rows": held,
        "training_rows": kept,
    }
