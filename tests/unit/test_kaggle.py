"""Kaggle credentials: where they are read from, where they are sent, what each refusal says.

A local HTTP server plays Kaggle's competition download endpoint: it checks basic auth, answers
401/403/404 like Kaggle, and redirects a good request to "storage" that must never see the key.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from facekeys.data.fetch import fetch_dataset, fetch_planned
from facekeys.data.kaggle_credentials import KaggleCredentials, find_credentials
from facekeys.data.source_plan import FetchSettings, plan_source
from facekeys.errors import FacekeysError
from tests.conftest import KAGGLE_HEADER, kaggle_row

USER, KEY = "ada", "5e3c-very-secret-key-77"
COMPETITION = "/api/v1/competitions/data/download-all/facial-keypoints-detection"
LOCAL = FetchSettings(kaggle_hosts=("127.0.0.1",))


def competition_zip(unlabelled_test: bool = True) -> bytes:
    """Kaggle's download: a zip holding training.zip and test.zip (test without keypoints)."""

    def csv_text(header: list[str], rows: list[list[str]]) -> str:
        return "\n".join(",".join(r) for r in [header, *rows]) + "\n"

    rows = []
    for k in range(40):
        row = kaggle_row(missing_optional=k % 3 == 0)
        row["Image"] = " ".join(str((i * (k + 1)) % 256) for i in range(9216))
        rows.append([row[c] for c in KAGGLE_HEADER])
    if unlabelled_test:
        test = csv_text(["ImageId", "Image"], [["1", rows[0][-1]], ["2", rows[1][-1]]])
    else:
        test = csv_text(KAGGLE_HEADER, rows[:3])
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as zf:
        for name, text in (("training", csv_text(KAGGLE_HEADER, rows)), ("test", test)):
            inner = io.BytesIO()
            with zipfile.ZipFile(inner, "w") as izf:
                izf.writestr(f"{name}.csv", text)
            zf.writestr(f"{name}.zip", inner.getvalue())
        zf.writestr("IdLookupTable.csv", "RowId,ImageId,FeatureName,Location\n")
    return outer.getvalue()


class FakeKaggle(http.server.BaseHTTPRequestHandler):
    """Kaggle's answers: 401 without or with wrong credentials, 403 without accepted rules."""

    payload = b""
    expired = False
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        self.seen.append((self.path, auth))
        if self.path == "/storage/download.zip" and self.expired:
            self.send_error(403)  # a signed storage URL that expired
            return
        if self.path == "/storage/download.zip":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.payload)))
            self.send_header("ETag", '"v1"')
            self.end_headers()
            self.wfile.write(self.payload)
            return
        if not self.path.startswith("/api/v1/competitions/data/download-all/"):
            self.send_error(404)
            return
        good = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
        norules = "Basic " + base64.b64encode(f"bob:{KEY}".encode()).decode()
        if auth not in (good, norules):
            self.send_error(401)
        elif not self.path.endswith("/facial-keypoints-detection"):
            self.send_error(404)
        elif auth == norules:
            self.send_error(403)
        else:
            self.send_response(302)
            self.send_header("Location", "/storage/download.zip")
            self.end_headers()

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def fake_kaggle(payload: bytes) -> Iterator[tuple[str, list]]:
    seen: list = []
    handler = type("H", (FakeKaggle,), {"payload": payload, "seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def kaggle_json(folder: Path, content: str, mode: int = 0o600) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kaggle.json"
    path.write_text(content)
    path.chmod(mode)
    return path


def test_credentials_from_the_environment_come_first(tmp_path):
    kaggle_json(tmp_path, json.dumps({"username": "file-user", "key": "file-key"}))
    env = {"KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY, "KAGGLE_CONFIG_DIR": str(tmp_path)}
    found = find_credentials(env)
    assert (found.username, found.key, found.origin) == (USER, KEY, "environment")
    assert KEY not in repr(found)
    found = find_credentials({"KAGGLE_CONFIG_DIR": str(tmp_path)})
    assert (found.username, found.key) == ("file-user", "file-key")
    assert find_credentials({"KAGGLE_CONFIG_DIR": str(tmp_path / "none")}) is None


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (
            '{"username": "a", "key": "b"}',
            0o644,
            r"readable by other users \(mode 0644\).*chmod 600",
        ),
        ('{"username": "a", "key": "b"}', 0o640, r"readable by other users \(mode 0640\)"),
        ('{"username": "a", ', 0o600, r"malformed: not JSON"),
        ('["a", "b"]', 0o600, r"malformed: expected"),
        ('{"username": "a"}', 0o600, r'malformed: "key" is missing'),
        ('{"username": "", "key": "b"}', 0o600, r'malformed: "username" is missing'),
    ],
)
def test_a_bad_kaggle_json_is_refused_in_one_line_naming_it(tmp_path, content, mode, message):
    path = kaggle_json(tmp_path, content, mode)
    with pytest.raises(FacekeysError, match=message) as caught:
        find_credentials({"KAGGLE_CONFIG_DIR": str(tmp_path)})
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_half_set_environment_variables_are_refused():
    with pytest.raises(FacekeysError, match="KAGGLE_USERNAME is set but KAGGLE_KEY is not"):
        find_credentials({"KAGGLE_USERNAME": USER})
    with pytest.raises(FacekeysError, match="KAGGLE_KEY is set but KAGGLE_USERNAME is not"):
        find_credentials({"KAGGLE_USERNAME": "  ", "KAGGLE_KEY": KEY})


def test_credentials_are_never_sent_in_clear_text():
    env = {"KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY}
    url = "http://www.kaggle.com" + COMPETITION
    with pytest.raises(FacekeysError, match=r"^fetch.sources.kaggle-15 in params.yaml: .*https"):
        plan_source("kaggle-15", {"kaggle-15": url}, FetchSettings(), env)


@pytest.mark.parametrize("where", ["environment", "kaggle.json"])
def test_credentials_reach_kaggle_as_basic_auth_and_nowhere_else(tmp_path, capfd, where):
    if where == "environment":
        env = {"KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY, "KAGGLE_CONFIG_DIR": str(tmp_path)}
    else:
        kaggle_json(tmp_path / "cfg", json.dumps({"username": USER, "key": KEY}))
        env = {"KAGGLE_CONFIG_DIR": str(tmp_path / "cfg")}
    with fake_kaggle(competition_zip()) as (base, seen):
        plan = plan_source("kaggle-15", {"kaggle-15": base + COMPETITION}, LOCAL, env)
        manifest = fetch_planned(
            plan,
            tmp_path / "raw" / "kaggle-15",
            LOCAL,
            tmp_path / "raw",
            tmp_path / "raw" / "kaggle-15.source.json",
        )
    good = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
    assert seen[0] == (COMPETITION, good)
    assert seen[1] == ("/storage/download.zip", None), "the redirect target saw the credentials"
    assert manifest["credentials"] == where
    # The competition's test.csv has no keypoints: labelled rows are held out of training.
    held = manifest["test_held_out"]
    assert held["test_rows"] > 0 and held["test_rows"] + held["training_rows"] == 40
    assert held["unlabelled_test_rows_dropped"] == 2
    test_csv = (tmp_path / "raw" / "kaggle-15" / "test.csv").read_text().splitlines()
    assert test_csv[0].split(",") == KAGGLE_HEADER and len(test_csv) == held["test_rows"] + 1
    assert all(",," not in line for line in test_csv), "a held-out test row misses points"
    out = capfd.readouterr()
    written = [p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()]
    for secret in (KEY, base64.b64encode(f"{USER}:{KEY}".encode()).decode()):
        assert secret not in out.out + out.err
        assert not any(secret.encode() in data for data in written)


def test_other_hosts_never_get_the_credentials(tmp_path):
    env = {"KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY}
    creds = KaggleCredentials(USER, KEY, "environment")
    with fake_kaggle(competition_zip()) as (base, seen):
        plan = plan_source("kaggle-15", {"kaggle-15": base + COMPETITION}, FetchSettings(), env)
        assert plan.credentials is None  # 127.0.0.1 is not among the default Kaggle hosts
        # Even handed the credentials, the download keeps them from a host not listed.
        with pytest.raises(FacekeysError, match="HTTP 401"):
            fetch_dataset("kaggle-15", base + COMPETITION, tmp_path / "out", credentials=creds)
    assert seen and all(auth is None for _, auth in seen)


def test_a_refusal_after_the_redirect_is_not_blamed_on_kaggle(tmp_path):
    creds = KaggleCredentials(USER, KEY, "environment")
    with fake_kaggle(b"") as (base, _):
        FakeKaggle.expired = True
        try:
            with pytest.raises(
                FacekeysError, match=r"refused by 127\.0\.0\.1 after a redirect: HTTP 403"
            ):
                fetch_dataset(
                    "kaggle-15", base + COMPETITION, tmp_path / "o", LOCAL, credentials=creds
                )
        finally:
            FakeKaggle.expired = False


@pytest.mark.parametrize(
    ("credentials", "path", "message"),
    [
        (None, COMPETITION, r"Kaggle needs credentials \(HTTP 401\): set KAGGLE_USERNAME"),
        (
            (USER, "wrong"),
            COMPETITION,
            r"refused user 'ada' .*\(HTTP 401\): wrong user name or key",
        ),
        (
            ("bob", KEY),
            COMPETITION,
            r"\(HTTP 403\): the competition's rules are not accepted.*"
            r"https://www.kaggle.com/competitions/facial-keypoints-detection/rules",
        ),
        (
            (USER, KEY),
            COMPETITION.replace("facial-keypoints-detection", "nope"),
            r"no competition 'nope' \(HTTP 404\)",
        ),
    ],
)
def test_each_refusal_says_which_in_one_line_and_writes_nothing(
    tmp_path, credentials, path, message
):
    creds = KaggleCredentials(*credentials, "environment") if credentials else None
    with fake_kaggle(competition_zip()) as (base, _):
        with pytest.raises(FacekeysError, match=message) as caught:
            fetch_dataset("kaggle-15", base + path, tmp_path / "out", LOCAL, credentials=creds)
    assert "\n" not in str(caught.value) and KEY not in str(caught.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_without_credentials_kaggle_15_is_derived_and_says_how_to_get_the_real_data(tmp_path):
    sources = {"kaggle-15": "https://www.kaggle.com" + COMPETITION, "youtube-faces-68": "yt"}
    plan = plan_source("kaggle-15", sources, FetchSettings(), {"KAGGLE_CONFIG_DIR": str(tmp_path)})
    assert plan.source == "derived:youtube-faces-68" and plan.base.source == "yt"
    assert "KAGGLE_USERNAME" in plan.note and "scripts/pipeline -f fetch@kaggle-15" in plan.note
    # With credentials the same setting means the competition's own data.
    env = {"KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY}
    plan = plan_source("kaggle-15", sources, FetchSettings(), env)
    assert plan.source == sources["kaggle-15"] and plan.credentials.username == USER


def test_a_labelled_test_csv_is_kept_as_it_is(tmp_path):
    archive = tmp_path / "k.zip"
    archive.write_bytes(competition_zip(unlabelled_test=False))
    manifest = fetch_dataset("kaggle-15", str(archive), tmp_path / "out")
    assert "test_held_out" not in manifest
    assert len((tmp_path / "out" / "test.csv").read_text().splitlines()) == 4


def test_a_kaggle_csv_that_is_not_text_fails_in_one_line(tmp_path):
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr("training.csv", b"left_eye_center_x,Image\n\xff\xfe,1 2\n")
        zf.writestr("test.csv", "ImageId,Image\n1,1 2\n")
    archive = tmp_path / "k.zip"
    archive.write_bytes(outer.getvalue())
    with pytest.raises(FacekeysError, match="cannot split off a labelled test set") as caught:
        fetch_dataset("kaggle-15", str(archive), tmp_path / "out")
    assert "\n" not in str(caught.value) and not (tmp_path / "out").exists()
