"""`facekeys serve` as a user meets it: a process on 127.0.0.1 that answers the page and the API,
start-up problems in one line, and the page working in a real (headless) browser."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from facekeys.cli import main
from facekeys.wild.web_app import create_app
from facekeys.wild.web_uploads import UploadLimits
from tests.browser import wait_for_text
from tests.conftest import REPO
from tests.tinyproject import free_port
from tests.unit.test_browser import chromium  # noqa: F401 (the fixture: skips without one)
from tests.unit.test_web_app import EYES, RED, calibrated_model, dot_between_the_eyes, encoded

FACEKEYS = [sys.executable, "-m", "facekeys.cli"]
START_TIMEOUT_S = 120  # importing torch and FastAPI on two busy cores


def serve_error(capsys, *args: str) -> str:
    """Runs `facekeys serve ARGS` in this process; asserts exit 1 and returns its one line."""
    assert main(["serve", *args]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_serve_refuses_hosts_other_machines_could_reach(capsys, host):
    assert serve_error(capsys, "--host", host, "--model", "never-loaded") == (
        f"facekeys serve: error: --host {host}: not a loopback address; the web app has no "
        "authentication and listens on this machine only (127.0.0.1, ::1 or localhost)"
    )


def test_serve_start_problems_are_one_line(capsys, tmp_path):
    port = str(free_port())
    missing = tmp_path / "missing"
    assert serve_error(capsys, "--port", port, "--model", str(missing)) == (
        f"facekeys serve: error: {missing}: not a model (a folder with model.pt and model.json, "
        "an export folder, or an .onnx file)"
    )
    uncalibrated = REPO / "tests" / "fixtures" / "model-before-wings"
    assert serve_error(capsys, "--port", port, "--model", str(uncalibrated)).startswith(
        "facekeys serve: error: the model has no calibration for a face detector"
    )
    assert serve_error(capsys, "--samples", str(missing), "--model", "x") == (
        f"facekeys serve: error: {missing}: not a folder of sample photos"
    )
    assert serve_error(capsys, "--max-bytes", "0", "--model", "x").startswith(
        "facekeys serve: error: --max-bytes and --max-pixels must be >= 1"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert serve_error(capsys, "--port", str(taken), "--model", "x") == (
            f"facekeys serve: error: 127.0.0.1:{taken}: cannot listen: Address already in use"
        )


def wait_until_up(url: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"facekeys serve exited: {process.stderr.read()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {START_TIMEOUT_S} s")
        time.sleep(0.3)


@pytest.mark.slow
def test_serve_process_answers_the_page_and_the_api_and_stops_on_ctrl_c(tmp_path):
    model = calibrated_model(tmp_path)
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "flat.png").write_bytes(encoded(np.full((90, 120), 128, np.uint8)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [*FACEKEYS, "serve", "--model", str(model), "--port", str(port), "--samples", samples],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_up(url + "/", process)
        page = httpx.get(url + "/").text
        assert '<form id="upload">' in page and str(model) in page
        assert '<a href="?demo=flat.png">flat.png</a>' in page
        flat = httpx.get(url + "/samples/flat.png").content
        answer = httpx.post(url + "/v1/keypoints", files={"image": ("a.png", flat)})
        assert answer.status_code == 200
        assert answer.json()["faces"] == []
        assert answer.json()["model"]["name"] == str(model)
        if (REPO.parent / "shared" / "data" / "sample-images" / "sunglasses.png").is_file():
            # The built-in overlays are wired to /v1/filter (their placement: test_filters.py).
            assert '<option value="sunglasses">' in page, page
            filtered = httpx.post(url + "/v1/filter", files={"image": ("a.png", flat)},
                                  data={"overlay": "sunglasses"})  # fmt: skip
            assert filtered.status_code == 200 and filtered.content[:4] == b"\x89PNG"
        refused = httpx.post(url + "/v1/keypoints", files={"image": ("a.png", b"text")})
        assert (refused.status_code, refused.json()) == (
            415,
            {"error": "content is none of the accepted formats (JPEG, PNG, WebP, BMP, TIFF)"},
        )
        outward = _outward_address()
        if outward != "127.0.0.1":  # listening on the loopback address only
            with socket.socket() as other:
                other.settimeout(2)
                assert other.connect_ex((outward, port)) != 0
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err.splitlines() == [
        f"facekeys serve: {url}/ ({model}); Ctrl-C stops",
        "facekeys serve: interrupted",
    ]


def _outward_address() -> str:
    """This machine's address on its outward interface (127.0.0.1 where it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent for UDP
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


@pytest.fixture
def live_app(tmp_path: Path, shared_data: Path) -> Iterator[tuple[str, Any]]:
    """The app with the tiny calibrated model, the test overlay `dot` and the sample obamas.jpg,
    served by uvicorn on 127.0.0.1 in a thread; yields its URL and the predictor."""
    import uvicorn

    from facekeys.inference.predictor import KeypointPredictor

    sample = shared_data / "sample-images" / "obamas.jpg"
    if not sample.is_file():
        pytest.skip(f"{sample} is missing")
    predictor = KeypointPredictor.from_dir(calibrated_model(tmp_path))
    app = create_app(predictor, {"dot": dot_between_the_eyes}, UploadLimits(),
                     model_label="tiny", samples={"obamas.jpg": sample})  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until_up(f"http://127.0.0.1:{port}/")
        yield f"http://127.0.0.1:{port}", predictor
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def data_url_image(dom: str, element_id: str) -> np.ndarray:
    """The image an <img id=element_id> shows as a PNG data URL, decoded (BGR)."""
    tag = re.search(rf'<img[^>]*id="{element_id}"[^>]*>', dom)
    assert tag, f"no <img id={element_id}> in the page"
    source = re.search(r'src="data:image/png;base64,([^"]+)"', tag.group(0))
    assert source, f"<img id={element_id}> shows no PNG: {tag.group(0)[:200]}"
    data = base64.b64decode(source.group(1))
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.slow
@pytest.mark.realdata
# Twice in the parallel suite (never alone, under CPU load, or after every unit test in one
# process) the page had not finished when Chromium dumped it: scripts/test runs it by itself.
@pytest.mark.alone
@pytest.mark.timeout(900)  # the first run may install chromium
@pytest.mark.usefixtures("chromium")
def test_the_page_shows_a_sample_photos_faces_keypoints_and_filter_in_a_browser(
    live_app, shared_data
):
    """The page's own script puts the sample in the form's file field, submits the form, posts
    the photo to /v1/keypoints and /v1/filter and shows what came back."""
    url, predictor = live_app
    photo = cv2.imread(str(shared_data / "sample-images" / "obamas.jpg"))
    boxes, points = predictor.predict_faces(photo)
    assert len(boxes) >= 2

    # Two requests, each a detection and a prediction: on a busy machine (the suite beside it)
    # they take seconds, so the renders get more time than the default.
    dom = wait_for_text(f"{url}/?demo=obamas.jpg&overlay=dot", ['data-state="done"'],
                        attempts=4, wait_ms=15000, timeout_s=150)  # fmt: skip

    assert 'data-state="done"' in dom, re.search(r'<p id="error"[^<]*</p>', dom)
    assert f"{len(boxes)} faces found in 759x500 pixels" in dom
    annotated = data_url_image(dom, "keypoints-image")
    assert annotated.shape == photo.shape
    inside = [(x, y) for x, y in np.round(points.reshape(-1, 2)).astype(int)
              if 0 <= x < 759 and 0 <= y < 500]  # fmt: skip
    assert len(inside) > 0.9 * points.shape[0] * points.shape[1]
    magenta = [np.abs(annotated[y, x].astype(int) - (255, 0, 255)).max() < 40 for x, y in inside]
    assert np.mean(magenta) > 0.95, "keypoints missing from the annotated photo"
    filtered = data_url_image(dom, "filter-image")
    assert filtered.shape == photo.shape
    for face in points:
        x, y = np.round((face[EYES[0]] + face[EYES[1]]) / 2).astype(int)
        assert tuple(filtered[y, x]) == RED
    assert tuple(filtered[5, 5]) != RED
