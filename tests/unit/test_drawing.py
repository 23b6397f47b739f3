"""Drawn predictions land where the points and boxes are, on any kind of decoded picture."""

from __future__ import annotations

import numpy as np

from facekeys.inference.drawing import BOX_COLOUR, POINT_COLOUR, draw_faces


def test_points_boxes_and_index_are_drawn_where_they_are():
    image = np.full((120, 160), 100, np.uint16) * 257  # 16-bit gray, as a PNG may decode
    points = np.array([[[30.0, 40.0], [60.0, 41.0], [np.nan, np.nan]]])
    drawn = draw_faces(image, [(20.0, 30.0, 50.0, 40.0)], points)
    assert drawn.shape == (120, 160, 3) and drawn.dtype == np.uint8
    assert tuple(drawn[40, 30]) == POINT_COLOUR and tuple(drawn[41, 60]) == POINT_COLOUR
    assert tuple(drawn[50, 20]) == BOX_COLOUR  # the box's left edge
    assert tuple(drawn[100, 140]) == (100, 100, 100)  # far from every face: untouched
    assert (drawn[5:27, 18:40] != 100).any()  # the face index above the box


def test_faces_without_a_box_get_their_points_only_and_the_input_is_not_changed():
    image = np.full((50, 50, 4), 200, np.uint8)
    before = image.copy()
    drawn = draw_faces(image, [None], np.array([[[10.0, 30.0], [20.0, 30.0]]]))
    assert tuple(drawn[30, 10]) == POINT_COLOUR
    assert not (drawn == BOX_COLOUR).all(axis=2).any()
    np.testing.assert_array_equal(image, before)


def test_drawing_paths_stay_in_their_folder_and_keep_names_apart(tmp_path):
    from facekeys.inference.drawing import drawing_path

    assert drawing_path(tmp_path, "a/b.jpg") == tmp_path / "a__b.jpg.png"
    assert drawing_path(tmp_path, "../../etc/x.png") == tmp_path / "etc__x.png.png"
    assert drawing_path(tmp_path, "/abs/.hidden.jpg") == tmp_path / "abs__.hidden.jpg.png"
    assert drawing_path(tmp_path, "b.jpg") != drawing_path(tmp_path, "b.png")
