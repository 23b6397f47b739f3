"""The promotion gate: a new model version becomes ``@champion`` only when it beats the current
champion on the test set by at least ``min_improvement``; otherwise ``@challenger``.

Uses registry aliases (MLflow 3), never the deprecated stages. One registered model per data set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from facekeys.errors import FacekeysError

CHAMPION = "champion"
CHALLENGER = "challenger"
# The tag on every version that holds its gate metric (lower is better).
GATE_TAG = "gate_metric_value"


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


def register_version(
    uri: str,
    name: str,
    model_uri: str,
    run_id: str,
    metric: str,
    value: float,
    min_improvement: float,
    tags: dict[str, str],
) -> dict[str, Any]:
    """Registers ``model_uri`` under ``name``, applies the gate and returns the record written to
    ``register.json``."""
    import os

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="facekeys keypoint model; aliases champion/challenger"
        )
    champion_version, champion_value, mismatch = None, None, ""
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        # Only a missing alias means "no champion yet"; any other failure must not promote.
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise FacekeysError(f"registry {uri}: cannot read {name}@{CHAMPION}: {exc}") from None
        current = None
    if current is not None:
        champion_version = current.version
        if current.tags.get("gate_metric") != metric or GATE_TAG not in current.tags:
            mismatch = (
                f"the champion (version {current.version}) was gated on "
                f"{current.tags.get('gate_metric', 'nothing')!r}, not {metric!r}: not comparable"
            )
        else:
            champion_value = float(current.tags[GATE_TAG])
    if mismatch:
        decision = Decision(CHALLENGER, f"{mismatch}; kept as challenger")
    else:
        decision = decide(metric, value, champion_value, min_improvement)
    try:
        # A tracking server refuses a logged model's URI (models:/m-<id>) as the source unless
        # the request names the model too; a local store accepts either.
        logged_model = (
            model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        )
        version = client.create_model_version(
            name,
            model_uri,
            run_id=run_id,
            model_id=logged_model,
            tags={**tags, "gate_metric": metric, GATE_TAG: repr(float(value))},
            description=decision.reason,
        )
        client.set_registered_model_alias(name, decision.alias, version.version)
    except MlflowException as exc:
        reason = str(exc).splitlines()[0]
        raise FacekeysError(f"registry {uri}: cannot register {model_uri}: {reason}") from None
    return {
        "registered_model": name,
        "version": int(version.version),
        "alias": decision.alias,
        "reason": decision.reason,
        "gate_metric": metric,
        "value": value,
        "min_improvement": min_improvement,
        "previous_champion_version": int(champion_version) if champion_version else None,
        "previous_champion_value": champion_value,
        "model_uri": model_uri,
        "load_with": f"models:/{name}@{decision.alias}",
    }
