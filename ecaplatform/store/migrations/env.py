"""Alembic environment for the run store. Driven from ecaplatform.store.database.upgrade (or `eca db upgrade`).

The caller passes an open connection in `config.attributes["connection"]`, so the store's own engine settings
(SQLite WAL + BEGIN IMMEDIATE) apply to migrations too: two processes creating the store at once serialise.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from ecaplatform.store.schema import Base

# Any constant works; it only has to be the same in every process that migrates the same PostgreSQL database.
POSTGRES_MIGRATION_LOCK = 4_815_162_342


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through `eca db upgrade` (ecaplatform.store.database.upgrade)")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things in place
        # One transaction for every pending migration, SQLite's too (Alembic commits each one on its own there):
        # a writer racing to migrate a new store must not find it half-way and run a migration twice.
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Concurrent first writers on a fresh database: one migrates, the others wait and then see it done.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_MIGRATION_LOCK})
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run `eca db upgrade`")
run_migrations_online()
