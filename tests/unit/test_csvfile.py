"""File-level failures: the whole file is unusable, with one line naming file and problem."""

from __future__ import annotations

import pytest

from facekeys.data.csv_reading import read_records
from facekeys.errors import DataUnusableError


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"\n\n  \n", "file is empty"),
        (b",0,1\n", "has a header but no data rows"),
        (b",0,1\r\n\r\n", "has a header but no data rows"),
        (bytes(range(256)) * 4, "binary content, not a CSV"),
        (b"\x89PNG\r\n\x1a\n" + b"\xff" * 50, "not UTF-8 text"),
        (b'name,x\n"a.png,1\n', "malformed CSV"),
    ],
)
def test_unusable_files(tmp_path, content, message):
    path = tmp_path / "k.csv"
    path.write_bytes(content)
    with pytest.raises(DataUnusableError, match=message) as info:
        read_records(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataUnusableError, match="does not exist"):
        read_records(tmp_path / "nope.csv")
    with pytest.raises(DataUnusableError, match="is a folder"):
        read_records(tmp_path)


def test_bom_crlf_blank_lines_and_line_numbers(tmp_path):
    path = tmp_path / "k.csv"
    path.write_bytes('\ufeffname,x\r\na.png,1\r\n\r\n"b\nc.png",2\r\nd.png,3\r\n'.encode())
    records = read_records(path)
    assert records.header == ["name", "x"]
    assert records.rows == [["a.png", "1"], ["b\nc.png", "2"], ["d.png", "3"]]
    assert records.lines == [2, 4, 6]
    assert records.blank_lines == 1
