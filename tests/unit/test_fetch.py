"""Fetching from a folder, a zip, and a zip served over HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from facekeys.data.atomic_files import sha256_file
from facekeys.data.fetch import fetch_dataset
from facekeys.data.source_plan import resolve_source, source_env_var
from facekeys.errors import FacekeysError


def make_youtube_folder(root: Path) -> Path:
    for split in ("training", "test"):
        (root / split).mkdir(parents=True)
        (root / split / f"{split}_00.jpg").write_bytes(b"img-" + split.encode())
    (root / "training_frames_keypoints.csv").write_text(",0,1\ntraining_00.jpg,1,2\n")
    (root / "test_frames_keypoints.csv").write_text(",0,1\ntest_00.jpg,1,2\n")
    (root / "unrelated.txt").write_text("not part of the layout")
    return root


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


def assert_youtube_layout(out: Path, manifest: dict) -> None:
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "test",
        "test_frames_keypoints.csv",
        "training",
        "training_frames_keypoints.csv",
    ]
    assert (out / "training" / "training_00.jpg").read_bytes() == b"img-training"
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    csv_sha = on_disk["csvs"]["training_frames_keypoints.csv"]["sha256"]
    assert csv_sha == sha256_file(out / "training_frames_keypoints.csv")
    assert on_disk["image_dirs"] == {"training": {"files": 1}, "test": {"files": 1}}


def test_from_folder(tmp_path):
    src = make_youtube_folder(tmp_path / "src")
    manifest = fetch_dataset("youtube-faces-68", str(src), tmp_path / "out")
    assert_youtube_layout(tmp_path / "out", manifest)


@pytest.mark.parametrize("prefix", ["", "data/", "deep/er/"])
def test_from_zip_with_any_top_folder(tmp_path, prefix):
    archive = zip_folder(make_youtube_folder(tmp_path / "src"), tmp_path / "d.zip", prefix)
    manifest = fetch_dataset("youtube-faces-68", str(archive), tmp_path / "out")
    assert_youtube_layout(tmp_path / "out", manifest)


def make_kaggle_zips(root: Path) -> Path:
    root.mkdir()
    for name in ("training", "test"):
        with zipfile.ZipFile(root / f"{name}.zip", "w") as zf:
            zf.writestr(f"{name}.csv", f"header\n{name}-row\n")
    return root


def test_kaggle_csvs_from_inner_zips_in_folder_and_in_zip(tmp_path):
    src = make_kaggle_zips(tmp_path / "kaggle")
    fetch_dataset("kaggle-15", str(src), tmp_path / "a")
    assert (tmp_path / "a" / "training.csv").read_text() == "header\ntraining-row\n"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "manifest.json",
        "test.csv",
        "training.csv",
    ]
    outer = zip_folder(src, tmp_path / "download-all.zip")  # Kaggle's zip of zips
    fetch_dataset("kaggle-15", str(outer), tmp_path / "b")
    assert (tmp_path / "b" / "test.csv").read_text() == "header\ntest-row\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    truncate_to: int | None = None

    def do_HEAD(self) -> bool:
        if self.path != "/data.zip":
            self.send_error(404)
            return False
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        return True

    def do_GET(self) -> None:
        if self.do_HEAD():
            self.wfile.write(self.payload[: self.truncate_to])

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(payload: bytes, truncate_to: int | None = None) -> Iterator[str]:
    handler = type("H", (_Handler,), {"payload": payload, "truncate_to": truncate_to})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_from_http_zip(tmp_path):
    archive = zip_folder(make_youtube_folder(tmp_path / "src"), tmp_path / "d.zip", "data/")
    with serve(archive.read_bytes()) as base:
        manifest = fetch_dataset("youtube-faces-68", f"{base}/data.zip", tmp_path / "out")
    assert manifest["source"].endswith("/data.zip")
    assert_youtube_layout(tmp_path / "out", manifest)
    assert not list(tmp_path.glob(".out.*")), "temporary folders left behind"


def test_broken_download_leaves_previous_output_untouched(tmp_path):
    src = make_youtube_folder(tmp_path / "src")
    fetch_dataset("youtube-faces-68", str(src), tmp_path / "out")
    before = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*"))
    payload = zip_folder(src, tmp_path / "d.zip").read_bytes()
    with serve(payload, truncate_to=len(payload) // 2) as base:
        with pytest.raises(FacekeysError, match="download broke off"):
            fetch_dataset("youtube-faces-68", f"{base}/data.zip", tmp_path / "out")
    after = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*"))
    assert before == after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zip", "out", "src"]


def test_broken_first_download_leaves_nothing(tmp_path):
    with serve(b"PK\x03\x04" + b"x" * 1000, truncate_to=10) as base:
        with pytest.raises(FacekeysError):
            fetch_dataset("youtube-faces-68", f"{base}/data.zip", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_http_errors_are_one_line(tmp_path):
    with serve(b"") as base, pytest.raises(FacekeysError, match="download refused: HTTP 404"):
        fetch_dataset("youtube-faces-68", f"{base}/missing.zip", tmp_path / "out")
    with pytest.raises(FacekeysError, match="download failed"):
        fetch_dataset("youtube-faces-68", "http://127.0.0.1:9/none.zip", tmp_path / "out")


def test_not_a_zip_and_incomplete_layout(tmp_path):
    (tmp_path / "x.zip").write_text("hello")
    with pytest.raises(FacekeysError, match="neither a folder nor a zip"):
        fetch_dataset("youtube-faces-68", str(tmp_path / "x.zip"), tmp_path / "out")
    src = make_youtube_folder(tmp_path / "src")
    (src / "test_frames_keypoints.csv").unlink()
    with pytest.raises(FacekeysError, match="does not hold the expected layout"):
        fetch_dataset("youtube-faces-68", str(src), tmp_path / "out")
    with pytest.raises(FacekeysError, match="does not exist"):
        fetch_dataset("youtube-faces-68", str(tmp_path / "nowhere"), tmp_path / "out")


def test_zip_slip_refused(tmp_path):
    archive = zip_folder(make_youtube_folder(tmp_path / "src"), tmp_path / "d.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("training/../../evil.txt", "pwned")
    with pytest.raises(FacekeysError, match="unsafe path in archive"):
        fetch_dataset("youtube-faces-68", str(archive), tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_extract_cap(tmp_path):
    from facekeys.data.source_plan import FetchSettings

    archive = zip_folder(make_youtube_folder(tmp_path / "src"), tmp_path / "d.zip")
    with pytest.raises(FacekeysError, match="max_extract_bytes"):
        fetch_dataset(
            "youtube-faces-68", str(archive), tmp_path / "out", FetchSettings(max_extract_bytes=20)
        )


def test_env_var_overrides_params(monkeypatch):
    assert source_env_var("youtube-faces-68") == "FACEKEYS_SOURCE_YOUTUBE_FACES_68"
    monkeypatch.delenv("FACEKEYS_SOURCE_KAGGLE_15", raising=False)
    assert resolve_source("kaggle-15", "https://x/y.zip") == ("https://x/y.zip", "params")
    monkeypatch.setenv("FACEKEYS_SOURCE_KAGGLE_15", "/local/copy")
    assert resolve_source("kaggle-15", "https://x/y.zip") == (
        "/local/copy",
        "env:FACEKEYS_SOURCE_KAGGLE_15",
    )


def test_links_that_leave_a_source_folder_are_refused_at_fetch_time(tmp_path):
    import os

    secret = tmp_path / "secret.txt"
    secret.write_text("not part of any data set")
    src = make_youtube_folder(tmp_path / "src")
    os.symlink(secret, src / "training" / "leak.jpg")
    with pytest.raises(FacekeysError, match=r"leak.jpg: symbolic link leaves the source folder"):
        fetch_dataset("youtube-faces-68", str(src), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (src / "training" / "leak.jpg").unlink()
    csv = src / "test_frames_keypoints.csv"
    csv.rename(tmp_path / "outside.csv")
    os.symlink(tmp_path / "outside.csv", csv)
    with pytest.raises(FacekeysError, match=r"test_frames_keypoints.csv: symbolic link leaves"):
        fetch_dataset("youtube-faces-68", str(src), tmp_path / "out")
    # A link inside the source is fine: copied as the file it points to.
    csv.unlink()
    (tmp_path / "outside.csv").rename(csv)
    os.symlink(src / "training" / "training_00.jpg", src / "training" / "alias.jpg")
    fetch_dataset("youtube-faces-68", str(src), tmp_path / "out")
    alias = tmp_path / "out" / "training" / "alias.jpg"
    assert not alias.is_symlink() and alias.read_bytes() == b"img-training"
