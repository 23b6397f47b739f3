"""Reading params.yaml, the single home of every pipeline setting."""

from __future__ import annotations

import os
from typing import Any

from facekeys.errors import FacekeysError


def load_params(path: str | os.PathLike[str] = "params.yaml") -> dict[str, Any]:
    """Loads a params file as a dict.

    Raises:
        FacekeysError: missing file, YAML syntax error, or not a mapping at the top level.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise FacekeysError(f"{path}: params file does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise FacekeysError(f"{path}:{where} invalid YAML") from None
    if not isinstance(data, dict):
        raise FacekeysError(f"{path}: expected a mapping of sections at the top level")
    return data
