"""The headless-browser helpers see text that JavaScript inserts, and write screenshots."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import ensure_chromium, render_dom, screenshot, wait_for_text
from tests.tinyproject import free_port

# The text appears only after a timer fires, as data does in a single-page app. It is built
# from parts so that the script's own source does not already contain it.
PAGE = """<!doctype html>
<html><body><div id="out">not yet</div>
<script>
setTimeout(() => {
  document.getElementById("out").textContent = ["inserted", "by", "script"].join(" ");
}, 500);
</script></body></html>
"""


@pytest.fixture
def page_url(tmp_path: Path) -> Iterator[str]:
    """Serves PAGE with ``python -m http.server`` on 127.0.0.1; yields its URL."""
    (tmp_path / "index.html").write_text(PAGE)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"http.server did not start on port {port}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/index.html"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def chromium() -> str:
    path = ensure_chromium()
    if path is None:
        pytest.skip("chromium is missing and cannot be installed here (needs root and apt-get)")
    return path


@pytest.mark.slow
# The first run may install chromium (up to 600 s) before rendering.
@pytest.mark.timeout(900)
def test_render_and_screenshot(chromium, page_url, tmp_path):
    # Without a budget the DOM is dumped at load, before the timer fired.
    assert '<div id="out">not yet</div>' in render_dom(page_url, wait_ms=0)

    dom = render_dom(page_url, wait_ms=2000)
    assert "inserted by script" in dom
    assert "not yet" not in dom

    assert "inserted by script" in wait_for_text(page_url, ["inserted by script"], wait_ms=1000)

    png = screenshot(page_url, tmp_path / "shots" / "page.png", size=(640, 480), wait_ms=2000)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 1000
