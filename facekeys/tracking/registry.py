"""Registering a model version and applying the promotion gate: a new version becomes
``@champion`` only when it beats the current champion on the gate's held-out data by at least
``min_improvement``; otherwise ``@challenger``. The decision itself is
``facekeys.tracking.gate``; this module reads and writes the registry.

Uses registry aliases (MLflow 3), never the deprecated stages. One registered model per data set.

Longer than 350 lines: the steps the tests reach into (``_reference``, ``_alias_version``) stay
beside ``register_version``, whose order of reads and writes they check (create the version, read
the champion again, set the aliases, then describe the final decision).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facekeys.errors import FacekeysError
from facekeys.tracking.gate import (
    CHALLENGER,
    CHAMPION,
    GATE_DATA_TAG,
    GATE_TAG,
    Decision,
    Incomparable,
    best_challenger,
    best_comparable_version,
    comparable_value,
    gate_decision,
    reused_reason,
)
from facekeys.tracking.mlflow_errors import bound_mlflow_http, mlflow_cause
from facekeys.tracking.registered_models import create_version, ensure_registered_model, version_of


def register_version(
    uri: str,
    name: str,
    model_uri: str,
    run_id: str,
    metric: str,
    value: float,
    min_improvement: float,
    tags: dict[str, str],
    rescore: Callable[[str], float | Incomparable] | None = None,
    paired: Callable[[str], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Registers ``model_uri`` under ``name``, applies the gate and returns the record written to
    ``register.json``.

    The new value is compared with the champion's only when both were scored with the same gate
    metric on the same data (tag ``gate_data_sha256``). Otherwise ``rescore`` (given the
    champion's ``models:/<name>/<version>`` URI) scores the champion again on this data;
    without it the new version cannot be compared and stays a challenger; a champion whose
    re-scored value is not finite loses to the new version. Without a champion (never set, or
    its version deleted) the best comparable existing version is the reference. ``@challenger``
    names the best version scored like the champion that is not the champion; a new version
    that is neither gets no alias and is loaded by its number.

    A version that beats the reference by the margin is promoted only when ``paired`` (given the
    reference version's URI: a paired bootstrap of the gain on the same images, see
    ``facekeys.evaluation.metrics.paired_bootstrap_gain``) puts the gain's lower confidence bound
    above 0; a champion found again just before the alias is set is judged the same way. The
    final decision, with the interval, goes into the description and the record.

    Raises:
        FacekeysError: a non-finite value (such a model is never registered), or a registry error.
    """
    if not math.isfinite(value):
        raise FacekeysError(
            f"{metric} is {value}: the model has no finite score (NaN or infinite predictions); "
            "not registered"
        )
    bound_mlflow_http()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    request = _Request(
        name, model_uri, run_id, metric, value, min_improvement, tags, rescore, paired
    )
    try:
        return _register(client, request)
    except MlflowException as exc:
        raise FacekeysError(
            f"registry {uri}: cannot register {model_uri}: {mlflow_cause(exc)}"
        ) from None


@dataclass(frozen=True)
class _Request:
    """One registration: the model, its run and score, and how the gate judges it (the
    arguments of ``register_version``)."""

    name: str
    model_uri: str
    run_id: str
    metric: str
    value: float
    min_improvement: float
    tags: dict[str, str]
    rescore: Callable[[str], float | Incomparable] | None
    paired: Callable[[str], dict[str, Any] | None] | None

    @property
    def gate_data(self) -> str | None:
        """The hash of the held-out data the value was scored on."""
        return self.tags.get(GATE_DATA_TAG)

    @property
    def scored(self) -> dict[str, str]:
        """The tags that say how the version was scored: gate metric and value."""
        return {"gate_metric": self.metric, GATE_TAG: repr(float(self.value))}


def _register(client: Any, request: _Request) -> dict[str, Any]:
    """Registers (or finds) the version, decides its alias, sets the aliases; the record."""
    name = request.name
    ensure_registered_model(client, name)
    existing = version_of(client, name, request.model_uri, request.run_id, request.scored)
    if existing is not None and _alias_version(client, name, CHAMPION) == existing:
        # An earlier run of this stage registered and crowned this model, then was
        # interrupted before writing register.json: report the registry's state.
        return _record_of_reused(request, client.get_model_version(name, existing))
    reference = _reference(
        client, name, request.metric, request.gate_data, request.rescore, exclude=existing
    )
    decision, noise = _gate(request, reference)
    version = _hold_version(client, request, decision.reason, existing)
    if decision.alias == CHAMPION:
        (decision, noise), reference = _recheck_champion(
            client, request, existing, (decision, noise), reference
        )
    decision = _set_champion(client, name, decision, reference, version)
    alias, reason = _set_challenger(client, name, decision, version)
    if existing is not None:
        reason = reused_reason(existing, reason)
    # The description holds the final decision: a champion found again just before the alias
    # was set, or the alias given back to the best existing version, may have changed it.
    client.update_model_version(name, version, description=reason)
    return {
        "registered_model": name,
        "version": int(version),
        "alias": alias,
        "reason": reason,
        "gate_metric": request.metric,
        "value": request.value,
        "min_improvement": request.min_improvement,
        "gate_data_sha256": request.gate_data,
        "previous_champion_version": int(reference.version) if reference.version else None,
        "previous_champion_value": reference.value,
        "paired_bootstrap": noise,
        "model_uri": request.model_uri,
        "load_with": f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}",
    }


def _gate(request: _Request, reference: _Reference) -> tuple[Decision, dict[str, Any] | None]:
    """The decision against the reference, and the paired bootstrap where it was asked."""
    bootstrap = None
    paired = request.paired
    # The version the new one must beat: the champion, or without one the best existing
    # version, which must be beaten beyond the noise all the same.
    against = reference.version or reference.best_existing
    if against is not None and reference.value is not None and paired is not None:
        reference_uri = f"models:/{request.name}/{against}"

        def bootstrap() -> dict[str, Any] | None:
            return paired(reference_uri)

    return gate_decision(
        request.metric,
        request.value,
        request.min_improvement,
        reference.value,
        reference.note,
        bootstrap,
    )


def _hold_version(client: Any, request: _Request, reason: str, existing: str | None) -> str:
    """The number of the version that holds the model: a new one (described by ``reason`` until
    the final decision), or ``existing`` (registering the same run's model again reuses its
    version: no duplicates) with its tags updated."""
    name = request.name
    version_tags = {**request.tags, **request.scored}
    if existing is None:
        version = create_version(
            client, name, request.model_uri, request.run_id, version_tags, reason
        )
        return str(version.version)
    for key, tag in version_tags.items():
        client.set_model_version_tag(name, existing, key, tag)
    return existing


def _recheck_champion(
    client: Any,
    request: _Request,
    existing: str | None,
    verdict: tuple[Decision, dict[str, Any] | None],
    reference: _Reference,
) -> tuple[tuple[Decision, dict[str, Any] | None], _Reference]:
    """Re-reads the champion just before a promotion: a champion set meanwhile by another
    registration is compared with through the same gate (margin and paired bootstrap), not
    silently replaced. Returns the decision with its bootstrap, and the reference."""
    now = _alias_version(client, request.name, CHAMPION)
    if now is None or now == reference.version:
        return verdict, reference
    again = _reference(
        client, request.name, request.metric, request.gate_data, request.rescore, exclude=existing
    )
    return _gate(request, again), again


def _set_champion(
    client: Any, name: str, decision: Decision, reference: _Reference, version: str
) -> Decision:
    """Sets ``@champion`` on the new version where it won, or back on the best existing version
    where there was no champion; returns the decision with that said."""
    if decision.alias == CHAMPION:
        client.set_registered_model_alias(name, CHAMPION, version)
    elif reference.best_existing is not None:
        # The champion's version was deleted and the best remaining one still wins: it
        # takes the alias back, so models:/<name>@champion always loads.
        client.set_registered_model_alias(name, CHAMPION, reference.best_existing)
        return Decision(
            decision.alias, f"{decision.reason}; version {reference.best_existing} is @champion"
        )
    return decision


def _set_challenger(
    client: Any, name: str, decision: Decision, version: str
) -> tuple[str | None, str]:
    """Sets ``@challenger`` on the best version that is not the champion; returns the new
    version's alias (None: not the best of those, loaded by its number) and the reason, which
    says so."""
    challenger = _best_challenger(client, name)
    if challenger is not None:
        client.set_registered_model_alias(name, CHALLENGER, challenger)
    if decision.alias == CHALLENGER and challenger != version:
        held = f"@challenger is version {challenger}" if challenger else "no @challenger"
        return None, f"{decision.reason}; {held}: no alias, loaded by its number"
    return decision.alias, decision.reason


def _record_of_reused(request: _Request, held: Any) -> dict[str, Any]:
    """The record of a version that already holds this model as the champion."""
    name = request.name
    reason = reused_reason(str(held.version), held.description, CHAMPION)
    return {
        "registered_model": name,
        "version": int(held.version),
        "alias": CHAMPION,
        "reason": reason,
        "gate_metric": request.metric,
        "value": request.value,
        "min_improvement": request.min_improvement,
        "gate_data_sha256": request.gate_data,
        "previous_champion_version": None,
        "previous_champion_value": None,
        "paired_bootstrap": None,
        "model_uri": held.source,
        "load_with": f"models:/{name}@{CHAMPION}",
    }


@dataclass(frozen=True)
class _Reference:
    """What a new version is compared with."""

    version: str | None  # the champion's version (None: no champion)
    value: float | None  # what the new version must beat (None: nothing comparable)
    note: str = ""  # how the reference was found, when it is not simply the champion's tag
    best_existing: str | None = None  # without a champion: the best comparable version


def _alias_version(client: Any, name: str, alias: str) -> str | None:
    """The version that holds ``alias``, None where no version does."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        # Only a missing alias means "none"; any other failure must not promote.
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        return None


def _reference(
    client: Any,
    name: str,
    metric: str,
    gate_data: str | None,
    rescore: Callable[[str], float | Incomparable] | None,
    exclude: str | None = None,
) -> _Reference:
    """The champion's value where it was scored like the new version, else its value scored
    again by ``rescore`` (NaN: not comparable; None: nothing to compare with, see
    ``_rescored_reference``); without a champion, the best comparable existing version other
    than ``exclude``."""
    champion = _alias_version(client, name, CHAMPION)
    if champion is None:
        versions = client.search_model_versions(f"name='{name}'")
        best = best_comparable_version(versions, metric, gate_data, exclude)
        if best is None:
            return _Reference(None, None)
        value, version = best
        note = f"no champion alias: compared with the best existing version {version}"
        return _Reference(None, value, note, best_existing=version)
    current = client.get_model_version(name, champion)
    value = comparable_value(current, metric, gate_data)
    if value is not None:
        return _Reference(champion, value)
    why = (
        f"gated on {current.tags.get('gate_metric', 'nothing')!r}"
        if current.tags.get("gate_metric") != metric
        else "scored on other data"
    )
    if rescore is None:
        return _Reference(champion, math.nan, f"the champion (version {champion}) was {why}")
    return _rescored_reference(client, name, metric, gate_data, rescore, current, why)


def _rescored_reference(
    client: Any,
    name: str,
    metric: str,
    gate_data: str | None,
    rescore: Callable[[str], float | Incomparable],
    current: Any,
    why: str,
) -> _Reference:
    """The champion (``current``, scored otherwise for the reason ``why``) scored again on this
    data; a finite score is tagged on its version, a non-finite one leaves nothing to compare
    with (value None)."""
    champion = str(current.version)
    outcome = rescore(f"models:/{name}/{champion}")
    if isinstance(outcome, Incomparable):
        note = f"the champion (version {champion}) was {why} and {outcome.reason}"
        if outcome.new_line:
            # Held-out rows defined anew: the first version of the new definition leads it.
            return _Reference(champion, None, f"{note}: not comparable, a new line starts")
        return _Reference(champion, math.nan, note)
    rescored = float(outcome)
    note = f"the champion (version {champion}) was {why}: re-scored on this data, {rescored:.6g}"
    if not math.isfinite(rescored):
        # A champion that predicts nothing usable on this data cannot hold off a model that
        # does: nothing to compare with, the finite newcomer wins.
        return _Reference(champion, None, f"{note}, not finite: a finite score wins")
    # The champion now carries this score, so later versions compare without scoring it again
    # and @challenger can be chosen among versions scored like it.
    old = current.tags or {}
    previous = f"{old.get('gate_metric')}={old.get(GATE_TAG)} on {old.get(GATE_DATA_TAG)}"
    for key, tag in (
        ("gate_previous", previous),
        ("gate_metric", metric),
        (GATE_TAG, repr(rescored)),
        (GATE_DATA_TAG, str(gate_data)),
    ):
        client.set_model_version_tag(name, champion, key, tag)
    return _Reference(champion, rescored, note)


def _best_challenger(client: Any, name: str) -> str | None:
    """The best version that is not the champion, among those scored like the champion."""
    champion = _alias_version(client, name, CHAMPION)
    if champion is None:
        return None
    tags = client.get_model_version(name, champion).tags or {}
    return best_challenger(client.search_model_versions(f"name='{name}'"), champion, tags)
