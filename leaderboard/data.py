"""The app's cached view of the store: one read-only engine per URL, query results kept for a few seconds.

The short TTL is what lets a run recorded a moment ago appear on the next page load without restarting the
server, while a burst of reruns (every widget change reruns the script) hits the database once.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from ecaplatform.store.database import StoreError, db_url, no_store_message, store_exists
from leaderboard import queries

CACHE_TTL_S = 5


def store_url() -> str:
    """`$ECA_DB_URL` or the per-user SQLite default, read on every rerun so tests can point it elsewhere."""
    return db_url()


@st.cache_resource(show_spinner=False)
def _engine(url: str) -> Engine:
    engine = queries.open_readonly(url)
    if engine is None:  # never cached: an exception leaves nothing in st.cache_resource
        raise StoreError(no_store_message(url))  # removed since engine_for looked: the page says so
    return engine


def engine_for(url: str) -> Engine | None:
    """The shared read-only engine, or None while the SQLite file does not exist (checked on every call)."""
    if not store_exists(url):
        return None
    return _engine(url)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def claims_board(url: str) -> queries.ClaimsBoard:
    return queries.claims_board(engine_for(url), url)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def runs_frame(url: str) -> pd.DataFrame:
    return queries.runs_frame(engine_for(url))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def run_detail(url: str, run_id: str) -> queries.RunDetail | None:
    return queries.run_detail(engine_for(url), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def compare_frame(url: str) -> pd.DataFrame:
    return queries.compare_frame(claims_board(url))
