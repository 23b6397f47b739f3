"""What validation writes about the rows: each row's verdict (quarantined with reasons, kept
with flags, or valid), the ``valid.csv``, ``quarantine.csv`` and ``flagged.csv`` files, and the
summary lines shown to the user. (``report.json`` is assembled in ``facekeys.data.validate``, which
holds the settings it records.)"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facekeys.data.csv_reading import CsvRecords
from facekeys.data.validation_rules import Rule


@dataclass
class RowVerdicts:
    """Which rows the rules quarantine or flag, and why.

    Attributes:
        reasons: Per row, the quarantine reasons (``code: detail``); empty for a kept row.
        flags: Per row, the flags (``code: detail``).
        quarantined: Rows (0-based) with a quarantine reason.
        flagged: Kept rows (0-based) with a flag.
        reason_counts: Quarantined rows per reason code.
        flag_counts: Flagged rows per flag code.
    """

    reasons: list[list[str]]
    flags: list[list[str]]
    quarantined: list[int]
    flagged: list[int]
    reason_counts: Counter[str]
    flag_counts: Counter[str]


def judge_rows(
    outcome: list[tuple[Rule, list[int], bool]], image_status: list[str | None], n: int
) -> RowVerdicts:
    """Turns each rule's unexpected rows into per-row reasons and flags.

    Args:
        outcome: Per rule: the rule, its unexpected rows (0-based) and its success.
        image_status: Per row, the image status (the reason code of ``image_invalid``).
        n: Rows in the file.
    """
    reasons: list[list[str]] = [[] for _ in range(n)]
    flags: list[list[str]] = [[] for _ in range(n)]
    for rule, unexpected, _ in outcome:
        for i in unexpected:
            code = image_status[i] if rule.code == "image_invalid" else rule.code
            text = f"{code}: {rule.describe(i)}" if rule.describe else code
            (reasons if rule.kind == "quarantine" else flags)[i].append(text)
    quarantined = [i for i in range(n) if reasons[i]]
    flagged = [i for i in range(n) if flags[i] and not reasons[i]]
    reason_counts = Counter(r.split(":", 1)[0] for i in quarantined for r in reasons[i])
    flag_counts = Counter(f.split(":", 1)[0] for i in flagged for f in flags[i])
    return RowVerdicts(reasons, flags, quarantined, flagged, reason_counts, flag_counts)


def write_row_files(
    folder: Path, records: CsvRecords, verdicts: RowVerdicts, names: list[str | None]
) -> None:
    """Writes ``valid.csv``, ``quarantine.csv`` and ``flagged.csv`` into ``folder``.

    ``valid.csv`` holds the passing rows as they were; ``quarantine.csv`` each quarantined row
    fitted to the header, then ``extra_fields``, ``row`` (1-based) and ``reasons``;
    ``flagged.csv`` the kept rows' ``row``, ``name`` and ``flags``.
    """
    rows, reasons, flags = records.rows, verdicts.reasons, verdicts.flags
    expected_fields = len(records.header)
    _write_rows(
        folder / "valid.csv", records.header, (rows[i] for i in range(len(rows)) if not reasons[i])
    )
    _write_rows(
        folder / "quarantine.csv",
        [*records.header, "extra_fields", "row", "reasons"],
        (
            [
                *_fit(rows[i], expected_fields),
                ",".join(rows[i][expected_fields:]),
                str(i + 1),
                "; ".join(reasons[i]),
            ]
            for i in verdicts.quarantined
        ),
    )
    _write_rows(
        folder / "flagged.csv",
        ["row", "name", "flags"],
        ([str(i + 1), names[i] or "", "; ".join(flags[i])] for i in verdicts.flagged),
    )


def summary_lines(
    csv_path: str, records: CsvRecords, verdicts: RowVerdicts, out_dir: Path
) -> list[str]:
    """The lines shown to the user: the counts, then the first 10 quarantined rows."""
    n, quarantined, flagged = len(records.rows), verdicts.quarantined, verdicts.flagged
    lines = [
        f"{csv_path}: {n} rows: {n - len(quarantined)} valid, {len(quarantined)} quarantined"
        + (f" ({top_counts(verdicts.reason_counts)})" if quarantined else "")
        + f", {len(flagged)} kept with flags"
        + (f" ({top_counts(verdicts.flag_counts)})" if flagged else "")
    ]
    for i in quarantined[:10]:
        lines.append(f"{csv_path}: row {i + 1} (line {records.lines[i]}): {verdicts.reasons[i][0]}")
    if len(quarantined) > 10:
        lines.append(
            f"{csv_path}: ... {len(quarantined) - 10} more in {out_dir / 'quarantine.csv'}"
        )
    return lines


def top_counts(counts: Counter[str], k: int = 3) -> str:
    """The ``k`` most frequent codes with their counts, for a message."""
    return ", ".join(f"{code} {num}" for code, num in counts.most_common(k))


def _fit(fields: list[str], count: int) -> list[str]:
    """``fields`` cut or padded with blanks to ``count`` fields."""
    return (fields + [""] * count)[:count]


def _write_rows(path: Path, header: list[str], rows: Iterable[Any]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
