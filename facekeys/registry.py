"""The promotion gate: a new model version becomes ``@champion`` only when it beats the current
champion on the gate's held-out data by at least ``min_improvement``; otherwise ``@challenger``.

Uses registry aliases (MLflow 3), never the deprecated stages. One registered model per data set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facekeys.errors import FacekeysError

CHAMPION = "champion"
CHALLENGER = "challenger"
# The tag on every version that holds its gate metric (lower is better).
GATE_TAG = "gate_metric_value"
# The hash of the held-out data a version was scored on (``facekeys.evaluate.labelled_sha256``).
GATE_DATA_TAG = "gate_data_sha256"


@dataclass(frozen=True)
class Incomparable:
    """What a re-scoring returns when the champion cannot be scored fairly on the new data.

    Attributes:
        reason: Why, in words (it goes into the decision).
        new_line: The held-out rows were defined anew (another split), so no version of the old
            definition can be compared: the new version leads (``@champion``), saying so.
            Otherwise the new version stays a challenger.
    """

    reason: str
    new_line: bool = False


@dataclass(frozen=True)
class Decision:
    alias: str
    reason: str


def decide(metric: str, new: float, champion: float | None, min_improvement: float) -> Decision:
    """The alias a new version gets. Lower metric values are better.

    Args:
        metric: Name of the gate metric, for the reason text.
        new: The new version's value.
        champion: The current champion's value; None when there is no champion yet.
        min_improvement: How much lower than the champion's the new value must be.
    """
    if not math.isfinite(new):
        return Decision(CHALLENGER, f"{metric} is {new}: not comparable, kept as challenger")
    if champion is not None and math.isnan(champion):
        return Decision(CHALLENGER, f"{metric} {new:.6g}: not comparable, kept as challenger")
    if champion is None:
        return Decision(CHAMPION, f"first model: {metric} {new:.6g} becomes the champion")
    gain = champion - new
    if gain > 0 and gain >= min_improvement:
        return Decision(
            CHAMPION,
            f"{metric} {new:.6g} beats the champion's {champion:.6g} by {gain:.6g} "
            f"(>= min_improvement {min_improvement:g})",
        )
    if gain > 0:
        why = f"beats the champion's {champion:.6g} by only {gain:.6g} (< {min_improvement:g})"
    elif gain == 0:
        why = f"equals the champion's {champion:.6g}"
    else:
        why = f"is worse than the champion's {champion:.6g}"
    return Decision(CHALLENGER, f"{metric} {new:.6g} {why}: kept as challenger")


def check_scored_model(
    report: dict[str, Any], train: dict[str, Any], weights: str, dataset: str
) -> None:
    """Refuses an evaluation that belongs to another model than the one about to be registered."""
    model = report.get("model") or {}
    expected = {"run_id": train.get("run_id"), "weights_sha256": weights}
    for key, value in expected.items():
        if model.get(key) != value:
            raise FacekeysError(
                f"metrics/{dataset}/eval.json scored another model ({key} "
                f"{model.get(key)!r}, the trained model has {value!r}); rerun evaluate@{dataset}"
            )


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
    without it the new version cannot be compared and stays a challenger. Without a champion
    (never set, or its version deleted) the best comparable existing version is the reference.
    ``@challenger`` names the best version scored like the champion that is not the champion; a
    new version that is neither gets no alias and is loaded by its number.

    A version that beats the champion by the margin is promoted only when ``paired`` (given the
    champion's URI: a paired bootstrap of the gain on the same images, see
    ``facekeys.evaluate.paired_bootstrap_gain``) puts the gain's lower confidence bound above 0;
    the interval goes into the description and the record.

    Raises:
        FacekeysError: a non-finite value (such a model is never registered), or a registry error.
    """

    if not math.isfinite(value):
        raise FacekeysError(
            f"{metric} is {value}: the model has no finite score (NaN or infinite predictions); "
            "not registered"
        )
    from facekeys.mlflow_errors import bound_mlflow_http

    bound_mlflow_http()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    gate_data = tags.get(GATE_DATA_TAG)
    try:
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(
                name, description="facekeys keypoint model; aliases champion/challenger"
            )
        scored = {"gate_metric": metric, GATE_TAG: repr(float(value))}
        existing = _version_of(client, name, model_uri, run_id, scored)
        if existing is not None and _alias_version(client, name, CHAMPION) == existing:
            # An earlier run of this stage registered and crowned this model, then was
            # interrupted before writing register.json: report the registry's state.
            held = client.get_model_version(name, existing)
            return _record_of_reused(name, held, metric, value, min_improvement, gate_data)
        reference = _reference(client, name, metric, gate_data, rescore, exclude=existing)
        decision, noise = _gate(name, metric, value, min_improvement, reference, paired)
        version_tags = {**tags, "gate_metric": metric, GATE_TAG: repr(float(value))}
        if existing is None:
            version = _create_version(
                client, name, model_uri, run_id, version_tags, decision.reason
            )
        else:
            # Registering the same run's model again reuses its version (no duplicates).
            reason = f"version {existing} already held this model; {decision.reason}"
            decision = Decision(decision.alias, reason)
            for key, tag in version_tags.items():
                client.set_model_version_tag(name, existing, key, tag)
            version = client.update_model_version(name, existing, description=reason)
        if decision.alias == CHAMPION:
            # Re-read just before the write: a champion set meanwhile by another registration is
            # compared with, not silently replaced.
            now = _alias_version(client, name, CHAMPION)
            if now is not None and now != reference.version:
                again = _reference(client, name, metric, gate_data, rescore, exclude=existing)
                decision = decide(metric, value, again.value, min_improvement)
                reference = again
        if decision.alias == CHAMPION:
            client.set_registered_model_alias(name, CHAMPION, version.version)
        elif reference.best_existing is not None:
            # The champion's version was deleted and the best remaining one still wins: it
            # takes the alias back, so models:/<name>@champion always loads.
            client.set_registered_model_alias(name, CHAMPION, reference.best_existing)
            decision = Decision(
                decision.alias, f"{decision.reason}; version {reference.best_existing} is @champion"
            )
        alias = decision.alias
        challenger = _best_challenger(client, name)
        if challenger is not None:
            client.set_registered_model_alias(name, CHALLENGER, challenger)
        if alias == CHALLENGER and challenger != str(version.version):
            alias = None  # worse than the current challenger: no alias, loaded by version
    except MlflowException as exc:
        from facekeys.mlflow_errors import mlflow_cause

        raise FacekeysError(
            f"registry {uri}: cannot register {model_uri}: {mlflow_cause(exc)}"
        ) from None
    return {
        "registered_model": name,
        "version": int(version.version),
        "alias": alias,
        "reason": decision.reason,
        "gate_metric": metric,
        "value": value,
        "min_improvement": min_improvement,
        "gate_data_sha256": gate_data,
        "previous_champion_version": int(reference.version) if reference.version else None,
        "previous_champion_value": reference.value,
        "paired_bootstrap": noise,
        "model_uri": model_uri,
        "load_with": f"models:/{name}@{alias}" if alias else f"models:/{name}/{version.version}",
    }


def _gate(
    name: str,
    metric: str,
    value: float,
    min_improvement: float,
    reference: _Reference,
    paired: Callable[[str], dict[str, Any] | None] | None,
) -> tuple[Decision, dict[str, Any] | None]:
    """The decision against the reference, and the paired bootstrap where it was asked."""
    decision = decide(metric, value, reference.value, min_improvement)
    if reference.note:
        decision = Decision(decision.alias, f"{reference.note}; {decision.reason}")
    noise = None
    if decision.alias == CHAMPION and reference.version is not None and paired is not None:
        noise = paired(f"models:/{name}/{reference.version}")
        decision = _beyond_noise(decision, noise)
    return decision, noise


def _create_version(
    client: Any, name: str, model_uri: str, run_id: str, tags: dict[str, str], description: str
) -> Any:
    # A tracking server refuses a logged model's URI (models:/m-<id>) as the source unless the
    # request names the model too; a local store accepts either.
    from facekeys.mlflow_stores import mlflow_uris

    logged_model = (
        model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    )
    # MLflow resolves the models:/ source through the process-wide URIs, not the client's.
    with mlflow_uris(client.tracking_uri):
        return client.create_model_version(
            name, model_uri, run_id=run_id, model_id=logged_model, tags=tags,
            description=description,
        )  # fmt: skip


def _version_of(
    client: Any, name: str, model_uri: str, run_id: str, scored: dict[str, str]
) -> str | None:
    """The version that already holds this run's logged model scored exactly so (``scored``:
    gate metric and value tags), if any: what a rerun of an interrupted registration finds."""
    logged_model = model_uri.removeprefix("models:/")
    for found in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        same_model = found.source == model_uri or getattr(found, "model_id", None) == logged_model
        tags = found.tags or {}
        if same_model and all(tags.get(k) == v for k, v in scored.items()):
            return str(found.version)
    return None


def _record_of_reused(
    name: str, held: Any, metric: str, value: float, min_improvement: float, gate_data: Any
) -> dict[str, Any]:
    reason = f"version {held.version} already holds this model as @{CHAMPION}: {held.description}"
    return {
        "registered_model": name,
        "version": int(held.version),
        "alias": CHAMPION,
        "reason": reason,
        "gate_metric": metric,
        "value": value,
        "min_improvement": min_improvement,
        "gate_data_sha256": gate_data,
        "previous_champion_version": None,
        "previous_champion_value": None,
        "paired_bootstrap": None,
        "model_uri": held.source,
        "load_with": f"models:/{name}@{CHAMPION}",
    }


def _beyond_noise(decision: Decision, noise: dict[str, Any] | None) -> Decision:
    """Keeps a promotion only when the paired bootstrap says the gain is above 0."""
    if noise is None:
        return decision
    interval = (
        f"paired bootstrap over {noise['clusters']} groups of images: gain "
        f"{noise['gain']:.4g}, {noise['confidence']:.0%} lower bound {noise['low']:.4g}"
    )
    if math.isfinite(noise["low"]) and noise["low"] > 0:
        return Decision(CHAMPION, f"{decision.reason}; {interval}")
    return Decision(CHALLENGER, f"{decision.reason}, but not beyond noise ({interval} <= 0)")


@dataclass(frozen=True)
class _Reference:
    version: str | None  # the champion's version (None: no champion)
    value: float | None  # what the new version must beat (None: nothing comparable)
    note: str = ""  # how the reference was found, when it is not simply the champion's tag
    best_existing: str | None = None  # without a champion: the best comparable version


def _alias_version(client: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        # Only a missing alias means "none"; any other failure must not promote.
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        return None


def _comparable(version: Any, metric: str, gate_data: str | None) -> float | None:
    """A version's gate value where it was scored like the new one, else None."""
    tags = version.tags or {}
    if tags.get("gate_metric") != metric or GATE_TAG not in tags:
        return None
    if tags.get(GATE_DATA_TAG) != gate_data:
        return None
    value = float(tags[GATE_TAG])
    return value if math.isfinite(value) else None


def _reference(
    client: Any,
    name: str,
    metric: str,
    gate_data: str | None,
    rescore: Callable[[str], float | Incomparable] | None,
    exclude: str | None = None,
) -> _Reference:
    champion = _alias_version(client, name, CHAMPION)
    if champion is None:
        values = [
            (value, str(v.version))
            for v in client.search_model_versions(f"name='{name}'")
            if str(v.version) != exclude
            and (value := _comparable(v, metric, gate_data)) is not None
        ]
        if not values:
            return _Reference(None, None)
        value, version = min(values)
        note = f"no champion alias: compared with the best existing version {version}"
        return _Reference(None, value, note, best_existing=version)
    current = client.get_model_version(name, champion)
    value = _comparable(current, metric, gate_data)
    if value is not None:
        return _Reference(champion, value)
    why = (
        f"gated on {current.tags.get('gate_metric', 'nothing')!r}"
        if current.tags.get("gate_metric") != metric
        else "scored on other data"
    )
    if rescore is None:
        return _Reference(champion, math.nan, f"the champion (version {champion}) was {why}")
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
        return _Reference(champion, math.nan, note)
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
    metric, gate_data = tags.get("gate_metric"), tags.get(GATE_DATA_TAG)
    values = [
        (value, int(v.version))
        for v in client.search_model_versions(f"name='{name}'")
        if str(v.version) != champion and (value := _comparable(v, metric, gate_data)) is not None
    ]
    return str(min(values)[1]) if values else None


def registered_model_dir(uri: str, version_uri: str, dest: str | os.PathLike[str]) -> Path:
    """Downloads a registered version's model folder (weights and cards) into ``dest``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    # The registry named here, not a process-wide one that another caller may have set.
    name, _, version = version_uri.removeprefix("models:/").rpartition("/")
    location = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_download_uri(
        name, version
    )
    root = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=str(dest), tracking_uri=uri
        )
    )
    found = [p.parent for p in root.rglob("model.json") if p.parent.name == "model"]
    if not found:
        raise FacekeysError(f"{version_uri}: no model folder among its artifacts")
    return found[0]


def logged_code_sha256(uri: str, model_uri: str) -> str:
    """A hash of the code logged with a model: what loading it will run (MLflow's models from
    code), recorded on its version so that a user can check what they trust."""
    import hashlib
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    from facekeys.mlflow_stores import mlflow_uris

    # A models:/m-<id> URI is resolved through the process-wide tracking and registry URIs,
    # which otherwise default to an mlflow.db in the current folder (another store inside a DVC
    # experiment's temporary copy).
    with mlflow_uris(uri), tempfile.TemporaryDirectory() as tmp:
        try:
            root = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=model_uri, dst_path=tmp, tracking_uri=uri
                )
            )
        except (MlflowException, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FacekeysError(f"{model_uri}: cannot read its logged code: {reason}") from None
        digest = hashlib.sha256()
        files = sorted(p for p in root.rglob("*.py") if p.is_file())
        if not files:
            raise FacekeysError(f"{model_uri}: no code among its artifacts")
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()
