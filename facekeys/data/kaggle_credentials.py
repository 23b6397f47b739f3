"""Kaggle credentials, read the way Kaggle's own tools read them, and Kaggle's download answers.

Credentials come from ``KAGGLE_USERNAME`` / ``KAGGLE_KEY`` in the environment, else from
``kaggle.json`` in ``$KAGGLE_CONFIG_DIR`` or ``~/.kaggle``. The key never leaves this module
except as an HTTP basic-auth header: it is not in any message, manifest, log or ``repr``.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from facekeys.errors import FacekeysError

TOKEN_PAGE = "https://www.kaggle.com/settings"
_DOWNLOAD_PATH = "/api/v1/competitions/data/download"


@dataclass(frozen=True)
class KaggleCredentials:
    """A Kaggle user name and API key.

    Attributes:
        username: The Kaggle user name (public; named in messages).
        key: The API key (secret; never printed, excluded from ``repr``).
        origin: Where they came from, for messages: ``environment`` or the ``kaggle.json`` path.
    """

    username: str
    key: str = field(repr=False)
    origin: str

    def authorization(self) -> str:
        """The value of an HTTP ``Authorization`` header (basic auth)."""
        token = base64.b64encode(f"{self.username}:{self.key}".encode()).decode("ascii")
        return f"Basic {token}"


def kaggle_json_path(environ: dict[str, str] | None = None) -> Path:
    """Where Kaggle's tools look for ``kaggle.json``: ``$KAGGLE_CONFIG_DIR`` or ``~/.kaggle``."""
    environ = os.environ if environ is None else environ
    folder = environ.get("KAGGLE_CONFIG_DIR") or str(Path.home() / ".kaggle")
    return Path(folder).expanduser() / "kaggle.json"


def find_credentials(environ: dict[str, str] | None = None) -> KaggleCredentials | None:
    """Finds Kaggle credentials, or None where there are none.

    Args:
        environ: The environment to read (default ``os.environ``).

    Returns:
        The credentials from ``KAGGLE_USERNAME``/``KAGGLE_KEY`` when both are set, else from
        ``kaggle.json``; None when neither exists.

    Raises:
        FacekeysError: only one of the two variables is set; ``kaggle.json`` is readable by other
            users, unreadable, not JSON, or lacks a non-empty ``username`` and ``key``.
    """
    environ = os.environ if environ is None else environ
    username = environ.get("KAGGLE_USERNAME", "").strip()
    key = environ.get("KAGGLE_KEY", "").strip()
    if username and key:
        return KaggleCredentials(username, key, "environment")
    if username or key:
        missing = "KAGGLE_KEY" if username else "KAGGLE_USERNAME"
        present = "KAGGLE_USERNAME" if username else "KAGGLE_KEY"
        raise FacekeysError(f"Kaggle credentials: {present} is set but {missing} is not")
    path = kaggle_json_path(environ)
    try:
        if not path.exists():
            return None
    except OSError as exc:
        raise FacekeysError(f"{path}: cannot be read ({exc.strerror})") from None
    return _read_kaggle_json(path)


def _read_kaggle_json(path: Path) -> KaggleCredentials:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise FacekeysError(
                f"{path}: readable by other users (mode {stat.S_IMODE(mode):04o}); "
                f"run `chmod 600 {path}`"
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FacekeysError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise FacekeysError(f"{path}: malformed: not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FacekeysError(f"{path}: malformed: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise FacekeysError(f'{path}: malformed: expected {{"username": ..., "key": ...}}')
    for name in ("username", "key"):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise FacekeysError(f'{path}: malformed: "{name}" is missing or not a non-empty string')
    return KaggleCredentials(data["username"].strip(), data["key"].strip(), str(path))


def is_competition_download(url: str, hosts: tuple[str, ...]) -> bool:
    """Whether ``url`` is Kaggle's competition download endpoint on one of ``hosts``.

    Credentials go to these URLs only (and never to where they redirect).
    """
    parts = urllib.parse.urlsplit(url)
    return (parts.hostname or "") in hosts and parts.path.startswith(_DOWNLOAD_PATH)


def check_secure(url: str, setting: str) -> None:
    """Refuses to send credentials in clear text: https only (plain http to this machine only,
    for a local mirror or a test server)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise FacekeysError(
            f"{setting}: {url} would send the Kaggle credentials unencrypted; use https://"
        )


def competition_name(url: str) -> str:
    """The competition's name: the last part of its download URL's path."""
    return urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def refusal_message(
    url: str, code: int, credentials: KaggleCredentials | None, setting: str = "fetch.sources"
) -> str:
    """One line explaining an HTTP 401/403/404 from Kaggle's download endpoint."""
    name = competition_name(url)
    who = (
        f"user {credentials.username!r} (from {credentials.origin})"
        if credentials
        else "no credentials"
    )
    if code == 401 and credentials is None:
        return (
            f"{url}: Kaggle needs credentials (HTTP 401): set KAGGLE_USERNAME and KAGGLE_KEY or "
            f"write {kaggle_json_path()} (an API token from {TOKEN_PAGE})"
        )
    if code == 401:
        return (
            f"{url}: Kaggle refused {who} (HTTP 401): wrong user name or key; create a new API "
            f"token at {TOKEN_PAGE}"
        )
    if code == 403:
        return (
            f"{url}: Kaggle refused {who} (HTTP 403): the competition's rules are not accepted "
            f"for this account; accept them at https://www.kaggle.com/competitions/{name}/rules"
        )
    if code == 404:
        return f"{url}: Kaggle has no competition {name!r} (HTTP 404); check {setting}"
    return f"{url}: Kaggle refused the download: HTTP {code}"
