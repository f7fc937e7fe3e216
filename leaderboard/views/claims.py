"""Claims page: the paper, and each of its claims with the platform's verdict and the run that is the evidence."""

from __future__ import annotations

import streamlit as st

from ecaplatform.paper import PAPER
from ecaplatform.store.board import STORE_OK
from ecaplatform.store.verification import NOT_REPRODUCED, RUNNING, UNVERIFIED, VERIFIED
from leaderboard import data, render, spread_view

HOW_TO_PRODUCE_A_RUN = """
**No runs recorded yet.** The claims below come from the claims file and show as *Unverified* until a run
that evaluates the whole ImageNet validation split (50,000 images, each counted once) is recorded.

- `make demo`: train an ECA-ResNet on a small real data set on the CPU and record the run (it shows up under
  **Runs**; it cannot verify an ImageNet claim).
- `eca submit jobs/<job>.yaml`: run a training or verification job locally or on SLURM, e.g. a job that
  validates the released `eca_resnet50_k3557.pth.tar` checkpoint on ImageNet val.
"""


store = data.store()
board = data.claims_board(store)

st.title("ECA-Net: claims and their verification")
st.markdown(
    f"**{PAPER.title}** ({PAPER.venue}) · arXiv [{PAPER.arxiv_id}]({PAPER.arxiv_url}) · "
    f"code [github.com/BangguWu/ECANet]({PAPER.code_url})"
)

if board.state != STORE_OK or board.run_count == 0:
    st.info(HOW_TO_PRODUCE_A_RUN)

counts = {s: sum(r.status == s for r in board.rows) for s in (VERIFIED, NOT_REPRODUCED, RUNNING, UNVERIFIED)}
columns = st.columns(5)
columns[0].metric("Claims", len(board.rows))
for column, (status, count) in zip(columns[1:], counts.items(), strict=True):
    column.metric(status, count)

public = [r for r in board.rows if r.claim.public]
others = [r for r in board.rows if not r.claim.public]
st.subheader("Public claims")
st.html(spread_view.claims_table_html(public))
if others:
    st.subheader("Every other claim in the paper")
    st.html(spread_view.claims_table_html(others))

st.caption(
    f"Store: {render.md(store.display_url)} ({board.state}, {board.run_count:,} runs; read-only, refreshed "
    f"every {data.CACHE_TTL_S} s). Claims from: {render.md(board.claims_source)}. A claim is verified only by a "
    "succeeded run whose result covers the claim's whole dataset split, each sample counted once, evaluated with the "
    "reference torchvision (PIL) pipeline as the paper was, within the claim's tolerance below the claimed value "
    "(better always verifies); subsets, padded distributed evaluations and DALI evaluations are shown, never verify."
)
st.caption(render.md(spread_view.SPREAD_CAPTION))
