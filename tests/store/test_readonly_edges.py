"""The store's read-only access, in-process: the reader's fallback to an immutable SQLite file, the "older schema"
line, and the readers' connection (Store.reader, has_tables). Mutation testing (`make mutation`) found these
reached only from subprocesses (as a user without write access) or from the Streamlit pages."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ecaplatform.store import database as store
from ecaplatform.store.database import (
    SchemaBehind,
    Store,
    StoreError,
    alembic_config,
    has_tables,
    head_revision,
    make_engine,
    schema_behind,
    writer_engine,
)

OLD_REVISION = "0002_run_heartbeat"


# --- the read-only connection and its immutable fallback ----------------------------------------------------------


class _OperationalError(Exception):
    def __init__(self, message: str, errorname: str) -> None:
        super().__init__(message)
        self.sqlite_errorname = errorname


class _Connection:
    def __init__(self, error: Exception | None) -> None:
        self.error, self.closed, self.statements = error, False, []

    def execute(self, statement: str) -> SimpleNamespace:
        self.statements.append(statement)
        if self.error is not None:
            raise self.error
        return SimpleNamespace(fetchone=lambda: (0,))

    def close(self) -> None:
        self.closed = True


class _Dbapi:
    """sqlite3 as _connect_sqlite_readonly uses it: the first connection fails with `error` on its first read."""

    OperationalError = _OperationalError

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.connections: list[_Connection] = []

    def connect(self, *args: Any, **kwargs: Any) -> _Connection:
        self.calls.append((args, kwargs))
        self.connections.append(_Connection(self.error if len(self.calls) == 1 else None))
        return self.connections[-1]


URI = "file:/shared/runs.db?mode=ro&uri=true"
PARAMS = {"timeout": 60, "check_same_thread": False}


def _connect(error: Exception | None) -> tuple[_Dbapi, object]:
    dbapi = _Dbapi(error)
    connection = store._connect_sqlite_readonly(SimpleNamespace(loaded_dbapi=dbapi), None, [URI, "more"], PARAMS)
    return dbapi, connection


def test_a_readable_store_is_opened_once_read_only_with_the_engines_parameters() -> None:
    dbapi, connection = _connect(None)
    assert dbapi.calls == [((URI, "more"), PARAMS)] and connection is dbapi.connections[0]
    assert not dbapi.connections[0].closed and len(dbapi.connections[0].statements) == 1


@pytest.mark.parametrize(
    ("message", "errorname"),
    [
        ("x", "SQLITE_READONLY_DIRECTORY"),  # each code alone, with a message that says nothing
        ("x", "SQLITE_READONLY_CANTINIT"),
        ("x", "SQLITE_CANTOPEN"),
        ("attempt to write a readonly database", ""),  # each message alone, without a code (older Pythons)
        ("unable to open database file", ""),
    ],
)
def test_a_store_whose_log_cannot_be_shared_is_reopened_immutable(message: str, errorname: str) -> None:
    dbapi, connection = _connect(_OperationalError(message, errorname))
    assert dbapi.calls == [((URI, "more"), PARAMS), ((f"{URI}&immutable=1", "more"), PARAMS)]
    assert dbapi.connections[0].closed and connection is dbapi.connections[1]


@pytest.mark.parametrize(
    ("message", "errorname"),
    [("database disk image is malformed", "SQLITE_CORRUPT"), ("file is not a database", "SQLITE_NOTADB")],
)
def test_any_other_error_of_the_read_only_connection_is_raised_as_it_is(message: str, errorname: str) -> None:
    error = _OperationalError(message, errorname)
    with pytest.raises(_OperationalError) as raised:
        _connect(error)
    assert raised.value is error


# --- a store at an older schema --------------------------------------------------------------------------------


def _old_store(path: Path) -> str:
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    with engine.connect() as connection:  # Alembic itself: store.upgrade would mark it up to date
        command.upgrade(alembic_config(connection), OLD_REVISION)
        connection.commit()
    engine.dispose()
    return url


def _behind(shown: str) -> str:
    return (f"the run store {shown} is at schema {OLD_REVISION}, older than this version of ecaplatform reads "
            f"({head_revision()}); run `eca db upgrade` (or any `eca fit`) to migrate it")  # fmt: skip


def test_an_older_schema_is_named_in_one_line_with_the_stores_path(tmp_path: Path) -> None:
    path = tmp_path / "lab #1" / "runs.db"  # quoted in the reader's file: URI, shown as the path it is
    path.parent.mkdir()
    url = _old_store(path)
    assert schema_behind(make_engine(url, readonly=True)) == _behind(str(path))
    # A writer's engine: its URL, as URLs are shown (the # quoted).
    assert schema_behind(make_engine(url)) == _behind(f"sqlite:///{path}".replace("#", "%23"))


def test_a_store_migrated_by_a_newer_version_is_read_not_called_older(tmp_path: Path) -> None:
    engine = writer_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    assert schema_behind(engine) is None
    assert schema_behind(writer_engine(f"sqlite:///{tmp_path / 'current.db'}")) is None


# --- the leaderboard's connection --------------------------------------------------------------------------------


def test_the_leaderboards_engine_reads_and_cannot_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    writer_engine(url).dispose()
    engine = Store.at(url).reader()
    assert engine is not None and has_tables(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM runs")).scalar() == 0
        with pytest.raises(DBAPIError, match="(?i)readonly|read-only"):
            connection.execute(text("DELETE FROM runs"))


def test_has_tables_says_no_for_an_empty_store_and_remembers_only_a_yes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    make_engine(url).connect().close()  # the file exists, with no tables: nobody migrated it yet
    engine = make_engine(url, readonly=True)
    assert has_tables(engine) is False
    assert has_tables(engine) is False  # a no is not remembered ...
    writer_engine(url).dispose()
    assert has_tables(engine) is True  # ... so a store migrated since is seen
    with make_engine(url).begin() as connection:
        connection.execute(text("DROP TABLE result_outcomes"))
        connection.execute(text("DROP TABLE results"))
    assert has_tables(engine) is True  # a yes is (no inspection per page)
    assert has_tables(make_engine(url, readonly=True)) is False  # a new engine looks again


def test_has_tables_refuses_an_older_schema_with_its_one_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    url = _old_store(path)
    engine = make_engine(url, readonly=True)
    with pytest.raises(SchemaBehind) as raised:
        has_tables(engine)
    assert str(raised.value) == _behind(str(path))


def test_open_reader_opens_the_store_it_is_given_and_names_a_missing_one(tmp_path: Path) -> None:
    given = tmp_path / "given.db"
    writer_engine(f"sqlite:///{given}").dispose()
    writer_engine().dispose()  # the store of ECA_DB_URL exists too: the reader must not fall back to it
    assert str(given) in Store.at(f"sqlite:///{given}").open_reader().url.database
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError) as raised:
        Store.at(f"sqlite:///{missing}").open_reader()
    assert str(raised.value) == (f"no run store at {missing} yet: any `eca fit` records one there, or "
                                 "`eca db upgrade` creates it")  # fmt: skip


# --- how the engines connect -------------------------------------------------------------------------------------


def test_sqlite_connections_wait_for_a_busy_store_and_may_move_between_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3.dbapi2

    real_connect, calls = sqlite3.dbapi2.connect, []

    def spy(*args: Any, **kwargs: Any) -> sqlite3.dbapi2.Connection:
        calls.append((args, kwargs))
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3.dbapi2, "connect", spy)  # the module SQLAlchemy's dialect connects with
    path = tmp_path / "runs.db"
    for readonly in (False, True):
        with make_engine(f"sqlite:///{path}", readonly=readonly).connect() as connection:
            connection.execute(text("SELECT 1"))
    assert [kwargs["timeout"] for _, kwargs in calls] == [store.SQLITE_BUSY_TIMEOUT_S] * 2 == [60, 60]
    assert [kwargs["check_same_thread"] for _, kwargs in calls] == [False, False]
    assert (calls[1][0][0], calls[1][1]["uri"]) == (f"file:{path}?mode=ro", True)  # the reader: read-only URI


def test_the_reader_pools_no_connection(tmp_path: Path) -> None:
    from sqlalchemy.pool import NullPool

    # Each connection decides afresh whether it can share the write-ahead log or must read the file immutable.
    writer_engine(f"sqlite:///{tmp_path / 'runs.db'}").dispose()
    assert isinstance(make_engine(f"sqlite:///{tmp_path / 'runs.db'}", readonly=True).pool, NullPool)


def test_a_writer_creates_the_stores_folders(tmp_path: Path) -> None:
    path = tmp_path / "lab" / "shared" / "runs.db"
    writer_engine(f"sqlite:///{path}").dispose()
    assert path.is_file()


def test_a_store_whose_folder_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    path = blocker / "sub" / "runs.db"
    with pytest.raises(StoreError) as raised:
        make_engine(f"sqlite:///{path}")
    assert str(raised.value) == (f"cannot create the folder {path.parent} for the run store {path} (Not a directory); "
                                 f"set ECA_DB_URL to a store in a folder you can write, e.g. "
                                 f"sqlite:///{store.default_db_path()}")  # fmt: skip


@pytest.mark.parametrize("readonly", [False, True])
def test_postgresql_engines_give_up_connecting_soon_and_readers_never_write(
    monkeypatch: pytest.MonkeyPatch, readonly: bool
) -> None:
    from sqlalchemy import create_engine

    made: list[dict[str, Any]] = []

    def recording_create_engine(url: Any, **kwargs: Any) -> Any:
        made.append(kwargs)
        return create_engine(url, **kwargs)  # builds the engine; nothing connects yet

    monkeypatch.setattr(store, "create_engine", recording_create_engine)
    make_engine("postgresql://eca@db.lab:5432/runs", readonly=readonly)
    make_engine("postgresql://eca@db.lab:5432/runs?connect_timeout=30", readonly=readonly)  # the URL's own wins
    read_only = {"execution_options": {"postgresql_readonly": True}} if readonly else {}
    assert made == [{"pool_pre_ping": True, "connect_args": {"connect_timeout": 5}, **read_only},
                    {"pool_pre_ping": True, **read_only}]  # fmt: skip


def test_a_postgresql_driver_that_is_not_installed_is_named_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_driver(url: Any, **kwargs: Any) -> Any:
        raise ImportError("No module named 'psycopg2'")

    monkeypatch.setattr(store, "create_engine", no_driver)
    with pytest.raises(StoreError) as raised:
        make_engine("postgresql+psycopg2://eca:secret@db.lab/runs", readonly=True)
    assert str(raised.value) == ("store URL 'postgresql+psycopg2://eca:***@db.lab/runs': its driver is not installed "
                                 "(No module named 'psycopg2'); use postgresql+psycopg://, the driver ecaplatform "
                                 "installs")  # fmt: skip


def test_a_readers_store_problem_names_that_store_not_the_default_one(tmp_path: Path) -> None:
    writer_engine().dispose()  # the store of ECA_DB_URL is a good one
    path = tmp_path / "not-a-store.db"
    path.write_bytes(b"this is no SQLite file" * 100)
    with pytest.raises(StoreError) as raised, make_engine(f"sqlite:///{path}", readonly=True).connect() as connection:
        connection.execute(text("SELECT count(*) FROM runs"))
    assert str(raised.value).startswith(f"{path} is not a SQLite database (")
