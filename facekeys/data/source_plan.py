"""Where each data set comes from, decided before anything is fetched.

Owns the ``fetch`` settings (limits and Kaggle hosts), the names under which a source is
configured (``FACEKEYS_SOURCE_*`` or ``fetch.sources`` in params.yaml), and the source plan: which
source, with which Kaggle credentials, or derived from which other data set. Nothing here reads
the network or writes a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from facekeys.data.derive_kaggle15 import DERIVABLE, DERIVED_PREFIX, parse_derived
from facekeys.errors import FacekeysError
from facekeys.data.kaggle_credentials import (
    KaggleCredentials,
    check_secure,
    find_credentials,
    is_competition_download,
    kaggle_json_path,
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
    if parse_derived(source) is not None:
        return _plan_derived(dataset, source, origin, sources, settings, environ)
    if source.startswith(("http://", "https://")) and is_competition_download(
        source, settings.kaggle_hosts
    ):
        return _plan_kaggle_download(dataset, source, origin, sources, settings, environ)
    return SourcePlan(dataset, source, origin)


def _plan_derived(
    dataset: str,
    source: str,
    origin: str,
    sources: dict[str, Any],
    settings: FetchSettings,
    environ: dict[str, str],
) -> SourcePlan:
    """The plan for a configured ``derived:<dataset>`` source, with its base data set's plan."""
    derived = parse_derived(source)
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


def _plan_kaggle_download(
    dataset: str,
    source: str,
    origin: str,
    sources: dict[str, Any],
    settings: FetchSettings,
    environ: dict[str, str],
) -> SourcePlan:
    """The plan for a Kaggle competition URL: with the user's credentials, or (without any, for
    a data set that can be derived) derived from its base data set instead."""
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
