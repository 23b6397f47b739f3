"""The cheap fingerprint of a data source, to tell whether it changed since its last fetch.

A fetch records its source's fingerprint beside the fetched folder; the orchestrator's data check
takes the fingerprint again and compares the two. Nothing is downloaded: a folder is fingerprinted
by its files' names, sizes and times, a zip by its size and time, a URL by a HEAD request.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from facekeys.errors import FacekeysError
from facekeys.data.kaggle_credentials import KaggleCredentials, refusal_message
from facekeys.data.source_plan import SourcePlan


def plan_fingerprint(plan: SourcePlan, timeout_s: float = 10.0) -> dict[str, Any]:
    """``source_fingerprint`` of a planned source; a derived one is its base's fingerprint."""
    if plan.base is not None:
        return derived_source_fingerprint(plan.base, plan_fingerprint(plan.base, timeout_s))
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


def derived_source_fingerprint(base: SourcePlan, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint of a data set derived from ``base``, whose fingerprint is given."""
    return {"kind": "derived", "from": base.dataset, "source": base.source, "base": fingerprint}


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
                return url_fingerprint(response.headers)
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
    return local_fingerprint(path)


def url_fingerprint(headers: Any) -> dict[str, Any]:
    """The validators of an HTTP answer: ``ETag``, ``Last-Modified``, ``Content-Length``."""
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


def local_fingerprint(path: Path) -> dict[str, Any]:
    """A local file's size and modification time, or a digest of a folder's file list."""
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
