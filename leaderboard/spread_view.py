"""The Claims page's seed spreads: read-only queries and the claims table with a Seed spread column.

Nothing here imports Streamlit (the page caches); the spread itself, and which runs share a recipe, are decided in
`ecaplatform.store.spread`, the one place that says so, exactly as `eca claims` shows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ecaplatform.store.schema import Claim
from ecaplatform.store.spread import SPREAD_RULE, SeedSpread, claim_evidence, spread_label
from leaderboard import render
from leaderboard.queries import STORE_OK, ClaimRow, ClaimsBoard, yaml_claims

SPREAD_HEADER = "Seed spread"
SPREAD_CAPTION = (
    f"{SPREAD_RULE} Shown as: best of n seeds: mean ± sd (runs, not seeds, where a seed repeats or was not recorded)."
)


def claim_spreads(engine: Engine | None, board: ClaimsBoard) -> dict[str, SeedSpread]:
    """The seed spread of each claim on `board` that has an evidence run, by claim id."""
    with_evidence = [row for row in board.rows if row.evidence_run_id]
    if engine is None or board.store_state != STORE_OK or not with_evidence:
        return {}
    with Session(engine) as session:
        ids = [row.claim_id for row in with_evidence]
        claims = {claim.id: claim for claim in session.scalars(select(Claim).where(Claim.id.in_(ids)))}
        if len(claims) < len(ids):  # the board judged the YAML's claims (the store has none loaded yet)
            claims = {claim.id: claim for claim in yaml_claims()[0]} | claims
        pairs = [(claims[row.claim_id], row.evidence_run_id) for row in with_evidence if row.claim_id in claims]
        evidence = claim_evidence(session, pairs)
    return {claim_id: found.spread for claim_id, found in evidence.items() if found.spread is not None}


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


def claims_table_html(rows: Sequence[ClaimRow], spreads: Mapping[str, SeedSpread]) -> str:
    """render.claims_table_html with a Seed spread column after Verified (cells and notes from render)."""
    headers = list(render.CLAIM_HEADERS)
    at = headers.index("Verified") + 1
    headers.insert(at, SPREAD_HEADER)
    numeric = {headers.index(h) for h in ("Claimed", "Verified", SPREAD_HEADER, "Δ", "Samples evaluated")}
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = render.claim_cells(row)
        cells.insert(at, spread_cell(spreads.get(row.claim_id)))
        html = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(cells))
        note = render.claim_note(row)
        body.append(f'<tr class="has-note">{html}</tr>' if note else f"<tr>{html}</tr>")
        if note:
            body.append(f'<tr class="note-row"><td colspan="{len(headers)}"><div class="note">{note}</div></td></tr>')
    return f'<table class="eca"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
