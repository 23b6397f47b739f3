"""Overlays: the built-in ones are read from the shared folder with anchors where they claim to
be; a user's PNG needs alpha and sound anchors; every refusal is one line naming the file or
option."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facekeys.errors import FacekeysError
from facekeys.wild.overlays import (
    BUILT_INS,
    OVERLAYS_DIR_VARIABLE,
    load_built_in,
    load_overlay,
    overlays_folder,
    parse_anchors,
)
from tests.conftest import SHARED_DATA

SAMPLE_IMAGES = SHARED_DATA / "sample-images"


@pytest.fixture
def sample_images() -> Path:
    if not all((SAMPLE_IMAGES / spec.file).is_file() for spec in BUILT_INS.values()):
        pytest.skip(f"the built-in overlays are not at {SAMPLE_IMAGES} (set FACEKEYS_SHARED_DATA)")
    return SAMPLE_IMAGES


def write_png(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def rgba(width=40, height=20) -> np.ndarray:
    image = np.zeros((height, width, 4), np.uint8)
    image[5:15, 5:35] = (0, 0, 255, 255)
    return image


def refusal(call, *args, **kwargs) -> str:
    with pytest.raises(FacekeysError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_built_ins_load_with_their_measured_size(sample_images):
    for name, spec in BUILT_INS.items():
        overlay = load_overlay(name, str(sample_images))
        height, width = overlay.bgra.shape[:2]
        assert (width, height) == spec.size and overlay.target == spec.target
        expected = np.array(spec.anchors).reshape(2, 2) * [width, height] - 0.5
        assert np.allclose(overlay.anchors, expected)


def test_sunglasses_anchors_are_the_lens_centres(sample_images):
    """Measured again: the deepest point of each half's opaque area (the lens, framed)."""
    overlay = load_overlay("sunglasses", str(sample_images))
    opaque = (overlay.bgra[..., 3] > 128).astype(np.uint8)
    height, width = opaque.shape
    for anchor, half in zip(overlay.anchors, (slice(0, width // 2), slice(width // 2, width)),
                            strict=True):  # fmt: skip
        one_side = np.zeros_like(opaque)
        one_side[:, half] = opaque[:, half]
        depth = cv2.distanceTransform(one_side, cv2.DIST_L2, 5)
        ys, xs = np.nonzero(depth >= 0.98 * depth.max())
        assert abs(anchor[0] - xs.mean()) < 0.01 * width
        assert abs(anchor[1] - ys.mean()) < 0.01 * height


def test_moustache_and_hat_anchors_sit_symmetrically_where_claimed(sample_images):
    moustache = load_overlay("moustache", str(sample_images))
    alpha = moustache.bgra[..., 3]
    xs = np.nonzero(alpha > 128)[1]
    assert abs(moustache.anchors[:, 0].mean() - xs.mean()) < 0.01 * alpha.shape[1]
    for x, y in moustache.anchors.round().astype(int):
        assert alpha[y, x] == 255, "the anchors lie on the moustache's arms"
    hat = load_overlay("straw_hat", str(sample_images))
    gray = cv2.cvtColor(hat.bgra[..., :3], cv2.COLOR_BGR2GRAY)
    band_ys, band_xs = np.nonzero((hat.bgra[..., 3] > 128) & (gray < 70))
    assert abs(hat.anchors[:, 0].mean() - band_xs.mean()) < 0.02 * gray.shape[1]
    assert (hat.anchors[:, 1] > np.percentile(band_ys, 99)).all(), "the brows are below the band"


def test_a_built_in_of_another_size_is_refused(tmp_path, monkeypatch):
    write_png(tmp_path / "sunglasses.png", rgba())
    monkeypatch.setenv(OVERLAYS_DIR_VARIABLE, str(tmp_path))
    assert overlays_folder(None) == tmp_path
    assert refusal(load_built_in, "sunglasses") == (
        f"{tmp_path / 'sunglasses.png'}: 40x20, but the anchors of --overlay sunglasses were "
        "measured on 3064x1123; give the file as --overlay FILE.png --anchors ..."
    )


def test_a_missing_overlays_folder_or_file_names_it_and_the_option(tmp_path, monkeypatch):
    monkeypatch.setenv(OVERLAYS_DIR_VARIABLE, str(tmp_path / "nowhere"))
    assert refusal(load_overlay, "moustache").startswith(
        f"{tmp_path / 'nowhere'}: no such folder ({OVERLAYS_DIR_VARIABLE}); "
    )
    assert refusal(load_overlay, "moustache", str(tmp_path / "gone")).startswith(
        f"{tmp_path / 'gone'}: no such folder (--overlays-dir); "
    )
    assert refusal(load_overlay, "straw_hat", str(tmp_path)) == (
        f"{tmp_path / 'straw_hat.png'}: no such file (--overlay straw_hat is read from "
        f"--overlays-dir or {OVERLAYS_DIR_VARIABLE})"
    )


def test_a_user_png_lands_its_anchors_on_the_target(tmp_path):
    path = write_png(tmp_path / "mine.png", rgba())
    overlay = load_overlay(str(path), anchors="5, 10,34.5,10", target="mouth")
    assert np.array_equal(overlay.anchors, [[5, 10], [34.5, 10]])
    assert overlay.target == "mouth" and overlay.bgra.shape == (20, 40, 4)
    assert load_overlay(str(path), anchors="5,10,34,10").target == "eyes"
    deep = write_png(tmp_path / "deep.png", rgba().astype(np.uint16) * 257)
    assert load_overlay(str(deep), anchors="5,10,34,10").bgra.dtype == np.uint8


def test_an_overlay_without_alpha_is_refused_in_one_line(tmp_path):
    for name, image in (("rgb.png", rgba()[..., :3]), ("gray.png", rgba()[..., 0])):
        path = write_png(tmp_path / name, image)
        assert refusal(load_overlay, str(path), anchors="5,10,34,10") == (
            f"{path}: the overlay has no alpha channel (an RGBA PNG is needed, transparent "
            "where the photo should show)"
        )
    clear = write_png(tmp_path / "clear.png", np.zeros((20, 40, 4), np.uint8))
    assert refusal(load_overlay, str(clear), anchors="5,10,34,10") == (
        f"{clear}: the overlay is transparent everywhere (alpha 0)"
    )
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n and nothing else")
    assert refusal(load_overlay, str(broken), anchors="5,10,34,10").startswith(f"{broken}: ")


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "1,2,3,nan", "", "1,2,3,4,5"])
def test_anchors_that_are_not_four_numbers_are_refused(text):
    assert refusal(parse_anchors, text) == (
        f"--anchors {text!r}: expected four numbers X1,Y1,X2,Y2 (overlay pixels)"
    )


def test_anchors_out_of_order_and_options_that_do_not_fit_are_refused(tmp_path):
    path = write_png(tmp_path / "mine.png", rgba())
    assert refusal(load_overlay, str(path), anchors="30,10,5,10") == (
        f"{path}: the second anchor (X2,Y2 of --anchors) must lie at least a pixel right of "
        "the first (got X1 30, X2 5)"
    )
    assert refusal(load_overlay, str(path)).startswith(
        f"--overlay {path}: a PNG of yours needs --anchors X1,Y1,X2,Y2"
    )
    assert refusal(load_overlay, "sunglasses", anchors="1,2,3,4").startswith(
        "--overlay sunglasses: a built-in overlay has its own anchors"
    )
    assert refusal(load_overlay, "monocle") == (
        "--overlay monocle: neither a built-in overlay (sunglasses, moustache, straw_hat) nor a "
        "file"
    )
