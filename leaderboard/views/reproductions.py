"""Reproductions page: every run that tried one of the paper's claims (its job named the claim, or it ran on a
claim's data set), newest first, with who and where, what, the result and whether it counts; a filter adds the rest
(the CPU demo, other data sets)."""

from __future__ import annotations

import streamlit as st

from ecaplatform.paper import PAPER
from ecaplatform.store.board import dataset_name
from leaderboard import data, queries, render

store = data.store()
board = data.claims_board(store)
datasets = sorted({dataset_name(row.claim.dataset) for row in board.rows})

st.title("Reproductions")
st.markdown(
    f"The runs that tried to reproduce **{render.md(PAPER.title)}**: each whose job named one of its claims or that "
    f"evaluated on a claim's data set ({render.md(', '.join(datasets))}), newest first. *Counts* says whether its "
    "result meets the verification rule for the claims of its model on its data set, and if not, why not."
)
other = st.toggle("Also runs on other data sets (the CPU demo, smoke tests)", key="reproductions_other")
runs = data.reproductions(store, other_datasets=other)
newest = f", the newest {queries.MAX_REPRODUCTIONS:,}" if len(runs) >= queries.MAX_REPRODUCTIONS else ""
st.caption(f"{len(runs):,} runs{newest}; a run's page has its provenance and config.")
if runs.empty:
    st.info("No run has tried a claim yet: the **Reproduce** page has each claim's commands.")
else:
    st.html(render.reproductions_html(runs))
