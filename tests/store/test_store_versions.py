"""Store versions and moving a store: a writer refuses a store that a newer ecaplatform migrated (readers still read
it); `eca db copy` moves a whole store between SQLite and a real PostgreSQL server, ids kept, verified per table,
and refuses a non-empty target or a source at another schema revision."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic import command
from sqlalchemy import Engine, func, inspect, select, text

from ecaplatform.cli.main import main as eca
from ecaplatform.store import copy as store_copy
from ecaplatform.store.claims import ensure_claims
from ecaplatform.store.database import (
    SchemaAhead,
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    writer_engine,
)
from ecaplatform.store.outcomes import Outcomes
from ecaplatform.store.schema import Base, Result
from ecaplatform.store.writes import add_result, finish_run, record_epoch_metrics, start_run, upsert_run

FUTURE = "0099_from_a_newer_ecaplatform"


def _migrate(url: str, to: str = "head") -> Engine:
    """The store at `to`, migrated by Alembic itself (store.upgrade would mark it up to date for this process)."""
    engine = make_engine(url)
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), to)
        connection.commit()
    return engine


def _pretend_newer(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})


def test_a_writer_refuses_a_store_that_a_newer_ecaplatform_migrated(
    store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = _migrate(store_url)
    start_run(engine, "r1", job_name="j", command="fit", model_name="m")
    _pretend_newer(engine)
    engine.dispose()
    with pytest.raises(SchemaAhead) as refused:
        writer_engine(store_url)
    message = str(refused.value)
    assert FUTURE in message and head_revision() in message and "upgrade ecaplatform" in message, message
    monkeypatch.setenv("ECA_DB_URL", store_url)
    assert eca(["db", "upgrade"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("eca db upgrade: ") and FUTURE in err and err.count("\n") == 1, err
    assert eca(["runs"]) == 0 and "r1" in capsys.readouterr().out  # readers still read it
    engine = make_engine(store_url)
    assert current_revision(engine) == FUTURE  # nothing was migrated or written
    engine.dispose()


# --- eca db copy ---------------------------------------------------------------------------------------------------


def _fill(url: str) -> None:
    """A store with every table in use: claims, a fit run with epoch metrics and a result with its outcomes, a
    validate run, a queued SLURM run."""
    engine = writer_engine(url)
    ensure_claims(engine)
    start_run(engine, "fit-1", job_name="demo", command="fit", model_name="eca_resnet18",
              config={"model": {"lr": 0.1, "kwargs": {"k": 3}}}, claim_id="eca_resnet18-imagenet-top1")  # fmt: skip
    for epoch in range(3):
        record_epoch_metrics(engine, "fit-1", epoch, 10 * (epoch + 1), {"train_loss": 1 / 3 + epoch, "val_top1": 40.1})
    target = np.arange(203) % 7
    right = np.arange(203) % 5 != 0
    outcomes = Outcomes(target=target, predicted=np.where(right, target, target + 1), top1=right, top5=right)
    add_result(engine, "fit-1", model_name="eca_resnet18", dataset="digits", split="val", samples_evaluated=203,
               fingerprint={"dataset": "digits", "num_samples": 203}, top1=outcomes.top1_percent,
               top5=outcomes.top5_percent, loss=0.1 + 0.2, outcomes=outcomes)  # fmt: skip
    finish_run(engine, "fit-1", "succeeded", checkpoint_sha256="ab" * 32)
    start_run(engine, "val-2", job_name="demo", command="validate", model_name="eca_resnet18")
    add_result(engine, "val-2", model_name="eca_resnet18", dataset="digits", split="val", samples_evaluated=360,
               fingerprint={"dataset": "digits", "num_samples": 360}, top1=50.0)  # fmt: skip
    upsert_run(engine, "queued-3", job_name="big", command="fit", model_name="eca_resnet50", status="queued",
               slurm_job_id="42")  # fmt: skip
    engine.dispose()


def _plain(value: Any) -> Any:
    """A value as the test compares it, independently of the copy's own normalisation."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    return bytes(value) if isinstance(value, memoryview) else value


def _snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = make_engine(url, readonly=True)
    with engine.connect() as connection:
        tables = {table.name: sorted((tuple(_plain(v) for v in row) for row in connection.execute(select(table))),
                                     key=repr) for table in Base.metadata.sorted_tables}  # fmt: skip
    engine.dispose()
    return tables


@pytest.mark.postgres
def test_eca_db_copy_moves_a_store_to_postgresql_and_back(
    tmp_path: Path, fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PGTZ", "Asia/Kolkata")  # a server session not in UTC: SQLite's naive datetimes must stay UTC
    source = f"sqlite:///{tmp_path / 'lab.db'}"
    _fill(source)
    before = _snapshot(source)
    assert all(before.values()), {name: len(rows) for name, rows in before.items()}

    assert eca(["db", "copy", source, fresh_postgres_url]) == 0
    out = capsys.readouterr().out
    for name, rows in before.items():
        assert any(line.split()[:2] == [name, str(len(rows))] for line in out.splitlines()), out
    assert "every table's row count and checksum match" in out
    assert _snapshot(fresh_postgres_url) == before
    postgres = writer_engine(fresh_postgres_url)
    assert current_revision(postgres) == head_revision()
    # The ids continue after the copied ones (PostgreSQL's sequences were moved past them).
    with postgres.connect() as connection:
        copied_max = connection.scalar(select(func.max(Result.id)))
    new_id = add_result(postgres, "val-2", model_name="eca_resnet18", dataset="digits", split="val",
                        samples_evaluated=10, fingerprint={}, top1=10.0)  # fmt: skip
    assert new_id == copied_max + 1
    record_epoch_metrics(postgres, "fit-1", 3, 40, {"val_top1": 41.0})
    postgres.dispose()

    back = f"sqlite:///{tmp_path / 'back' / 'lab.db'}"
    expected = _snapshot(fresh_postgres_url)
    assert eca(["db", "copy", fresh_postgres_url, back]) == 0
    assert _snapshot(back) == expected
    assert [row[0] for row in expected["runs"] if row[0] == "fit-1"] and before["claims"] == expected["claims"]


def test_eca_db_copy_refuses_a_target_that_is_not_empty(
    tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = f"sqlite:///{tmp_path / 'lab.db'}"
    _fill(source)
    engine = writer_engine(store_url)
    start_run(engine, "theirs", job_name="j", command="fit", model_name="m")
    engine.dispose()
    before = _snapshot(store_url)
    assert eca(["db", "copy", source, store_url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("eca db copy: ") and "not empty" in err and "runs: 1" in err and err.count("\n") == 1, err
    assert _snapshot(store_url) == before


@pytest.mark.parametrize("revision", ["0004_result_outcomes", FUTURE])
def test_eca_db_copy_refuses_a_source_at_another_revision(
    tmp_path: Path, revision: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = f"sqlite:///{tmp_path / 'old.db'}"
    engine = _migrate(source, "head" if revision == FUTURE else revision)
    if revision == FUTURE:
        _pretend_newer(engine)
    engine.dispose()
    target = tmp_path / "new.db"
    assert eca(["db", "copy", source, f"sqlite:///{target}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("eca db copy: ") and revision in err and head_revision() in err and err.count("\n") == 1
    assert ("upgrade ecaplatform" if revision == FUTURE else "eca db upgrade") in err, err
    assert not target.exists()  # the target is not even created


def test_a_copy_that_does_not_verify_leaves_the_target_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = f"sqlite:///{tmp_path / 'lab.db'}", f"sqlite:///{tmp_path / 'new.db'}"
    _fill(source)
    # A fault on the way: every datetime written an hour off. The checksums see it; nothing is committed.
    shift = store_copy._utc_columns
    monkeypatch.setattr(store_copy, "_utc_columns", lambda table: lambda key, value: (
        value + timedelta(hours=1) if isinstance(value, datetime) else shift(table)(key, value)))
    assert eca(["db", "copy", source, target]) == 1
    err = capsys.readouterr().err
    assert "did not verify" in err and "nothing was copied" in err and err.count("\n") == 1, err
    engine = make_engine(target, readonly=True)
    assert "runs" in inspect(engine).get_table_names()  # migrated, but holds no row
    assert all(not rows for rows in _snapshot(target).values())
    engine.dispose()
