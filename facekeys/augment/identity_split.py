"""Who is held out: the person of each frame, and the seeded split of rows by identity.

The training CSV is split so that no person is in two parts: ``new_people`` (reported, read by no
choice) is drawn first, then ``val`` (selection), the rest is ``train``. Kaggle's rows name no
people, so each row is its own identity there. ``held_out_split`` reads back from a model card
which settings decided a trained model's held-out rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

_FRAME_NUMBER = re.compile(r"[\s_\-]*\d+$")

# Settings that decide which rows are held out; the refinement data must share them.
SPLIT_KEYS = ("seed", "val_fraction", "new_people_fraction")


def held_out_split(card: dict[str, Any]) -> dict[str, Any]:
    """What decided a trained model's held-out rows, from its model card: the split settings
    (``SPLIT_KEYS``) of the data it trained on. Two models with equal splits held out the same
    rows of the same CSV."""
    data = (card.get("resolved_config") or {}).get("data") or {}
    return {key: data.get(key) for key in SPLIT_KEYS}


def identity_of(name: str) -> str:
    """The person in a frame name: the file stem without its frame number (``Luis_Fonsi_21.jpg``
    -> ``Luis_Fonsi``)."""
    stem = PurePosixPath(name).stem
    return _FRAME_NUMBER.sub("", stem) or stem


def identity_split(
    identities: list[str], held_out: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Splits row indices so that no identity is in two parts.

    Args:
        identities: The person of each row.
        held_out: Part name -> share of the rows, filled in this order from one seeded order
            of the identities (so a later part never changes an earlier one).
        seed: Seeds the order.

    Returns:
        ``"train"`` (the rest) and each held-out part -> sorted row indices.
    """
    unique = sorted(set(identities))
    order = [unique[k] for k in np.random.default_rng(seed).permutation(len(unique))]
    counts: dict[str, int] = {}
    for ident in identities:
        counts[ident] = counts.get(ident, 0) + 1
    part_of: dict[str, str] = {}
    position = 0
    for part, fraction in held_out.items():
        target, taken = fraction * len(identities), 0
        while position < len(order) and taken < target:
            part_of[order[position]] = part
            taken += counts[order[position]]
            position += 1
    labels = np.array([part_of.get(ident, "train") for ident in identities], dtype=object)
    return {part: np.flatnonzero(labels == part) for part in ("train", *held_out)}


@dataclass
class HeldOutParts:
    """The split of a training CSV into ``train``, ``val`` and ``new_people``.

    Attributes:
        identities: The person of each row (``row<i>`` where the format names no people).
        kind: How the rows were split, in words (recorded in ``meta.json``).
        fractions: Held-out part -> share of the rows, in the order they were drawn.
        indices: ``"train"`` and each held-out part -> sorted row indices.
    """

    identities: list[str]
    kind: str
    fractions: dict[str, float]
    indices: dict[str, np.ndarray]


def split_training_rows(
    names: list[str],
    names_people: bool,
    val_fraction: float,
    new_people_fraction: float,
    seed: int,
) -> HeldOutParts:
    """Holds out the selection (``val``) and reported (``new_people``) rows of a training CSV.

    Args:
        names: The rows' names (``SplitRows.names``).
        names_people: Whether the names are frame file names that name a person.
        val_fraction: Share of the rows for selection.
        new_people_fraction: Share for the reported new-people split (only where people are
            named).
        seed: Seeds the order of the identities.
    """
    if not names_people:
        # Kaggle rows carry no names, hence no identities: the selection rows are drawn at
        # random (their people may be in training) and there is no new-people split.
        identities = [f"row{i}" for i in range(len(names))]
        kind = "random rows (the format names no people)"
        fractions = {"new_people": 0.0, "val": val_fraction}
    else:
        identities = [identity_of(n) for n in names]
        kind = "by identity (file name without its frame number)"
        fractions = {"new_people": new_people_fraction, "val": val_fraction}
    indices = identity_split(identities, fractions, seed)
    return HeldOutParts(identities=identities, kind=kind, fractions=fractions, indices=indices)
