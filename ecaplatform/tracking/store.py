"""Connecting to the run store.

SQLite by default (one file per user, WAL so readers never block the writer, and `BEGIN IMMEDIATE` so a
writer takes the write lock up front instead of failing half-way with "database is locked").
PostgreSQL for clusters: `ECA_DB_URL=postgresql+psycopg://user@host/db` (SQLite is unsafe on NFS/Lustre).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

ENV_VAR = "ECA_DB_URL"
SQLITE_BUSY_TIMEOUT_S = 60


def default_db_path() -> Path:
    """`$XDG_DATA_HOME/ecaplatform/runs.db`, i.e. `~/.local/share/ecaplatform/runs.db` by default."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "ecaplatform" / "runs.db"


def db_url() -> str:
    """The store's URL: `$ECA_DB_URL` if set, else the per-user SQLite file."""
    url = os.environ.get(ENV_VAR)
    if url:
        return url
    return f"sqlite:///{default_db_path()}"


def _is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str | None = None, *, readonly: bool = False) -> Engine:
    """An engine for the store. `readonly=True` is what the leaderboard uses: it can never write.

    SQLite read-only opens the file with `mode=ro` (the file must exist); PostgreSQL runs every transaction
    as READ ONLY.
    """
    url = url or db_url()
    if _is_sqlite(url):
        return _sqlite_engine(url, readonly=readonly)
    kwargs: dict = {"pool_pre_ping": True}
    if readonly:
        kwargs["execution_options"] = {"postgresql_readonly": True}
    return create_engine(url, **kwargs)


def _sqlite_engine(url: str, *, readonly: bool) -> Engine:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ValueError(f"{url!r}: the run store needs a SQLite file, not an in-memory database")
    path = Path(database).expanduser()
    if readonly:
        if not path.exists():
            raise FileNotFoundError(
                f"run store {path} does not exist yet; run `eca db upgrade` or any `eca fit` to create it"
            )
        engine = create_engine(
            f"sqlite:///file:{path}?mode=ro&uri=true",
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            f"sqlite:///{path}", connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        if not readonly:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        # Writers take the write lock at BEGIN: a deferred transaction that later upgrades to a writer can
        # fail with "database is locked" without waiting for the busy timeout.
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any exception."""
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session, session.begin():
        yield session


_DIALECT_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def upsert(session: Session, entity: type[DeclarativeBase], rows: Mapping[str, Any] | Sequence[Mapping[str, Any]],
           keys: Sequence[str], copy: Collection[str] = (), set_: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """Insert `rows` into the mapped class `entity`; a row whose `keys` exist already updates that row instead:
    the columns in `copy` from the row we tried to insert, then `set_` (values or SQL expressions).

    One INSERT ... ON CONFLICT DO UPDATE statement, so no writer can come between a read and an insert.
    """
    dialect = session.get_bind().dialect.name
    if dialect not in _DIALECT_INSERTS:
        raise NotImplementedError(f"the run store is SQLite or PostgreSQL, not {dialect}")
    statement = _DIALECT_INSERTS[dialect](entity).values(rows)
    changes = {name: statement.excluded[name] for name in copy} | dict(set_ or {})
    if changes:
        session.execute(statement.on_conflict_do_update(index_elements=keys, set_=changes))
    else:
        session.execute(statement.on_conflict_do_nothing(index_elements=keys))


# --- schema migrations (Alembic) -------------------------------------------------------------------------------

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_schema_ready: set[str] = set()  # URLs this process has already brought to the head revision


def alembic_config(connection=None):  # type: ignore[no-untyped-def]
    """An Alembic Config for the store's migrations, bound to `connection` if given (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration revision shipped with this version of ecaplatform."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no migrations found in {MIGRATIONS_DIR}"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty (never migrated) database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine | None = None, revision: str = "head") -> str | None:
    """Create the store or migrate it to `revision`; safe to call from many processes at once. Returns the revision."""
    from alembic import command

    engine = engine or make_engine()
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), revision)
        connection.commit()
    _schema_ready.add(str(engine.url))
    return current_revision(engine)


def ensure_schema(engine: Engine) -> None:
    """Bring the store to the head revision once per process, so no user ever has to run `eca db upgrade`."""
    key = str(engine.url)
    if key in _schema_ready:
        return
    if current_revision(engine) != head_revision():
        upgrade(engine)
    _schema_ready.add(key)


def writer_engine(url: str | None = None) -> Engine:
    """An engine for writing, with the schema created or migrated first."""
    engine = make_engine(url)
    ensure_schema(engine)
    return engine
