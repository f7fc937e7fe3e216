"""The app's cached view of the store: one read-only engine per store, query results kept for a few seconds.

The short TTL is what lets a run recorded a moment ago appear on the next page load without restarting the
server, while a burst of reruns (every widget change reruns the script) hits the database once.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from ecaplatform.store.board import Board, build_board
from ecaplatform.store.database import Store
from leaderboard import queries

CACHE_TTL_S = 5


def store() -> Store:
    """The store `$ECA_DB_URL` names (or the per-user SQLite file), read on every rerun so tests can point it
    elsewhere."""
    return Store.from_env()


@st.cache_resource(show_spinner=False)
def _engine(store: Store) -> Engine:
    # Never cached when it raises (the file was removed since engine_for looked): the page says so.
    return store.open_reader()


def engine_for(store: Store) -> Engine | None:
    """The shared read-only engine, or None while the SQLite file does not exist (checked on every call)."""
    return _engine(store) if store.exists() else None


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def claims_board(store: Store) -> Board:
    return build_board(engine_for(store))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def runs_frame(store: Store) -> pd.DataFrame:
    return queries.runs_frame(engine_for(store))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def run_detail(store: Store, run_id: str) -> queries.RunDetail | None:
    return queries.run_detail(engine_for(store), run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def reproductions(store: Store, claim_id: str | None = None, other_datasets: bool = False) -> pd.DataFrame:
    """The runs that tried the paper's claims (one claim's with `claim_id`; every run with `other_datasets`)."""
    claims = [row.claim for row in claims_board(store).rows]
    claim = next((c for c in claims if c.id == claim_id), None)
    return queries.reproductions(engine_for(store), claims, claim=claim, other_datasets=other_datasets)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def compare_frame(store: Store) -> pd.DataFrame:
    return queries.compare_frame(claims_board(store))
