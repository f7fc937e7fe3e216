"""Reproduce page (`reproduce?claim=<id>`): one claim's verdict and evidence, the exact commands that verify it (the
released checkpoint) or train it from scratch, the rule a run must meet, and the runs that tried."""

from __future__ import annotations

from html import escape

import streamlit as st

from ecaplatform.store.board import dataset_name, decimals, fmt_value, metric_name
from ecaplatform.store.reproduce import reproduce
from leaderboard import data, render

store = data.store()
board = data.claims_board(store)
rows = {row.claim.id: row for row in board.rows}
if not rows:
    st.info("No claims: the claims file lists none.")
    st.stop()

asked = st.query_params.get("claim")
ids = list(rows)
claim_id = st.selectbox(
    "Claim", ids, index=ids.index(asked) if asked in rows else 0, key="reproduce_claim",
    format_func=lambda i: (c := rows[i].claim) and f"{c.label}: {dataset_name(c.dataset)} {c.split} "
                          f"{metric_name(c.metric)} {fmt_value(c.claimed, c.metric)}",
)  # fmt: skip
st.query_params["claim"] = claim_id
row = rows[claim_id]
claim, how = row.claim, reproduce(row.claim)

st.title(render.md(f"Reproduce {claim.label}"))
st.html(
    f"<p>{render.status_badge(row.status)} {escape(dataset_name(claim.dataset))} {escape(claim.split)} "
    f"{escape(metric_name(claim.metric))}: the paper claims <strong>{fmt_value(claim.claimed, claim.metric)}</strong> "
    f"({escape(claim.source)}); ours: <strong>{fmt_value(row.verified_value, claim.metric)}</strong> "
    f"{render.fmt_delta(row.delta, decimals(claim.metric))} · evidence {render.run_link(row.evidence_run_id)}</p>"
)
note = render.claim_note(row)
if note:
    st.html(f'<p class="note">{note}</p>')
st.markdown(f"**The rule.** {render.md(how.rule)}")

verify, train = st.columns(2)
with verify:
    st.subheader("Verify the released checkpoint")
    if how.verify_commands:
        st.code(how.verify_commands, language="bash", wrap_lines=True)
    st.caption(render.md(how.verify_note))
with train:
    st.subheader("Train from scratch")
    if how.train_commands:
        st.code(how.train_commands, language="bash", wrap_lines=True)
    st.caption(render.md(how.train_note))

st.subheader("Runs that tried this claim")
tried = data.reproductions(store, claim_id=claim_id)
if tried.empty:
    st.caption("None yet: be the first (the commands above).")
else:
    st.html(render.reproductions_html(tried))
