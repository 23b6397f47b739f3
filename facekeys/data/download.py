"""Downloading a source zip over HTTP(S) with a size cap, a stall timeout and a progress bar.

Kaggle credentials go only to Kaggle's competition download URL, never to where it redirects;
a refusal is explained in one line that names the setting to change.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from facekeys.errors import FacekeysError
from facekeys.data.kaggle_credentials import KaggleCredentials, is_competition_download, refusal_message
from facekeys.data.source_plan import FetchSettings


def download_zip(
    url: str,
    dest: Path,
    settings: FetchSettings,
    credentials: KaggleCredentials | None = None,
    setting: str = "fetch.sources",
) -> Any:
    """Streams ``url`` into ``dest``; returns the response headers.

    Args:
        url: An http(s) URL of a zip archive.
        dest: The file to write.
        settings: The stall timeout, the size cap and the Kaggle hosts.
        credentials: Kaggle credentials, sent only to a competition download URL.
        setting: The setting the URL came from, named in messages.

    Raises:
        FacekeysError: the server refused or could not be reached, the download is too large,
            broke off, or is not a zip archive.
    """
    response = _open(url, settings, credentials, setting)
    with response:
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        if total is not None and total > settings.max_download_bytes:
            raise FacekeysError(
                f"{url}: download is {total} bytes > max_download_bytes "
                f"{settings.max_download_bytes}"
            )
        received = _stream_into(response, dest, url, total, settings.max_download_bytes)
    if total is not None and received != total:
        raise FacekeysError(f"{url}: download broke off: got {received} of {total} bytes")
    if not zipfile.is_zipfile(dest):
        raise FacekeysError(f"{url}: downloaded file is not a zip archive")
    return response.headers


def _open(
    url: str, settings: FetchSettings, credentials: KaggleCredentials | None, setting: str
) -> Any:
    """Sends the request; a refusal or an unreachable server becomes one line of explanation."""
    request = urllib.request.Request(url, headers={"User-Agent": "facekeys-fetch"})
    kaggle = is_competition_download(url, settings.kaggle_hosts)
    if credentials is not None and kaggle:
        # Unredirected: Kaggle answers with a redirect to signed storage, which must not see it.
        request.add_unredirected_header("Authorization", credentials.authorization())
    try:
        return urllib.request.urlopen(request, timeout=settings.timeout_s)
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


def _stream_into(response: Any, dest: Path, url: str, total: int | None, max_bytes: int) -> int:
    """Copies the response body into ``dest`` in 1 MiB chunks; returns the bytes received."""
    from tqdm import tqdm

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
            if received > max_bytes:
                raise FacekeysError(f"{url}: download exceeds max_download_bytes {max_bytes}")
            handle.write(chunk)
            bar.update(len(chunk))
    return received
