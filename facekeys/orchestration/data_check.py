"""The data check: each data source compared with what its last fetch recorded (sizes, times
and HTTP validators only), and the record of which changes were already announced, so that one
change triggers one run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facekeys.data.source_fingerprint import fingerprints_differ, plan_fingerprint
from facekeys.data.source_plan import FetchSettings, plan_source
from facekeys.orchestration.decisions import read_json_or_empty

#: Event the data check emits when a data source changed since its last fetch.
DATA_CHANGED_EVENT = "facekeys.data.changed"


@dataclass
class SourceCheck:
    """One data set's source compared with what its last fetch recorded."""

    dataset: str
    source: str
    changed: bool | None  # None: cannot tell (a URL without validators, an old manifest)
    reason: str
    fingerprint: dict[str, Any] = field(default_factory=dict)


def check_sources(
    root: str | os.PathLike[str], params: dict[str, Any], timeout_s: float = 10.0
) -> list[SourceCheck]:
    """Compares each data set's configured source (``FACEKEYS_SOURCE_*`` first, as ``fetch``
    does) with what its last fetch recorded (``data/raw/<dataset>.source.json``, beside the
    manifest), reading only sizes, times and headers.

    Raises:
        FacekeysError: a source is unreachable or missing (one line naming it).
    """
    checks = []
    fetch = params.get("fetch") or {}
    settings = FetchSettings.from_params(fetch)
    for dataset in params.get("datasets") or []:
        plan = plan_source(dataset, fetch.get("sources") or {}, settings)
        source = plan.source
        current = plan_fingerprint(plan, timeout_s)
        record_path = Path(root) / "data" / "raw" / f"{dataset}.source.json"
        if not record_path.is_file():
            checks.append(SourceCheck(dataset, source, True, "never fetched", current))
            continue
        record = read_json_or_empty(record_path)
        if record.get("source") != source:
            reason = f"source moved: {record.get('source')} -> {source}"
            checks.append(SourceCheck(dataset, source, True, reason, current))
            continue
        differ = fingerprints_differ(record.get("fingerprint"), current)
        reason = {
            True: "source changed since the last fetch",
            False: "unchanged",
            None: "cannot tell (no fingerprint recorded or none offered by the server)",
        }[differ]
        checks.append(SourceCheck(dataset, source, differ, reason, current))
    return checks


def already_announced(
    state_file: Path, changed: dict[str, dict[str, Any]], max_age_s: float = 3600.0
) -> bool:
    """Whether the data check announced exactly these fingerprints less than ``max_age_s`` ago
    (the triggered run may still wait for the workspace), so it does not emit one per check;
    an older announcement is repeated, in case the run it triggered failed."""
    import time

    state = read_json_or_empty(state_file)
    fresh = time.time() - float(state.get("at", 0)) < max_age_s
    return fresh and state.get("announced") == changed


def remember_announced(state_file: Path, changed: dict[str, dict[str, Any]]) -> None:
    """Records the fingerprints an event was emitted for, and when."""
    import time

    from facekeys.data.atomic_files import write_json

    write_json(state_file, {"announced": changed, "at": time.time()})
