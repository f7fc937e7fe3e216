"""Paper page (the default, also /claims): the paper, and each of its claims with the platform's verdict and the run
that is the evidence; each claim's model links to its Reproduce page."""

from __future__ import annotations

from html import escape

import streamlit as st

from ecaplatform.paper import PAPER
from ecaplatform.store.board import STORE_OK, task_title
from ecaplatform.store.verification import NOT_REPRODUCED, RUNNING, UNVERIFIED, VERIFIED
from leaderboard import data, render, spread_view

HOW_TO_REPRODUCE = """
**Reproduce a claim:** click its model in the tables below for the exact commands (prepare ImageNet or COCO, verify
the released checkpoint with its job, or train from scratch), the rule a run must meet, and the runs that tried.
A claim shows as *Unverified* until a run that evaluates its whole validation split (ImageNet's 50,000 images,
COCO val2017's 5,000, each counted once) is recorded. `eca submit jobs/<job>.yaml` runs a job locally or on SLURM;
`make demo` trains an ECA-ResNet on a small real data set on the CPU (it shows under **Runs**, never under an ImageNet
claim).
"""


store = data.store()
board = data.claims_board(store)
counts = {s: sum(r.status == s for r in board.rows) for s in (VERIFIED, NOT_REPRODUCED, RUNNING, UNVERIFIED)}
first = next((r.claim for r in board.rows if r.claim.public), board.rows[0].claim if board.rows else None)

st.title(render.md(PAPER.title))
st.html(
    f'<p style="margin:0">{escape(", ".join(PAPER.authors))}</p>'
    f'<p><strong>{escape(PAPER.venue)}</strong> · arXiv '
    f'<a href="{escape(PAPER.arxiv_url)}">{escape(PAPER.arxiv_id)}</a>'
    f' · <span class="eca-badge">Code available</span><a href="{escape(PAPER.code_url)}">'
    f"{escape(PAPER.code_url.removeprefix('https://'))}</a> (official, PyTorch)</p>"
)
if PAPER.abstract:
    with st.expander("Abstract (our summary of the paper)"):
        st.markdown(render.md(PAPER.abstract))

columns = st.columns([1, 1, 1, 1, 1, 1.4])
columns[0].metric("Claims", len(board.rows))
for column, (status, count) in zip(columns[1:5], counts.items(), strict=True):
    column.metric(status, count)
if first is not None:
    with columns[5]:
        st.page_link("views/reproduce.py", label="Reproduce", icon=":material/terminal:",
                     query_params={"claim": first.id})  # fmt: skip
        st.page_link("views/reproductions.py", label="Reproductions", icon=":material/fact_check:")
if counts[VERIFIED] == 0:
    st.success("**Be the first to reproduce this paper:** no claim is verified yet. Pick a claim below.")
no_runs = board.state != STORE_OK or board.run_count == 0
st.info(f"**No runs recorded yet.**\n{HOW_TO_REPRODUCE}" if no_runs else HOW_TO_REPRODUCE)

# A section per task (ImageNet classification, COCO detection, COCO instance segmentation), in display order: the
# public claims first, then the rest of the paper's.
sections: dict[tuple[str, str], list] = {}
for row in board.rows:
    sections.setdefault((row.claim.task, row.claim.dataset), []).append(row)
for (task, dataset), rows in sections.items():
    st.subheader(render.md(task_title(task, dataset)))
    public, others = [r for r in rows if r.claim.public], [r for r in rows if not r.claim.public]
    if public:
        st.html(spread_view.claims_table_html(public))
    if public and others:
        st.markdown("**Every other claim in the paper**")
    if others:
        st.html(spread_view.claims_table_html(others))

st.caption(
    f"Store: {render.md(store.display_url)} ({board.state}, {board.run_count:,} runs; read-only, refreshed "
    f"every {data.CACHE_TTL_S} s). Claims from: {render.md(board.claims_source)}. A claim is verified only by a "
    "succeeded run whose result covers the claim's whole dataset split, each sample counted once, evaluated with the "
    "reference torchvision (PIL) pipeline as the paper was, within the claim's tolerance below the claimed value "
    "(better always verifies); subsets, padded distributed evaluations and DALI evaluations are shown, never verify. "
    "COCO claims: AP as COCOeval computes it over all 5,000 val2017 images, each scored once. "
    "Running: a queued or running run that could still qualify (the claim's model, data set and split) is alive."
)
st.caption(render.md(spread_view.SPREAD_CAPTION))
