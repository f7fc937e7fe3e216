"""The PostgreSQL fixture other test files rely on really starts a server that accepts SQL."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.postgres


def test_postgres_url_accepts_sql_on_localhost(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar_one()
    engine.dispose()
    assert int(version.split(".")[0]) >= 13


def test_fresh_databases_are_separate(fresh_postgres_url: str, postgres_url: str) -> None:
    assert fresh_postgres_url != postgres_url
    engine = create_engine(fresh_postgres_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE only_here (x int)"))
    engine.dispose()
    other = create_engine(postgres_url)
    with other.connect() as conn:
        exists = conn.execute(text("SELECT to_regclass('only_here')")).scalar_one()
    other.dispose()
    assert exists is None
