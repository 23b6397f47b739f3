"""``facekeys serve``: load the model, listen on a loopback address, run the web app.

The app has no authentication, so it listens on this machine only: a host that is not a loopback
address is refused (share it through a reverse proxy that authenticates, if ever needed).
Everything that can fail at start (the address, the port, the model, the samples folder) fails
before the first request, as one line.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from facekeys.errors import FacekeysError
from facekeys.wild.filters import apply_overlay, layout_for
from facekeys.wild.web_app import create_app
from facekeys.wild.web_uploads import UploadLimits, list_samples


def loopback_host(host: str) -> str:
    """The numeric loopback address to listen on for ``host``.

    Raises:
        FacekeysError: ``host`` is not a loopback address (nor ``localhost``).
    """
    address = "127.0.0.1" if host == "localhost" else host
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise FacekeysError(
            f"--host {host}: not a loopback address; the web app has no authentication and "
            "listens on this machine only (127.0.0.1, ::1 or localhost)"
        )
    return address


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound and listening on ``host:port``, so a busy port fails before the model
    loads.

    Raises:
        FacekeysError: The address cannot be bound (in use, no permission).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise FacekeysError(f"{host}:{port}: cannot listen: {exc.strerror or exc}") from None
    return sock


def serve(
    spec: str,
    host: str,
    port: int,
    limits: UploadLimits,
    *,
    samples_dir: str | Path | None = None,
    overlays: Mapping[str, Any] | None = None,
) -> None:
    """Runs the web app until interrupted (Ctrl-C or SIGTERM end it cleanly).

    Args:
        spec: The model: a folder, an export, an ``.onnx`` file or an MLflow model URI.
        host: A loopback address.
        port: The TCP port (0: any free one).
        limits: Caps on each uploaded photo.
        samples_dir: A folder whose photos the page offers as samples, or None.
        overlays: Overlays (``facekeys.wild.overlays.Overlay``) by name for ``/v1/filter``,
            placed with the model's keypoint layout.

    Raises:
        FacekeysError: One line: the host, the port, the samples folder or the model cannot be
            used (the model must carry a face detector calibration).
    """
    import uvicorn

    from facekeys.tracking.model_specs import load_any_model

    address = loopback_host(host)
    samples = list_samples(samples_dir, limits)
    sock = listening_socket(address, port)
    try:
        predictor = load_any_model(spec)
        predictor.require_detector()  # photos need faces found; say so now, not per request
        layout = layout_for(predictor.keypoint_names)
        filters = {
            name: functools.partial(apply_overlay, overlay=overlay, layout=layout)
            for name, overlay in (overlays or {}).items()
        }
        app = create_app(predictor, filters, limits, model_label=spec, samples=samples)
        bound_port = sock.getsockname()[1]
        shown = f"[{address}]" if ":" in address else address
        print(f"facekeys serve: http://{shown}:{bound_port}/ ({spec}); Ctrl-C stops",
              file=sys.stderr, flush=True)  # fmt: skip
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
