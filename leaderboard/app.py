"""The ECA-Net leaderboard: `eca leaderboard` (or `streamlit run` on this file of the installed package).

Pages: Paper (the claims, default; also at /claims), Reproduce (one claim's commands), Reproductions (the runs that
tried), Compare (ECA vs its baselines), Runs, Run (one run: provenance, config, curves). Every page has its URL.
The app only reads the run store ($ECA_DB_URL or the per-user SQLite file), through a read-only connection.
"""

from __future__ import annotations

import streamlit as st

from ecaplatform.store.database import SchemaBehind, StoreError
from leaderboard import render

st.set_page_config(page_title="ECA-Net leaderboard", page_icon=":trophy:", layout="wide")

pages = [
    # The default page is served at the root whatever its url_path; the same page again, hidden, answers /claims.
    st.Page("views/claims.py", title="Paper", icon=":material/verified:", url_path="paper", default=True),
    st.Page("views/claims.py", title="Claims", url_path="claims", visibility="hidden"),
    st.Page("views/reproduce.py", title="Reproduce", icon=":material/terminal:", url_path="reproduce"),
    st.Page("views/reproductions.py", title="Reproductions", icon=":material/fact_check:", url_path="reproductions"),
    st.Page("views/compare.py", title="Compare", icon=":material/scatter_plot:", url_path="compare"),
    st.Page("views/runs.py", title="Runs", icon=":material/list:", url_path="runs"),
    st.Page("views/run.py", title="Run", icon=":material/monitoring:", url_path="run"),
]
page = st.navigation(pages, position="top")  # no sidebar: the tables get the whole width
st.html(render.STYLE)  # a style-only block: applies to every page's tables and badges, takes no space
try:
    page.run()
except SchemaBehind as problem:  # an older schema than this code reads (a reader never migrates): one line
    st.error(f"The leaderboard cannot show this store yet: {render.md(problem)}")
except StoreError as problem:  # the store is unreachable, unreadable or misconfigured: say so in one line
    st.error(f"The run store cannot be read: {render.md(problem)}")
