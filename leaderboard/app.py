"""The ECA-Net leaderboard: `eca leaderboard` (or `streamlit run leaderboard/app.py`).

Pages: Claims (default), Runs, Run (one run: provenance, config, curves), Compare (ECA vs its baselines).
The app only reads the run store ($ECA_DB_URL or the per-user SQLite file), through a read-only connection.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts this folder on sys.path, not the repository root that holds the `leaderboard` package.
REPO_ROOT = str(Path(__file__).resolve().parents[1])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import streamlit as st  # noqa: E402

from leaderboard import render  # noqa: E402

st.set_page_config(page_title="ECA-Net leaderboard", page_icon=":trophy:", layout="wide")

pages = [
    st.Page("views/claims.py", title="Claims", icon=":material/verified:", url_path="claims", default=True),
    st.Page("views/runs.py", title="Runs", icon=":material/list:", url_path="runs"),
    st.Page("views/run.py", title="Run", icon=":material/monitoring:", url_path="run"),
    st.Page("views/compare.py", title="Compare", icon=":material/scatter_plot:", url_path="compare"),
]
page = st.navigation(pages)
st.html(render.STYLE)  # a style-only block: applies to every page's tables and badges, takes no space
page.run()
