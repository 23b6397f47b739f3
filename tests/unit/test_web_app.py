"""The web app of `facekeys serve` through FastAPI's test client: photos in, faces as JSON or a
filtered PNG out; every bad request is one line of JSON with a 4xx status, refused before the
model sees it."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from facekeys.wild.web_app import create_app
from facekeys.wild.web_uploads import FORM_OVERHEAD_BYTES, UploadLimits, list_samples
from tests.conftest import REPO

LIMITS = UploadLimits(max_bytes=200_000, max_pixels=1_000_000, max_side=2000)
RED = (0, 0, 255)  # BGR
# Two faces (x, y, side) on a dark photo, the larger one second so that the order is tested.
SQUARES = [(30, 40, 60), (180, 70, 90)]
EYES = (36, 45)  # the outer eye corners of the 68-point layout


class SquareFaces:
    """Predictor double: each bright square is a face; its 68 points sit at known places in it
    (eye corners at 30 % and 70 % of the width, 40 % down; the rest at the centre)."""

    label_pixel_offset = 1.0
    refine = None

    def __init__(self) -> None:
        self.keypoint_names = [f"p{k}" for k in range(68)]
        self.card = {"format": "youtube68"}
        self.calls = 0

    def predict_faces(self, image: np.ndarray) -> tuple[list, np.ndarray]:
        self.calls += 1
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        count, _, stats, _ = cv2.connectedComponentsWithStats((gray > 128).astype(np.uint8))
        boxes = sorted(
            (tuple(float(v) for v in stats[k, :4]) for k in range(1, count)),
            key=lambda b: -b[2] * b[3],
        )
        return boxes, np.array([self.points(box) for box in boxes]).reshape(-1, 68, 2)

    @staticmethod
    def points(box: tuple[float, ...]) -> np.ndarray:
        x, y, w, h = box
        points = np.tile([x + w / 2, y + h / 2], (68, 1))
        points[EYES[0]] = (x + 0.3 * w, y + 0.4 * h)
        points[EYES[1]] = (x + 0.7 * w, y + 0.4 * h)
        return points


def dot_between_the_eyes(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Test overlay: a red disc between each face's outer eye corners."""
    out = image.copy()
    for face in points:
        centre = (face[EYES[0]] + face[EYES[1]]) / 2
        cv2.circle(out, (round(centre[0]), round(centre[1])), 6, RED, -1)
    return out


def photo(width: int = 300, height: int = 200, squares=SQUARES) -> np.ndarray:
    image = np.full((height, width, 3), 40, np.uint8)
    for x, y, side in squares:
        image[y : y + side, x : x + side] = 230
    return image


def encoded(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def calibrated_model(folder: Path) -> Path:
    """A copy of the committed tiny model (tests/fixtures/model-before-wings) in ``folder``, with
    a Haar detector framing in its crop policy, as `facekeys predict --detect haar` needs."""
    from facekeys.inference.detectors import DetectorFraming, DetectorSettings

    model = folder / "model"
    shutil.copytree(REPO / "tests" / "fixtures" / "model-before-wings", model)
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    framing = DetectorFraming(DetectorSettings(), 0.0, 0.05, 2.3, 50, 50, 0.3)
    card["crop_policy"]["detector"] = framing.to_dict()
    (model / "model.json").write_text(json.dumps(card), encoding="utf-8")
    return model


@pytest.fixture
def predictor() -> SquareFaces:
    return SquareFaces()


@pytest.fixture
def client(predictor: SquareFaces) -> TestClient:
    app = create_app(predictor, {"dot": dot_between_the_eyes}, LIMITS, model_label="double")
    return TestClient(app)


def post_image(client: TestClient, data: bytes, path: str = "/v1/keypoints", **form):
    return client.post(path, files={"image": ("photo.jpg", data, "image/jpeg")}, data=form)


def assert_error(response, status: int, *words: str) -> str:
    """The response is ``{"error": one line}`` with ``status``; returns the line."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"]
    return body["error"]


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_a_photo_gives_each_face_with_its_named_keypoints_in_image_pixels(client, ext):
    response = post_image(client, encoded(photo(), ext))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {"width": 300, "height": 200}
    assert body["model"] == {"name": "double", "format": "youtube68", "keypoints": 68,
                             "refinement": False, "label_pixel_offset": 1.0}  # fmt: skip
    assert "(0.5, 0.5)" in body["coordinates"]
    assert len(body["faces"]) == 2
    for face, (x, y, side) in zip(body["faces"], sorted(SQUARES, key=lambda s: -s[2]), strict=True):
        box = face["box"]
        # JPEG blurs the squares' edges by a pixel at most.
        assert [box["x"], box["y"], box["width"], box["height"]] == pytest.approx(
            [x, y, side, side], abs=1 if ext == ".jpg" else 0
        )
        assert [p["name"] for p in face["keypoints"]] == [f"p{k}" for k in range(68)]
        # The double's points have pixel centres on integers; the JSON's top-left pixel centre
        # is (0.5, 0.5).
        expected = SquareFaces.points(tuple(box.values())) + 0.5
        got = np.array([[p["x"], p["y"]] for p in face["keypoints"]])
        assert np.allclose(got, expected, atol=0.011)


def test_a_photo_without_faces_is_an_empty_list(client):
    response = post_image(client, encoded(photo(squares=[])))

    assert response.status_code == 200
    assert response.json()["faces"] == []


def test_the_filter_puts_the_overlay_on_every_face_and_nowhere_else(client):
    original = photo()

    response = post_image(client, encoded(original), "/v1/filter", overlay="dot")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-faces"] == "2"
    assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
    out = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert out.shape == original.shape
    changed = np.any(out != original, axis=2)
    for x, y, side in SQUARES:
        centre_x, centre_y = round(x + side / 2), round(y + 0.4 * side)
        assert tuple(out[centre_y, centre_x]) == RED
        changed[centre_y - 7 : centre_y + 8, centre_x - 7 : centre_x + 8] = False
    assert not changed.any(), "pixels changed away from the faces"


def test_a_gray_photo_is_filtered_in_colour(client):
    gray = cv2.cvtColor(photo(), cv2.COLOR_BGR2GRAY)

    response = post_image(client, encoded(gray), "/v1/filter", overlay="dot")

    out = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert out.shape == (200, 300, 3)
    assert tuple(out[round(70 + 0.4 * 90), 225]) == RED


def test_an_unknown_overlay_is_a_400_naming_the_choices(client, predictor):
    response = post_image(client, encoded(photo()), "/v1/filter", overlay="../../etc/passwd")

    assert_error(response, 400, "unknown overlay", "choose one of: dot")
    assert predictor.calls == 0


def test_too_many_bytes_are_refused_with_413_before_the_model_runs(client, predictor):
    # Declared too large: refused from Content-Length, before the body is read.
    big = b"\xff\xd8\xff" + bytes(LIMITS.max_bytes + FORM_OVERHEAD_BYTES)
    assert_error(post_image(client, big), 413, str(LIMITS.max_bytes))
    # A photo over the cap inside a body the form overhead still allows.
    over = encoded(photo()) + bytes(LIMITS.max_bytes)
    assert_error(post_image(client, over), 413, f"over the cap of {LIMITS.max_bytes} bytes")

    # No Content-Length (chunked): counted while it arrives.
    def chunks():
        for _ in range(10):
            yield bytes(LIMITS.max_bytes // 4)

    response = client.post(
        "/v1/keypoints",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, str(LIMITS.max_bytes))
    assert predictor.calls == 0


def test_too_many_pixels_are_refused_with_413_from_the_header(client, predictor):
    # A flat 1100x1000 PNG is a few kilobytes but 1.1 megapixels, over the cap of 1.
    data = encoded(np.zeros((1000, 1100), np.uint8))
    assert len(data) < LIMITS.max_bytes

    assert_error(post_image(client, data), 413, "1100x1000", "1000000 px")
    assert predictor.calls == 0


@pytest.mark.parametrize(
    "data",
    [b"GIF89a" + bytes(40), b"%PDF-1.7\n", b"a photo, honestly"],
    ids=["gif", "pdf", "text"],
)
def test_content_that_is_not_a_supported_image_is_415_whatever_its_name(client, data):
    # Sent as photo.jpg with type image/jpeg: neither is believed.
    assert_error(post_image(client, data), 415, "none of the accepted formats")


def test_empty_and_corrupt_photos_are_400(client, predictor):
    assert_error(post_image(client, b""), 400, "zero bytes")
    png = encoded(photo())
    assert_error(post_image(client, png[:60]), 400, "does not decode")
    assert predictor.calls == 0


def test_missing_fields_are_422_in_one_line(client):
    assert_error(client.post("/v1/keypoints"), 422, "missing form field 'image'")
    assert_error(client.post("/v1/keypoints", json={"image": "x"}), 422, "'image'")
    no_overlay = post_image(client, encoded(photo()), "/v1/filter")
    assert_error(no_overlay, 422, "missing form field 'overlay'")


def test_unknown_routes_and_methods_are_one_line_json(client):
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get("/v1/keypoints"), 405)
    assert_error(client.get("/docs"), 404)


def test_a_failing_overlay_is_a_500_in_one_line_and_one_log_line(predictor, capsys):
    def broken(image: np.ndarray, points: np.ndarray) -> np.ndarray:
        raise ValueError("overlay bug\nsecond line")

    client = TestClient(create_app(predictor, {"broken": broken}, LIMITS))

    response = post_image(client, encoded(photo()), "/v1/filter", overlay="broken")

    assert_error(response, 500, "internal error")
    assert capsys.readouterr().err == (
        "facekeys serve: internal error on /v1/filter: ValueError: overlay bug second line\n"
    )


@pytest.mark.parametrize(
    ("declared", "status", "error"),
    [
        (b"12abc", 400, "Content-Length is not a number"),
        (
            str(LIMITS.max_bytes + FORM_OVERHEAD_BYTES + 1).encode(),
            413,
            f"the request is larger than a photo of {LIMITS.max_bytes} bytes allows",
        ),
    ],
)
def test_a_bad_content_length_is_refused_before_the_body_is_read(client, declared, status, error):
    """Sent straight to the ASGI app, whose receive must not be called: HTTP clients neither
    send such headers nor let a test see whether the body was read."""
    sent = []

    async def receive():
        raise AssertionError("the body was read")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/keypoints", "headers": [
        (b"content-length", declared)], "query_string": b"", "root_path": ""}  # fmt: skip
    asyncio.run(client.app(scope, receive, send))

    assert sent[0]["status"] == status
    assert json.loads(sent[1]["body"]) == {"error": error}


def test_samples_are_served_by_their_listed_name_only(predictor, tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "face.png").write_bytes(encoded(photo()))
    (folder / "notes.txt").write_text("not offered")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "huge.jpg").write_bytes(bytes(LIMITS.max_bytes + 1))
    (tmp_path / "secret.png").write_bytes(b"private")
    samples = list_samples(folder, LIMITS)
    assert list(samples) == ["face.png"]
    client = TestClient(create_app(predictor, {}, LIMITS, samples=samples))

    response = client.get("/samples/face.png")
    assert response.status_code == 200
    assert response.content == (folder / "face.png").read_bytes()
    for name in ("notes.txt", "..%2Fsecret.png", "%2E%2E%2Fsecret.png", "huge.jpg"):
        assert_error(client.get(f"/samples/{name}"), 404)
    page = client.get("/").text
    assert '<a href="?demo=face.png">face.png</a>' in page


def test_the_page_offers_the_overlays_escaped_and_posts_to_the_api(predictor):
    overlays = {"dot": dot_between_the_eyes, "<b>bold</b>": dot_between_the_eyes}
    app = create_app(predictor, overlays, LIMITS, model_label="models:/x@champion")

    page = TestClient(app).get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    assert '<option value="dot">dot</option>' in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "<b>bold</b>" not in text
    assert "models:/x@champion" in text and "0.2 MB" in text and "1 megapixels" in text
    assert 'fetch(path, {method: "POST", body})' in text
    assert '"/v1/keypoints"' in text and '"/v1/filter"' in text
    assert "{{" not in text


def test_the_real_predictor_fits_the_app(tmp_path):
    """The committed tiny model with a detector calibration: a photo without a face answers an
    empty list with the model's own description."""
    from facekeys.inference.predictor import KeypointPredictor

    model = calibrated_model(tmp_path)
    client = TestClient(create_app(KeypointPredictor.from_dir(model), {}, LIMITS))

    response = post_image(client, encoded(np.full((120, 160), 128, np.uint8)))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["faces"] == []
    assert body["model"] == {"name": "", "format": "youtube68", "keypoints": 68,
                             "refinement": False, "label_pixel_offset": 0.5}  # fmt: skip


def test_the_page_is_package_data():
    """The page ships with the package (pyproject's package-data), not only in the checkout."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "*.html" in config["tool"]["setuptools"]["package-data"]["facekeys.wild"]
    assert (REPO / "facekeys" / "wild" / "web_page.html").is_file()
