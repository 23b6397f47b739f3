"""The one least-squares similarity (YuNet's framing, face tracking, overlays) and the
box <-> ``FaceSquare`` conversions."""

from __future__ import annotations

import numpy as np
import pytest

from facekeys.data.crop_geometry import FaceSquare, face_square_matrix, square_crop_matrix
from facekeys.data.point_similarity import similarity_fit


def moved(points: np.ndarray, angle: float, scale: float, shift: tuple[float, float]):
    """``points`` scaled and turned by ``angle`` (image axes), then shifted."""
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    return points @ np.array([[cos, -sin], [sin, cos]]).T + np.array(shift)


def test_recovers_a_move_turn_and_zoom_and_measures_a_change_of_shape():
    rng = np.random.default_rng(0)
    shape = rng.normal(size=(68, 2)) * 30 + 100
    angle = np.deg2rad(25.0)
    target = moved(shape, angle, 1.3, (40.0, -12.0))
    fit = similarity_fit(shape, target)
    assert fit.scale == pytest.approx(1.3) and fit.angle == pytest.approx(angle)
    np.testing.assert_allclose(fit.apply(shape), target, atol=1e-9)
    np.testing.assert_allclose(np.c_[shape, np.ones(68)] @ fit.matrix.T, target, atol=1e-9)
    assert fit.relative_residual < 1e-9
    assert similarity_fit(shape, rng.uniform(0, 100, shape.shape)).relative_residual > 0.5


def test_two_points_map_exactly_without_shear_where_asked():
    rng = np.random.default_rng(2)
    source, target = rng.uniform(-50, 50, (2, 2)), rng.uniform(0, 300, (2, 2))
    assert similarity_fit(source, target) is None, "three points by default"
    matrix = similarity_fit(source, target, min_points=2).matrix
    np.testing.assert_allclose(np.c_[source, np.ones(2)] @ matrix.T, target, atol=1e-9)
    linear = matrix[:, :2]
    np.testing.assert_allclose(linear @ linear.T, np.eye(2) * np.linalg.det(linear), atol=1e-9)


def test_rows_not_finite_are_left_out_and_a_shape_without_extent_has_no_fit():
    rng = np.random.default_rng(3)
    shape = rng.normal(size=(5, 2)) * 10
    target = moved(shape, 0.3, 2.0, (5.0, 6.0))
    target[1] = np.nan
    shape[3, 0] = np.inf
    fit = similarity_fit(shape, target)
    assert fit.scale == pytest.approx(2.0) and fit.angle == pytest.approx(0.3)
    assert similarity_fit(np.ones((5, 2)), target) is None
    assert similarity_fit(shape[:1], target[:1], min_points=1) is None, "two points at least"


def test_a_box_and_its_face_square_crop_alike_and_convert_back():
    box = (10.3, 20.1, 50.0, 50.0)
    square = FaceSquare.from_box(box)
    assert (square.centre_x, square.centre_y) == pytest.approx((34.8, 44.6))
    np.testing.assert_allclose(
        face_square_matrix(square, 64, 0.1), square_crop_matrix(box, 64, 0.1), atol=1e-12
    )
    turned = FaceSquare.from_box(box, 0.4)
    assert turned.angle == 0.4 and turned.level_box == pytest.approx(box)
