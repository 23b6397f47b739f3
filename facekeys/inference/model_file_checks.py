"""What can be wrong with a model folder's files, said in one line: the model card's keys and
types the prediction path reads (``check_card``), and why torch refused a weights file
(``torch_load_reason``), without torch's advice to load it unsafely."""

from __future__ import annotations

import os
import pickle
from typing import Any

from facekeys.data.keypoint_formats import FORMATS
from facekeys.errors import FacekeysError

# What the prediction path reads from a model card: dotted key -> (accepted types, required).
# Checked before any network is built, so a hand-edited card fails in one line naming the key.
_CARD_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((str,), True),
    "architecture": ((str,), True),
    "width": ((int,), True),
    "heatmap_stride": ((int,), False),
    "stem_block": ((bool,), False),
    "label_pixel_offset": ((int, float), False),
    "refine_sha256": ((str,), False),
    "input": ((dict,), True),
    "input.channels": ((int,), True),
    "input.size": ((int,), True),
    "input.scale": ((int, float), True),
    "input.mean": ((int, float), True),
    "input.std": ((int, float), True),
    "input.color": ((str,), False),
    "crop_policy": ((dict,), True),
    "crop_policy.margin": ((int, float), False),
    "crop_policy.pad_value": ((int,), False),
    "crop_policy.detector": ((dict, type(None)), False),
    "crop_policy.yuface": ((dict, type(None)), False),
    "keypoints": ((dict,), True),
    "keypoints.names": ((list,), True),
}


def check_card(card: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model card ``card`` read from ``path``, checked for the keys and types the
    prediction path uses.

    Raises:
        FacekeysError: ``{path}: <key> must be <type>, not <value>`` (or a missing key).
    """
    if not isinstance(card, dict):
        raise FacekeysError(f"{path}: not a model card (a JSON object), but {type(card).__name__}")
    for key, (types, required) in _CARD_FIELDS.items():
        parent_key, _, name = key.rpartition(".")
        parent = card.get(parent_key) if parent_key else card
        if name not in parent:
            if required:
                raise FacekeysError(f"{path}: {key} is missing")
            continue
        value = parent[name]
        # bool is an int to Python, never a size or a width to a card.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            kinds = " or ".join(_TYPE_WORDS[t] for t in types)
            raise FacekeysError(f"{path}: {key} must be {kinds}, not {value!r:.40}")
    if card["format"] not in FORMATS:
        raise FacekeysError(f"{path}: format {card['format']!r:.40} is none of {list(FORMATS)}")
    if card["input"]["size"] <= 0 or card["input"]["channels"] not in (1, 3):
        raise FacekeysError(f"{path}: input.size must be positive and input.channels 1 or 3")
    return card


_TYPE_WORDS = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "an object",
    list: "a list",
    type(None): "null",
}


def torch_load_reason(exc: BaseException) -> str:
    """Why torch refused a weights file, without torch's advice to load it unsafely."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        # torch names the Python object after "WeightsUnpickler error:"; everything else it says
        # is how to load the file anyway (weights_only=False), which would run code from it.
        detail = text.partition("WeightsUnpickler error:")[2].strip().splitlines()
        what = detail[0].split(" was not an allowed")[0].strip() if detail else ""
        if "Unsupported global" in what:  # a pickled Python object: code would run on load
            return f"not a plain weights file ({what}); refused for safety"
        return f"not a readable weights file ({what or 'corrupt'})"
    if isinstance(exc, EOFError):
        return "truncated weights file (it ends early)"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"not a readable weights file: {first.split('. ')[0]}"
