"""The Claims page's claims table with a Seed spread column.

Nothing here imports Streamlit; the spread itself, and which runs share a recipe, are decided in
`ecaplatform.store.spread`, the one place that says so, and are on the board exactly as `eca claims` shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from ecaplatform.store.board import BoardRow
from ecaplatform.store.spread import SPREAD_RULE, SeedSpread, spread_label
from leaderboard import render

SPREAD_HEADER = "Seed spread"
SPREAD_CAPTION = (
    f"{SPREAD_RULE} Shown as: best of n seeds: mean ± sd (runs, not seeds, where a seed repeats or was not recorded)."
)


def spread_cell(spread: SeedSpread | None) -> str:
    """`best of 3 seeds: 77.42 ± 0.16`, with the range and the runs on hover; a dash without evidence."""
    if spread is None:
        return "&ndash;"
    runs = ", ".join(spread.run_ids)
    title = f"{spread.n} qualifying run(s) of one recipe, min {spread.min:.2f}, max {spread.max:.2f}: {runs}"
    # The widest cell may wrap, once: "best of 3 seeds:" above "77.42 ± 0.16" (the table's cells never wrap).
    head, _, numbers = spread_label(spread).partition(": ")
    pieces = [f"{head}:", numbers] if numbers else [head]
    text = " ".join(f'<span style="white-space: nowrap">{escape(piece)}</span>' for piece in pieces)
    return f'<span style="white-space: normal" title="{escape(title, quote=True)}">{text}</span>'


def claims_table_html(rows: Sequence[BoardRow]) -> str:
    """The claims table (cells from render) with a Seed spread column after Verified; a claim with a result that
    does not qualify gets a note row under it saying why (render.claim_note)."""
    headers = list(render.CLAIM_HEADERS)
    at = headers.index("Verified") + 1
    headers.insert(at, SPREAD_HEADER)
    numeric = {headers.index(h) for h in ("Claimed", "Verified", SPREAD_HEADER, "Δ", "Samples evaluated")}
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = render.claim_cells(row)
        cells.insert(at, spread_cell(row.evidence.spread if row.evidence else None))
        html = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(cells))
        note = render.claim_note(row)
        body.append(f'<tr class="has-note">{html}</tr>' if note else f"<tr>{html}</tr>")
        if note:
            body.append(f'<tr class="note-row"><td colspan="{len(headers)}"><div class="note">{note}</div></td></tr>')
    return f'<table class="eca"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
