"""Reading keypoint CSVs defensively: every record is returned, none silently dropped."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field

from facekeys.errors import DataUnusableError

# Kaggle rows hold a 9216-value Image cell (~36 kB); leave generous room but keep a bound.
MAX_FIELD_CHARS = 4_000_000


@dataclass
class CsvRecords:
    """The records of a CSV file.

    Attributes:
        path: The file read.
        header: Header fields (a UTF-8 BOM removed).
        rows: Data records as lists of strings, in file order, with any field count.
        lines: For each record, the 1-based line of the file where it starts.
        blank_lines: Lines that held nothing at all; they are not records.
    """

    path: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    blank_lines: int = 0


def read_records(path: str | os.PathLike[str]) -> CsvRecords:
    """Reads a CSV file that must be UTF-8 text (optional BOM, LF or CRLF line endings).

    Raises:
        DataUnusableError: unreadable, empty, binary, not UTF-8, malformed quoting, or header only.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise DataUnusableError(f"{path}: file does not exist") from None
    except IsADirectoryError:
        raise DataUnusableError(f"{path}: is a folder, not a CSV file") from None
    except OSError as exc:
        raise DataUnusableError(f"{path}: cannot be read ({exc.strerror})") from None
    if not data.strip():
        raise DataUnusableError(f"{path}: file is empty")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataUnusableError(f"{path}: binary content, not a CSV (NUL byte at offset {nul})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataUnusableError(
            f"{path}: not UTF-8 text (invalid byte at offset {exc.start}); binary or wrong encoding"
        ) from None
    del data

    csv.field_size_limit(MAX_FIELD_CHARS)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records = CsvRecords(path=path, header=[])
    try:
        start_line = 1
        for fields in reader:
            if not fields:
                records.blank_lines += 1
            elif not records.header:
                records.header = [f.strip() for f in fields]
            else:
                records.rows.append(fields)
                records.lines.append(start_line)
            start_line = reader.line_num + 1
    except csv.Error as exc:
        raise DataUnusableError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
    if not records.header:
        raise DataUnusableError(f"{path}: file is empty")
    if not records.rows:
        raise DataUnusableError(f"{path}: has a header but no data rows")
    return records
