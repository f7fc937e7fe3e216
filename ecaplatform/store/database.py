"""Connecting to the run store: `Store`, a store's URL parsed and checked once, makes every engine on it.

SQLite by default (one file per user, WAL so readers never block the writer, and `BEGIN IMMEDIATE` so a
writer takes the write lock up front instead of failing half-way with "database is locked").
PostgreSQL for clusters: `ECA_DB_URL=postgresql+psycopg://user@host/db` (SQLite is unsafe on NFS/Lustre).
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool

from ecaplatform.store.schema import Claim, Result, Run

ENV_VAR = "ECA_DB_URL"
SQLITE_BUSY_TIMEOUT_S = 60
POSTGRES_CONNECT_TIMEOUT_S = 5  # an unreachable server is named within seconds, not after the OS's TCP timeout
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
URL_FORMS = "sqlite:////path/to/runs.db or postgresql+psycopg://user@host:5432/dbname"
HOW_A_STORE_IS_MADE = "any `eca fit` records one there, or `eca db upgrade` creates it"


class StoreError(RuntimeError):
    """The run store cannot be used as configured. The message is one line: the store (password hidden), what
    is wrong, and what to do next. The store is left as it was."""


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


# --- showing URLs: never a password ------------------------------------------------------------------------------

_SECRET_QUERY_KEY = re.compile(r"(?i)pass|pwd|secret|token|key")
_USERINFO_PASSWORD = re.compile(r"(://[^:/?#@\s]*):.*@")  # greedy to the last @: a password may contain @
_QUERY_SECRET = re.compile(r"(?i)([?&;][^=&;\s]*(?:pass|pwd|secret|token|key)[^=&;\s]*=)[^&;\s]*")


def display_url(url: str | URL) -> str:
    """The URL as it may be printed or shown: the password, and any query parameter that looks like one
    (`?password=`, `?sslpassword=`, tokens, keys), replaced by ***. Never raises, also for text that is no URL."""
    if not isinstance(url, URL):
        try:
            url = make_url(url)
        except Exception:  # not a URL SQLAlchemy can parse: mask what looks like a password in the text itself
            return _QUERY_SECRET.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1:***@", str(url)))
    if url.host and "@" in url.host:  # an unquoted @ in the password: SQLAlchemy took the rest for the host
        url = url.set(host="***@" + url.host.rsplit("@", 1)[1])
    secret = {key: "***" for key in url.query if _SECRET_QUERY_KEY.search(key)}
    if secret:
        url = url.update_query_dict(secret)
    return url.render_as_string(hide_password=True)


def _redact(text: str, url: URL | None) -> str:
    """`text` (e.g. a driver's error message) without the URL's password, whatever the driver put in it."""
    text = _QUERY_SECRET.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1:***@", text))
    if url is None:
        return text
    secrets = [url.password] if isinstance(url.password, str) else []
    for key, value in url.query.items():
        if _SECRET_QUERY_KEY.search(key):
            secrets += [value] if isinstance(value, str) else list(value)
    if url.host and "@" in url.host:
        secrets.append(url.host.rsplit("@", 1)[0])
    for secret in filter(None, secrets):
        text = text.replace(secret, "***")
    return text


def _setting(raw: str) -> str:
    """Where a URL came from, for messages: `ECA_DB_URL=...` when it is the environment's."""
    shown = display_url(raw)
    return f"{ENV_VAR}={shown!r}" if os.environ.get(ENV_VAR) == raw else f"store URL {shown!r}"


@dataclass(frozen=True)
class Store:
    """One run store, its URL parsed and checked once (`Store.from_env()`, `Store.at(url)`), and the engines on it:
    `writer()` creates and migrates the schema; `reader()` and `open_reader()` only read and never create a file."""

    url: URL  # SQLite with a file, or PostgreSQL through psycopg
    env_named: bool = False  # $ECA_DB_URL named it: messages say so

    @classmethod
    def at(cls, url: str | URL | None = None) -> Store:
        """The store at `url` (default `db_url()`): StoreError for text that is no URL, another database than SQLite
        or PostgreSQL, or a SQLite URL without a file. A bare `postgresql://` uses psycopg (3), the driver
        ecaplatform installs."""
        if isinstance(url, URL):
            raw, parsed = display_url(url), url
        else:
            raw = url or db_url()
            try:
                parsed = make_url(raw)
            except Exception:
                raise StoreError(f"{_setting(raw)} is not a database URL; use {URL_FORMS}") from None
        backend = parsed.get_backend_name()
        if backend not in SUPPORTED_BACKENDS:
            raise StoreError(f"{_setting(raw)}: the run store is SQLite or PostgreSQL, not {backend}; use {URL_FORMS}")
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if backend == "sqlite" and (not parsed.database or parsed.database == ":memory:"):
            raise StoreError(f"{_setting(raw)}: the run store needs a SQLite file, not an in-memory database; "
                             f"use {URL_FORMS}")  # fmt: skip
        return cls(parsed, env_named=os.environ.get(ENV_VAR) == raw)

    @classmethod
    def from_env(cls) -> Store:
        """The store `$ECA_DB_URL` names, else the per-user SQLite file."""
        return cls.at()

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def display_url(self) -> str:
        return display_url(self.url)

    @property
    def path(self) -> Path | None:
        """The SQLite file, or None for PostgreSQL."""
        if self.dialect != "sqlite":
            return None
        database = self.url.database or ""
        if database.startswith("file:"):  # a URI filename (`sqlite:///file:/path?mode=ro&uri=true`)
            database = database.removeprefix("file:")
        return Path(database).expanduser()

    def exists(self) -> bool:
        """Whether there is a store to read: the SQLite file exists. A PostgreSQL database is assumed to be there
        (connecting tells)."""
        return self.path is None or self.path.exists()

    def missing_message(self) -> str:
        """What readers say when the SQLite file does not exist: it is not created by looking."""
        return f"no run store at {self.path}{f' ({ENV_VAR})' if self.env_named else ''} yet: {HOW_A_STORE_IS_MADE}"

    def engine(self, *, readonly: bool = False) -> Engine:
        """An engine on the store, no schema made. `readonly=True` is what readers use (`eca runs`, `eca claims`,
        the leaderboard): it can never write, and never creates a file.

        SQLite read-only opens the file with `mode=ro` (the file must exist), or with `immutable=1` when SQLite
        cannot share the write-ahead log because the store's folder is read-only for this user (a shared store on a
        lab server). PostgreSQL runs every transaction as READ ONLY and gives up connecting after
        POSTGRES_CONNECT_TIMEOUT_S. The store's own problems (unreachable, not a database, not writable, ...) are
        raised as StoreError, from any statement.
        """
        if self.path is not None:
            engine = _sqlite_engine(self.path, readonly=readonly)
        else:
            kwargs: dict[str, Any] = {"pool_pre_ping": True}
            if "connect_timeout" not in self.url.query:
                kwargs["connect_args"] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
            if readonly:
                kwargs["execution_options"] = {"postgresql_readonly": True}
            try:
                engine = create_engine(self.url, **kwargs)
            except ImportError as exc:  # e.g. postgresql+psycopg2:// without psycopg2 installed
                raise StoreError(f"{_setting(self.display_url)}: its driver is not installed ({exc}); use "
                                 f"postgresql+psycopg://, the driver ecaplatform installs") from None  # fmt: skip
        self._name_problems(engine, readonly=readonly)
        return engine

    def writer(self) -> Engine:
        """An engine for writing, with the schema created or migrated first."""
        engine = self.engine()
        ensure_schema(engine)
        return engine

    def reader(self) -> Engine | None:
        """A read-only engine, or None when the SQLite file does not exist (nothing is created)."""
        return self.engine(readonly=True) if self.exists() else None

    def open_reader(self) -> Engine:
        """A read-only engine on a store that must exist: StoreError saying how a store is made otherwise."""
        engine = self.reader()
        if engine is None:
            raise StoreError(self.missing_message())
        return engine

    def _name_problems(self, engine: Engine, *, readonly: bool) -> None:
        """Turn the driver errors a user must act on (no server, no access, not a database) into StoreError."""

        @event.listens_for(engine, "handle_error")
        def _handle_error(context) -> StoreError | None:  # type: ignore[no-untyped-def]
            if context.is_pre_ping:  # SQLAlchemy reconnects by itself
                return None
            connecting = context.connection is None or context.is_disconnect
            message = self.problem(context.original_exception, readonly=readonly, connecting=connecting)
            return StoreError(message) if message else None

    def problem(self, error: BaseException, *, readonly: bool = False, connecting: bool = True) -> str | None:
        """One line for a driver error that is the store's problem rather than the program's, else None."""
        lines = [line.strip() for line in _redact(str(error), self.url).splitlines() if line.strip()]
        path = self.path
        if path is None:
            if not connecting:
                return None
            reason = next((line for line in reversed(lines) if "failed: " in line), lines[0] if lines else "")
            reason = " ".join(reason.rsplit("failed: ", 1)[-1].split()) or type(error).__name__
            return (f"cannot connect to the run store {self.display_url}: {reason}; check that the PostgreSQL "
                    f"server is running and reachable, and the host, port, database and user in {ENV_VAR}")  # fmt: skip
        code, text = _sqlite_code(error), " ".join(lines) or type(error).__name__
        if path.is_dir():
            return f"{path} is a folder, not a run store file; set {ENV_VAR} to sqlite:///{path / 'runs.db'}, say"
        if code == "SQLITE_NOTADB" or "not a database" in text:
            return (f"{path} is not a SQLite database ({text}); point {ENV_VAR} at the run store, or move that file "
                    f"away and `eca db upgrade` creates a new store there")  # fmt: skip
        if code.startswith("SQLITE_CORRUPT") or "malformed" in text:
            return f"the run store {path} is damaged ({text}); restore it from a backup, or move it away and start anew"
        if code.startswith("SQLITE_BUSY") or "database is locked" in text:
            return (f"the run store {path} stayed locked by another process for {SQLITE_BUSY_TIMEOUT_S} s ({text}); "
                    f"retry, or find the process holding it (`fuser {path}`)")  # fmt: skip
        if code.startswith("SQLITE_IOERR") or "disk I/O error" in text:
            return (f"cannot read or write the run store {path} ({text}); is its disk full or a network file system? "
                    f"SQLite is unsafe on NFS/Lustre: use PostgreSQL there")  # fmt: skip
        writing = "readonly database" in text
        if readonly and writing and code not in ("SQLITE_READONLY_DIRECTORY", "SQLITE_READONLY_CANTINIT"):
            return None  # a reader asked to write: the program's error, raised as it is
        opening = code.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM")) or "unable to open" in text
        if writing or opening:
            return _access_problem(path, text)
        return None


def schema_behind(engine: Engine) -> str | None:
    """For a reader (which never migrates): a one-line message if the store's schema is older than this version
    of ecaplatform reads, else None. A store with no tables yet has nothing to show; one migrated by a newer
    ecaplatform (a revision this one does not know) only adds to what this version reads, so it is read."""
    current, head = current_revision(engine), head_revision()
    if current is None or current == head or not is_known_revision(current):
        return None
    return (f"the run store {_shown(engine)} is at schema {current}, older than this version of ecaplatform reads "
            f"({head}); run `eca db upgrade` (or any `eca fit`) to migrate it")


def refuse_newer_schema(engine: Engine, current: str | None) -> None:
    """For a writer: SchemaAhead if the store is at a revision this version does not ship (a newer ecaplatform
    migrated it). Migrating it is impossible, and writing rows the newer schema expects otherwise could corrupt it."""
    if current is not None and not is_known_revision(current):
        raise SchemaAhead(f"the run store {_shown(engine)} is at schema {current}, newer than this version of "
                          f"ecaplatform knows (its newest is {head_revision()}); upgrade ecaplatform to write to it "
                          "(`eca runs`, `eca claims` and the leaderboard can still read it)")  # fmt: skip


def is_known_revision(revision: str) -> bool:
    """Whether this version of ecaplatform ships the migration `revision`."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _shown(engine: Engine) -> str:
    database = engine.url.database or ""  # a read-only SQLite engine opens the file as a `file:` URI
    return unquote(database.removeprefix("file:")) if database.startswith("file:") else display_url(engine.url)


class SchemaBehind(StoreError):
    """The store is at an older schema than this version reads: readers say so in one line (a reader never
    migrates; `eca db upgrade` or any `eca fit` does)."""


class SchemaAhead(StoreError):
    """The store is at a newer schema than this version knows: a writer refuses it in one line (readers read it)."""


_engines_with_tables: weakref.WeakSet[Engine] = weakref.WeakSet()


def has_tables(engine: Engine) -> bool:
    """Whether the store has its tables (a database nobody migrated yet has none), at the schema this version reads:
    SchemaBehind (schema_behind's one line) when they are older. Only a yes is remembered: an empty or old store may
    be migrated at any time."""
    if engine not in _engines_with_tables:
        if not {Claim.__tablename__, Run.__tablename__, Result.__tablename__} <= set(inspect(engine).get_table_names()):
            return False
        behind = schema_behind(engine)
        if behind is not None:
            raise SchemaBehind(behind)
        _engines_with_tables.add(engine)
    return True


def _sqlite_engine(path: Path, *, readonly: bool) -> Engine:
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    if readonly:
        # A URI filename (quoted: a path may hold ? or #); no connection pool, so that each connection decides
        # afresh whether it can share the write-ahead log or must read the file as immutable.
        uri = URL.create("sqlite", database=f"file:{quote(str(path.absolute()))}", query={"mode": "ro", "uri": "true"})
        engine = create_engine(uri, connect_args=connect_args, poolclass=NullPool)
        event.listen(engine, "do_connect", _connect_sqlite_readonly)
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder {path.parent} for the run store {path} ({exc.strerror}); set {ENV_VAR} "
                f"to a store in a folder you can write, e.g. sqlite:///{default_db_path()}"
            ) from None
        engine = create_engine(URL.create("sqlite", database=str(path)), connect_args=connect_args)

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


def _sqlite_code(error: BaseException) -> str:
    return getattr(error, "sqlite_errorname", "") or ""


def _connect_sqlite_readonly(dialect, _record, cargs, cparams):  # type: ignore[no-untyped-def]
    """Open `mode=ro`; if SQLite cannot use the write-ahead log's shared memory (no -wal/-shm files and a folder
    this user cannot create them in), open the file as immutable instead. No writer can be at work then: a
    writer keeps those files while it has the store open, and a later connection (there is no pool) uses them
    again. (A -wal file a crashed writer left without its -shm is not read then: its commits show once a writer
    opens the store again.)"""
    dbapi = dialect.loaded_dbapi
    connection = dbapi.connect(*cargs, **cparams)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header and the WAL index
        return connection
    except dbapi.OperationalError as exc:
        connection.close()
        code, text = _sqlite_code(exc), str(exc)
        if not (code in ("SQLITE_READONLY_DIRECTORY", "SQLITE_READONLY_CANTINIT", "SQLITE_CANTOPEN")
                or "readonly database" in text or "unable to open" in text):  # fmt: skip
            raise
    return dbapi.connect(f"{cargs[0]}&immutable=1", *cargs[1:], **cparams)


def _access_problem(path: Path, text: str) -> str:
    folder = path.parent
    if path.exists() and not os.access(path, os.R_OK):
        return (f"the run store {path} is not readable by you ({text}); ask its owner for read access, "
                f"or set {ENV_VAR} to another store")  # fmt: skip
    if not folder.is_dir():
        return f"cannot open the run store {path}: the folder {folder} does not exist; check {ENV_VAR}"
    readers = "`eca runs`, `eca claims` and the leaderboard can still read it; " if path.exists() else ""
    if not os.access(folder, os.W_OK | os.X_OK):
        return (f"cannot write the run store {path}: its folder {folder} is read-only for you ({text}); {readers}to "
                f"record runs set {ENV_VAR} to a store in a folder you can write, e.g. sqlite:///{default_db_path()}")
    if path.exists() and not os.access(path, os.W_OK):
        return (f"cannot write the run store {path}: the file is read-only for you ({text}); {readers}to record "
                f"runs set {ENV_VAR} to a store you can write, e.g. sqlite:///{default_db_path()}")
    return f"cannot open the run store {path} ({text}); check the path and its permissions, or {ENV_VAR}"


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

    engine = engine or Store.from_env().engine()
    refuse_newer_schema(engine, current_revision(engine))
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


# --- the same as plain functions, for callers that hold a URL (the training glue, `eca submit`) -------------------


def make_engine(url: str | URL | None = None, *, readonly: bool = False) -> Engine:
    return Store.at(url).engine(readonly=readonly)


def writer_engine(url: str | URL | None = None) -> Engine:
    return Store.at(url).writer()


def sqlite_path(url: str | URL | None = None) -> Path | None:
    return Store.at(url).path
