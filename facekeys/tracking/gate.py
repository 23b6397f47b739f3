"""The promotion gate's decision, apart from the registry calls: which alias a new version gets
against a reference value, whether a promotion is beyond the noise of a paired bootstrap, which
versions are comparable (same gate metric, same held-out data), the best existing version when
there is no champion, the choice of ``@challenger``, the words of a reused version's reason, the
refusal of a score that belongs to another model, and the check of the gate metric setting.
Lower metric values are better.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from facekeys.errors import FacekeysError
from facekeys.evaluation.metrics import GATE_METRIC_KEYS

CHAMPION = "champion"
CHALLENGER = "challenger"
# The tag on every version that holds its gate metric (lower is better).
GATE_TAG = "gate_metric_value"
# The hash of the held-out data a version was scored on (``facekeys.data.labelled_images``'s
# ``labelled_sha256``).
GATE_DATA_TAG = "gate_data_sha256"


# The split of eval.json the gate reads: the selection rows. The reported splits (test,
# new_people) stay read by no choice, so that their numbers stay honest.
GATE_SPLIT = "selection"


def gate_setting(gate: str, dataset: str) -> tuple[str, str]:
    """The split and key of a ``register.gate_metric`` setting (``selection.<key>``).

    Raises:
        FacekeysError: another split than the selection rows, or a key without a paired
            bootstrap (``facekeys.evaluation.metrics.GATE_METRIC_KEYS``).
    """
    split, _, key = gate.partition(".")
    setting = f"params.yaml: register.gate_metric for {dataset} is {gate!r}"
    if split != GATE_SPLIT:
        raise FacekeysError(
            f"{setting}: the gate must read the {GATE_SPLIT} rows ({GATE_SPLIT}.<key>); the "
            "reported splits (test, new_people) are read by no choice"
        )
    if key not in GATE_METRIC_KEYS:
        raise FacekeysError(
            f"{setting}: no paired bootstrap exists for {key!r}, so the gate could not tell a "
            f"gain from noise; use one of {', '.join(GATE_METRIC_KEYS)}"
        )
    return split, key


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
    """The alias a new version gets, and why in words."""

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


def gate_decision(
    metric: str,
    value: float,
    min_improvement: float,
    reference_value: float | None,
    reference_note: str,
    paired_bootstrap: Any | None,
) -> tuple[Decision, dict[str, Any] | None]:
    """The decision against the reference, and the paired bootstrap where it was asked.

    Args:
        reference_value: What the new version must beat (None: nothing comparable, the new
            version leads; NaN: not comparable, it does not).
        reference_note: How the reference was found, when it is not simply the champion's tag.
        paired_bootstrap: A call without arguments returning the paired bootstrap of the gain
            against the reference version, or None when there is none to run.
    """
    decision = decide(metric, value, reference_value, min_improvement)
    if reference_note:
        reason = decision.reason
        if reference_value is None and decision.alias == CHAMPION:
            # Not the first model: the note says why nothing could be compared with.
            reason = f"{metric} {value:.6g} becomes the champion"
        decision = Decision(decision.alias, f"{reference_note}; {reason}")
    noise = None
    if decision.alias == CHAMPION and paired_bootstrap is not None:
        noise = paired_bootstrap()
        decision = beyond_noise(decision, noise)
    return decision, noise


def beyond_noise(decision: Decision, noise: dict[str, Any] | None) -> Decision:
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


def comparable_value(version: Any, metric: str | None, gate_data: str | None) -> float | None:
    """A version's gate value where it was scored like the new one, else None."""
    tags = version.tags or {}
    if tags.get("gate_metric") != metric or GATE_TAG not in tags:
        return None
    if tags.get(GATE_DATA_TAG) != gate_data:
        return None
    value = float(tags[GATE_TAG])
    return value if math.isfinite(value) else None


def best_comparable_version(
    versions: list[Any], metric: str | None, gate_data: str | None, exclude: str | None
) -> tuple[float, str] | None:
    """The lowest gate value among ``versions`` scored like the new one, with its version
    number (``exclude`` left out), or None when none is comparable."""
    values = [
        (value, str(v.version))
        for v in versions
        if str(v.version) != exclude
        and (value := comparable_value(v, metric, gate_data)) is not None
    ]
    return min(values) if values else None


def best_challenger(
    versions: list[Any], champion: str, champion_tags: dict[str, str]
) -> str | None:
    """The best version that is not the champion, among those scored like the champion."""
    metric, gate_data = champion_tags.get("gate_metric"), champion_tags.get(GATE_DATA_TAG)
    values = [
        (value, int(v.version))
        for v in versions
        if str(v.version) != champion
        and (value := comparable_value(v, metric, gate_data)) is not None
    ]
    return str(min(values)[1]) if values else None


# What a reused version's reason starts with, possibly repeated in the description an earlier
# reuse wrote: a reason says it once.
_REUSED_NOTE = re.compile(r"^(version \d+ already (?:held|holds) this model(?: as @\w+)?[;:] )+")


def reused_reason(version: str, reason: str | None, alias: str | None = None) -> str:
    """``version <n> already holds this model[ as @alias]; <the gate's reason>``, said once
    (an earlier reuse's note in ``reason`` is dropped)."""
    held = f" as @{alias}" if alias else ""
    gate_reason = _REUSED_NOTE.sub("", reason or "")
    return f"version {version} already holds this model{held}; {gate_reason}"
