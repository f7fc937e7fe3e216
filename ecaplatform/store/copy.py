"""`eca db copy SRC DST`: a whole run store into an empty one (SQLite -> PostgreSQL when a lab outgrows one machine,
and back), every row with its id, verified before it is committed.

Generic over the tables of schema.py (`Base.metadata.sorted_tables`, parents before children), so a column added
by a later migration is copied without a change here. Both stores must be at this version's schema: the source
is read as it is, the target is migrated to the head first. The copy is one transaction on the target: if the
row counts or a table's checksum differ afterwards, it is rolled back and the target stays empty.

The checksum of a table is a SHA-256 over its rows in primary-key order, each row's values normalised the same way
on either backend: datetimes as UTC ISO text (SQLite hands back naive ones; the store writes UTC), floats by repr,
JSON by sorted dumps, bytes as hex. Text keys are ordered bytewise (PostgreSQL's "C" collation, SQLite's own).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Float, Integer, String, Table, func, inspect, select, text
from sqlalchemy.sql.type_api import TypeEngine
from tqdm import tqdm

from ecaplatform.store.database import (
    Store,
    StoreError,
    current_revision,
    ensure_schema,
    head_revision,
    is_known_revision,
    refuse_newer_schema,
)
from ecaplatform.store.schema import Base

BATCH_ROWS = 500


@dataclass(frozen=True)
class TableCopy:
    name: str
    rows: int
    checksum: str  # hex SHA-256, the same on both stores


def copy_store(source: Store, target: Store, *, progress: bool | None = None) -> list[TableCopy]:
    """Copy every table of `source` into the empty `target` (StoreError, one line, for what cannot be copied).
    `progress`: a bar per table (None: only on a terminal)."""
    reader = source.open_reader()
    writer = target.engine()
    try:
        _check_source(source, reader)
        _check_target_empty(target, writer)
        ensure_schema(writer)  # creates or migrates the target's schema to the head (refuses a newer one)
        # One snapshot of the source: on PostgreSQL, rows committed while the copy reads must not show in a later
        # table only (a result without its run). A SQLite reader's one transaction is a snapshot already.
        snapshot = {"isolation_level": "REPEATABLE READ"} if source.dialect == "postgresql" else {}
        with reader.connect().execution_options(**snapshot) as src, writer.begin() as dst:
            copied = [_copy_table(table, src, dst, progress) for table in Base.metadata.sorted_tables]
            if dst.dialect.name == "postgresql":
                _fix_sequences(dst)
        return copied
    finally:
        reader.dispose()
        writer.dispose()


def _check_source(source: Store, engine: Engine) -> None:
    revision, head = current_revision(engine), head_revision()
    if revision is None:
        raise StoreError(f"{source.display_url} is not a run store (it has no schema revision); nothing to copy")
    refuse_newer_schema(engine, revision)
    if revision != head and is_known_revision(revision):
        raise StoreError(f"the source store {source.display_url} is at schema {revision}, older than this version "
                         f"copies ({head}); migrate it first: ECA_DB_URL=<source> eca db upgrade")  # fmt: skip


def _check_target_empty(target: Store, engine: Engine) -> None:
    present = set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        counts = {table.name: connection.scalar(select(func.count()).select_from(table))
                  for table in Base.metadata.sorted_tables if table.name in present}  # fmt: skip
    held = {name: count for name, count in counts.items() if count}
    if held:
        rows = ", ".join(f"{name}: {count}" for name, count in held.items())
        raise StoreError(f"the target store {target.display_url} is not empty ({rows} rows); copy into a new, empty "
                         "database (a new SQLite file, or `createdb` for PostgreSQL): nothing was copied")  # fmt: skip


def _copy_table(table: Table, src: Connection, dst: Connection, progress: bool | None) -> TableCopy:
    total = src.scalar(select(func.count()).select_from(table)) or 0
    source_sum, utc = hashlib.sha256(), _utc_columns(table)
    with tqdm(total=total, desc=table.name, unit="row", disable=None if progress is None else not progress) as bar:
        for batch in src.execute(_in_key_order(table, src).execution_options(yield_per=BATCH_ROWS)).partitions():
            rows = [dict(row._mapping) for row in batch]
            _add_rows(source_sum, table, rows)  # as read: the target's rows must come out the same
            dst.execute(table.insert(), [{key: utc(key, value) for key, value in row.items()} for row in rows])
            bar.update(len(rows))
    copied = dst.scalar(select(func.count()).select_from(table))
    target_sum = hashlib.sha256()
    _add_rows(target_sum, table, (dict(row._mapping) for row in dst.execute(_in_key_order(table, dst))))
    if copied != total or target_sum.hexdigest() != source_sum.hexdigest():
        raise StoreError(f"copying table {table.name} did not verify ({total} rows read, {copied} written, checksums "
                         f"{source_sum.hexdigest()[:12]} / {target_sum.hexdigest()[:12]}): nothing was copied")
    return TableCopy(table.name, total, source_sum.hexdigest())


def _in_key_order(table: Table, connection: Connection) -> Any:
    bytewise = connection.dialect.name == "postgresql"
    keys = [column.collate("C") if bytewise and isinstance(column.type, String) else column
            for column in table.primary_key.columns]  # fmt: skip
    return select(table).order_by(*keys)


def _utc_columns(table: Table) -> Callable[[str, Any], Any]:
    """A row value as the target is to store it: datetimes made UTC-aware (a naive one from SQLite is UTC)."""
    dates = {column.name for column in table.columns if isinstance(column.type, DateTime)}
    return lambda key, value: _utc(value) if key in dates and value is not None else value


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _add_rows(digest: Any, table: Table, rows: Iterable[dict[str, Any]]) -> None:
    kinds = [(column.name, column.type) for column in table.columns]
    for row in rows:
        values = [_normal(row[name], kind) for name, kind in kinds]
        digest.update(json.dumps(values, sort_keys=True, default=str).encode() + b"\n")


def _normal(value: Any, kind: TypeEngine[Any]) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(kind, Float) or isinstance(value, float):
        return repr(float(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(kind, Integer) and not isinstance(value, bool):
        return int(value)
    return value  # str, bool, and JSON values (dumped with sorted keys with the row)


def _fix_sequences(dst: Connection) -> None:
    """PostgreSQL's id sequences start at 1 whatever rows were inserted with their ids: move each past its max."""
    for table in Base.metadata.sorted_tables:
        key = table.autoincrement_column  # None for a text key, or one that is another table's id
        if key is not None:
            dst.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key.name}'), "
                             f"COALESCE(MAX({key.name}), 1), MAX({key.name}) IS NOT NULL) FROM {table.name}"))
