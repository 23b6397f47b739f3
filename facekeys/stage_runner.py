"""What every DVC stage script shares: params loading and one-line errors instead of tracebacks
(for the operating system's errors too: a read-only folder, a full disk, a missing file)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from facekeys.errors import FacekeysError, describe_os_error
from facekeys.params import load_params


def run_stage(name: str, body: Callable[[dict[str, Any], list[str]], None]) -> None:
    """Runs ``body(params, argv)`` and exits: 0 on success, 1 with one line on a user error or
    an operating system error (naming its file: ``stage evaluate: error: metrics/x/eval.json:
    cannot write: No space left on device``)."""
    try:
        body(load_params("params.yaml"), sys.argv[1:])
    except FacekeysError as exc:
        print(f"stage {name}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        # Outputs are written atomically, so after this line nothing is half-written.
        print(f"stage {name}: error: {describe_os_error(exc)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"stage {name}: interrupted", file=sys.stderr)
        sys.exit(130)


def dataset_arg(argv: list[str], params: dict[str, Any]) -> str:
    """The single data set argument of a stage, checked against ``datasets`` in params."""
    if len(argv) != 1 or argv[0] not in params.get("datasets", []):
        raise FacekeysError(
            f"expected one data set argument out of {params.get('datasets', [])}, got {argv}"
        )
    return argv[0]
