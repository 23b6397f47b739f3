"""Face filter geometry: an overlay's anchors land on the face points, turned with the eyes,
scaled with the span, clipped at the border, on every face; transparent pixels change nothing."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest

from facekeys.data.keypoint_formats import KAGGLE15, YOUTUBE68
from facekeys.errors import FacekeysError
from facekeys.wild.filters import (
    LAYOUTS,
    apply_overlay,
    layout_for,
    placeable_faces,
    target_points,
)
from facekeys.wild.overlays import Overlay

# A frontal face in eye-distance units: eye centres at x -1 and +1, the subject's right (the
# image's left) first. Keys are the parts of the layouts.
CANONICAL = {
    "right_eye": (-1.0, 0.0),
    "left_eye": (1.0, 0.0),
    "right_brow": (-1.6, -0.6),
    "left_brow": (1.6, -0.6),
    "mouth_right": (-0.8, 1.8),
    "mouth_left": (0.8, 1.8),
    "nose": (0.0, 1.2),
    "upper_lip": (0.0, 1.6),
}


def place(xy, centre, scale, degrees):
    """Canonical face coordinates -> frame pixels (scaled, turned, moved)."""
    t = math.radians(degrees)
    rotation = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return np.asarray(xy, float) @ rotation.T * scale + centre


def face68(centre=(100.0, 100.0), scale=40.0, degrees=0.0):
    """68 keypoints whose eye contours average to the canonical eye centres."""
    pts = np.zeros((68, 2))
    pts[:17] = np.column_stack([np.linspace(-2, 2, 17), np.full(17, 1.0)])  # jaw: unused
    ring = 0.3 * np.column_stack(
        [np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)]
    )
    pts[36:42] = ring + CANONICAL["right_eye"]
    pts[42:48] = ring + CANONICAL["left_eye"]
    for part, indices in LAYOUTS["youtube68"].parts.items():
        if len(indices) == 1:
            pts[indices[0]] = CANONICAL[part]
    return place(pts, centre, scale, degrees)


def face15(centre=(100.0, 100.0), scale=40.0, degrees=0.0):
    pts = np.zeros((15, 2))
    for part, (index,) in LAYOUTS["kaggle15"].parts.items():
        pts[index] = CANONICAL[part]
    return place(pts, centre, scale, degrees)


def marker_overlay(width=61, height=31, anchors=((10, 15), (50, 15)), radius=2, target="eyes"):
    """Transparent (white behind alpha 0, to catch colour bleeding from invisible pixels),
    with an opaque red square on the first anchor and a blue one on the second."""
    bgra = np.zeros((height, width, 4), np.uint8)
    bgra[..., :3] = 255
    (x1, y1), (x2, y2) = anchors
    bgra[y1 - radius : y1 + radius + 1, x1 - radius : x1 + radius + 1] = (0, 0, 255, 255)
    bgra[y2 - radius : y2 + radius + 1, x2 - radius : x2 + radius + 1] = (255, 0, 0, 255)
    return Overlay("markers", bgra, np.array(anchors, float), target)


def gray_frame(width=200, height=200):
    return np.full((height, width, 3), 100, np.uint8)


def red_mask(frame):
    b, g, r = (frame[..., k].astype(int) for k in range(3))
    return (r > 160) & (g < 80) & (b < 80)


def blue_mask(frame):
    b, g, r = (frame[..., k].astype(int) for k in range(3))
    return (b > 160) & (g < 80) & (r < 80)


def centroid(mask):
    ys, xs = np.nonzero(mask)
    assert len(xs), "the marker is not in the frame"
    return np.array([xs.mean(), ys.mean()])


def test_anchors_land_on_the_eyes_and_the_overlay_turns_with_them():
    face = face68(degrees=20.0)
    out = apply_overlay(gray_frame(), face[None], marker_overlay(), LAYOUTS["youtube68"])
    right_eye, left_eye = face[36:42].mean(axis=0), face[42:48].mean(axis=0)
    red, blue = centroid(red_mask(out)), centroid(blue_mask(out))
    assert np.allclose(red, right_eye, atol=0.75) and np.allclose(blue, left_eye, atol=0.75)
    angle = math.degrees(math.atan2(*(blue - red)[::-1]))
    assert angle == pytest.approx(20.0, abs=1.0)


def test_the_overlay_scales_with_the_span():
    overlay = marker_overlay()
    sizes = []
    for scale in (20.0, 40.0):
        out = apply_overlay(gray_frame(), face68(scale=scale)[None], overlay, LAYOUTS["youtube68"])
        red, blue = centroid(red_mask(out)), centroid(blue_mask(out))
        assert np.linalg.norm(blue - red) == pytest.approx(2 * scale, abs=1.0)
        sizes.append(red_mask(out).sum())
    # A 5x5 marker, 40 anchor pixels apart: 1x then 2x; its area grows 4 times.
    assert sizes[1] / sizes[0] == pytest.approx(4.0, rel=0.2)


def test_a_large_overlay_shrunk_before_the_warp_still_lands_on_the_eyes():
    """A 2000-pixel overlay on a face 48 pixels between the eyes goes through a shrunk copy:
    its anchors still land on the eyes to a tenth of a pixel (the copy's pixel grid is mapped
    back exactly; a copy taken as if its pixels were at the same places is half a pixel off)."""
    overlay = marker_overlay(2001, 601, ((400, 300), (1600, 300)), radius=100)
    face = face68(centre=(90.0, 110.0), scale=24.0, degrees=-10.0)
    out = apply_overlay(gray_frame(), face[None], overlay, LAYOUTS["youtube68"])
    assert np.allclose(centroid(red_mask(out)), face[36:42].mean(axis=0), atol=0.15)
    assert np.allclose(centroid(blue_mask(out)), face[42:48].mean(axis=0), atol=0.15)


def test_every_face_gets_the_overlay():
    faces = np.stack(
        [face68((50, 60), 15, 0), face68((150, 70), 25, -15), face68((90, 160), 20, 30)]
    )
    out = apply_overlay(gray_frame(), faces, marker_overlay(), LAYOUTS["youtube68"])
    count, labels = cv2.connectedComponents(red_mask(out).astype(np.uint8))
    assert count - 1 == 3
    found = sorted(tuple(centroid(labels == k).round()) for k in range(1, count))
    expected = sorted(tuple(f[36:42].mean(axis=0).round()) for f in faces)
    assert np.allclose(found, expected, atol=1.0)


def test_transparent_pixels_leave_the_frame_unchanged():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (200, 200, 3), np.uint8)
    face = face68(degrees=12.0)
    invisible = marker_overlay()
    invisible.bgra[..., 3] = 0
    assert np.array_equal(apply_overlay(frame, face[None], invisible, LAYOUTS["youtube68"]), frame)

    out = apply_overlay(frame, face[None], marker_overlay(), LAYOUTS["youtube68"])
    changed = np.any(out != frame, axis=2)
    ys, xs = np.nonzero(changed)
    eyes = np.stack([face[36:42].mean(axis=0), face[42:48].mean(axis=0)])
    # Only the markers (5x5 overlay pixels, 2 frame pixels each, blended edges) change pixels.
    nearest = np.min(np.linalg.norm(np.column_stack([xs, ys])[:, None] - eyes, axis=2), axis=1)
    assert changed.any() and nearest.max() <= 2.5 * 2 * math.sqrt(2) + 1.5
    # Red and blue have no green: a blend can only lower it (no white bleeding from the
    # invisible pixels into the markers' edges).
    assert (out[..., 1] <= frame[..., 1]).all()


def test_a_face_at_the_border_gets_the_part_inside_and_nothing_else_changes():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (120, 160, 3), np.uint8)
    opaque = marker_overlay()
    opaque.bgra[...] = (0, 200, 0, 255)  # all green, all opaque: its footprint is a rectangle
    # Eyes 80 px apart, the left one at x -10: the overlay is twice its size, from x -41.
    face = face68(centre=(30.0, 60.0), scale=40.0)
    out = apply_overlay(frame, face[None], opaque, LAYOUTS["youtube68"])
    x0, x1 = -10 - 10.5 * 2, -10 + (61 - 10.5) * 2  # the footprint's edges (pixel edges)
    y0, y1 = 60 - 15.5 * 2, 60 + 15.5 * 2
    assert x0 < 0 < x1, "the overlay reaches past the frame's left border"
    inside = (slice(int(y0) + 1, int(y1) - 1), slice(0, int(x1) - 1))
    assert (out[inside] == (0, 200, 0)).all()
    outside = np.ones(frame.shape[:2], bool)
    outside[max(int(y0) - 1, 0) : int(y1) + 2, : int(x1) + 2] = False
    assert np.array_equal(out[outside], frame[outside])

    gone = face68(centre=(-300.0, 60.0), scale=40.0)  # wholly outside: no error, no change
    assert np.array_equal(apply_overlay(frame, gone[None], opaque, LAYOUTS["youtube68"]), frame)


def test_the_15_point_layout_places_the_same_overlay():
    face = face15(centre=(110.0, 90.0), scale=30.0, degrees=-20.0)
    layout = layout_for(KAGGLE15.point_names)
    assert layout is LAYOUTS["kaggle15"]
    out = apply_overlay(gray_frame(), face[None], marker_overlay(), layout)
    right_eye = face[KAGGLE15.point_names.index("right_eye_center")]
    left_eye = face[KAGGLE15.point_names.index("left_eye_center")]
    assert right_eye[0] < left_eye[0], "the subject's right eye lies on the image's left"
    assert np.allclose(centroid(red_mask(out)), right_eye, atol=0.75)
    assert np.allclose(centroid(blue_mask(out)), left_eye, atol=0.75)


def test_layouts_are_recognised_by_their_names():
    assert layout_for(YOUTUBE68.point_names) is LAYOUTS["youtube68"]
    with pytest.raises(FacekeysError, match="neither the 68-point"):
        layout_for(["a", "b", "c"])


def test_faces_with_nan_points_are_skipped_without_warnings():
    good, lost = face68((60, 100), 20), np.full((68, 2), np.nan)
    half = face68((150, 100), 20)
    half[42:48] = np.nan  # one eye not predicted
    faces = np.stack([good, lost, half])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = apply_overlay(gray_frame(), faces, marker_overlay(), LAYOUTS["youtube68"])
    assert cv2.connectedComponents(red_mask(out).astype(np.uint8))[0] - 1 == 1
    assert np.allclose(centroid(red_mask(out)), good[36:42].mean(axis=0), atol=0.75)
    assert placeable_faces(faces, marker_overlay(), LAYOUTS["youtube68"]) == 1
    empty = np.zeros((0, 68, 2))
    nothing = apply_overlay(gray_frame(), empty, marker_overlay(), LAYOUTS["youtube68"])
    assert np.array_equal(nothing, gray_frame())


@pytest.mark.parametrize("layout, make", [("youtube68", face68), ("kaggle15", face15)])
def test_mouth_brow_and_moustache_targets_turn_with_the_eyes_not_the_mouth(layout, make):
    face = make(centre=(100.0, 100.0), scale=20.0, degrees=20.0)
    parts = LAYOUTS[layout]
    corner_r, corner_l = parts.point(face, "mouth_right"), parts.point(face, "mouth_left")
    face[list(parts.parts["mouth_left"])] += (0.0, -8.0)  # a smile on one side only
    corner_l = parts.point(face, "mouth_left")
    for target, centre in (
        ("mouth", (corner_r + corner_l) / 2),
        ("upper_lip", (parts.point(face, "nose") + parts.point(face, "upper_lip")) / 2),
        ("brows", (parts.point(face, "right_brow") + parts.point(face, "left_brow")) / 2),
    ):
        first, second = target_points(face, parts, target)
        angle = math.degrees(math.atan2(*(second - first)[::-1]))
        assert angle == pytest.approx(20.0, abs=1e-6), target
        assert np.allclose((first + second) / 2, centre), target
    span = np.linalg.norm(corner_l - corner_r)
    first, second = target_points(face, parts, "upper_lip")
    assert np.linalg.norm(second - first) == pytest.approx(span)
