"""What ``facekeys predict`` reads: the images of the inputs given and the names they get."""

from __future__ import annotations

import os

import pytest

from facekeys.errors import FacekeysError
from facekeys.inference.predict_files import list_inputs


def _images(folder, *names):
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"not read here")
    return folder


def test_a_folder_alone_shows_names_and_several_inputs_stay_apart(tmp_path):
    a = _images(tmp_path / "a", "face.png", "notes.txt")
    b = _images(tmp_path / "b", "face.png")
    assert [i.shown for i in list_inputs([str(a)])] == ["face.png"]
    both = list_inputs([str(a), str(b)])
    assert [i.shown for i in both] == [f"{a}/face.png", f"{b}/face.png"]
    assert len({(i.folder, i.name) for i in both}) == 2


def test_one_image_given_twice_is_refused_in_one_line(tmp_path):
    a = _images(tmp_path / "a", "face.png")
    os.symlink(a / "face.png", tmp_path / "link.png")
    face, link = str(a / "face.png"), str(tmp_path / "link.png")
    with pytest.raises(FacekeysError, match=rf"^{face}: given twice \(also as {face}\)$"):
        list_inputs([str(a), face])
    with pytest.raises(FacekeysError, match=rf"^{link}: given twice \(also as {face}\)$"):
        list_inputs([face, link])
    with pytest.raises(FacekeysError, match="nothing: no such file or folder"):
        list_inputs([str(tmp_path / "nothing")])
