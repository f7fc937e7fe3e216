"""Plain-text tables for the command line (`eca runs`, `eca claims`, `eca models`, `eca profile`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Collection[int] = ()) -> str:
    """Columns padded to their widest cell, a dashed rule under the header; None prints as an empty cell.

    `right` names the columns (by index) aligned to the right, e.g. numbers.
    """
    cells = [[str(h) for h in headers]]
    cells += [["" if value is None else str(value) for value in row] for row in rows]
    for number, row in enumerate(cells[1:], start=1):
        if len(row) != len(headers):
            raise ValueError(f"row {number} has {len(row)} cells for {len(headers)} columns")
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "  ".join(padded).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *(line(row) for row in cells[1:])])
