"""The run store on SQLite and on a real PostgreSQL server: migrations, round trips, read-only mode, concurrency."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.exc import DBAPIError

from ecaplatform.cli.main import main as eca
from ecaplatform.store.database import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    schema_behind,
    session_scope,
    writer_engine,
)
from ecaplatform.store.schema import Base, EpochMetric, Result, Run
from ecaplatform.store.writes import add_result, finish_run, record_epoch_metrics, start_run, upsert_run

TABLES = {"claims", "runs", "epoch_metrics", "results", "alembic_version"}


def test_first_write_creates_the_schema_at_the_newest_revision(store_url: str) -> None:
    engine = writer_engine(store_url)
    assert current_revision(engine) == head_revision() is not None
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_migrations_create_exactly_the_tables_of_schema_py(store_url: str) -> None:
    engine = writer_engine(store_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def _migrate(engine: Engine, to: str, *, down: bool = False) -> None:
    # Alembic itself, not store.upgrade, which would mark the store up to date for this process.
    with engine.connect() as connection:
        (command.downgrade if down else command.upgrade)(alembic_config(connection), to)
        connection.commit()


OLD_RESULTS = [("r50", "eca_resnet50", 77.5, 93.7, 50000), ("r101-subset", "eca_resnet101", 80.0, None, 500)]


@pytest.mark.parametrize("revision", ["0002_run_heartbeat", "0004_result_outcomes"])
def test_a_store_an_older_version_wrote_reads_the_same_after_the_upgrade(
    store_url: str, revision: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows as an older ecaplatform wrote them (plain SQL: a claim without task, results with top1/top5 only and,
    before 0003, no pipeline): the next writer migrates them, and `eca claims --json` judges them as that version
    did. Back down at the old revision, the new columns go and every row stays."""
    old = make_engine(store_url)
    _migrate(old, revision)
    with old.begin() as connection:
        connection.execute(text("INSERT INTO claims VALUES ('c', 'p', 'l', 'b', 'm', 'eca_resnet50', 'imagenet', "
                                "'val', 50000, 1000, 'top1', 77.48, 0.1, 's', :yes, 0)"), {"yes": True})  # fmt: skip
        for run_id, model, top1, top5, samples in OLD_RESULTS:
            row = {"run": run_id, "model": model, "top1": top1, "top5": top5, "n": samples, "now": "2026-12-01 10:00",
                   "fp": json.dumps({"dataset": "imagenet", "split": "val", "num_samples": samples,
                                     "num_classes": 1000})}  # fmt: skip
            connection.execute(text("INSERT INTO runs (id, job_name, command, model_name, status, created_at, config, "
                                    "versions, num_nodes, world_size) VALUES (:run, 'j', 'validate', :model, "
                                    "'succeeded', :now, '{}', '{}', 1, 1)"), row)  # fmt: skip
            connection.execute(text("INSERT INTO results (run_id, model_name, dataset, split, top1, top5, "
                                    "samples_evaluated, fingerprint, created_at) VALUES (:run, :model, 'imagenet', "
                                    "'val', :top1, :top5, :n, :fp, :now)"), row)  # fmt: skip
    assert revision in (schema_behind(old) or "")
    old.dispose()

    writer_engine(store_url).dispose()  # the first write of a newer ecaplatform migrates it
    monkeypatch.setenv("ECA_DB_URL", store_url)
    assert eca(["claims", "--json"]) == 0
    claims = {claim["id"]: claim for claim in json.loads(capsys.readouterr().out)}
    r50 = [claims[f"eca_resnet50-imagenet-{metric}"] for metric in ("top1", "top5")]
    assert [(c["status"], c["verified_value"]) for c in r50] == [("Verified", 77.5), ("Verified", 93.7)]
    r101 = claims["eca_resnet101-imagenet-top1"]
    assert (r101["status"], r101["best_other_value"], r101["best_other_reason"][:8]) == ("Unverified", 80.0, "a subset")
    engine = make_engine(store_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT task FROM claims")).scalars().all() == ["classification"]
        stored = connection.execute(select(Result.metrics, Result.top1, Result.pipeline).order_by(Result.id)).all()
    assert [tuple(row) for row in stored] == [({"top1": 77.5, "top5": 93.7}, 77.5, None), ({"top1": 80.0}, 80.0, None)]

    _migrate(engine, revision, down=True)
    assert current_revision(engine) == revision
    columns = {column["name"] for column in inspect(engine).get_columns("results")}
    assert {"top1", "top5"} <= columns and "metrics" not in columns and ("pipeline" in columns) == (revision > "0003")
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Result.__table__)).scalar() == len(OLD_RESULTS)
    engine.dispose()


# (run, samples, the `metrics` 0005 wrote as JSON text, its top1 column): float32 percentages as the recorder kept
# them; a row an older version wrote after 0005 (`{}`, top1/top5 only); a value no whole number of images makes
# (99% of 360); detection's box AP, no proportion.
ROWS_AT_0005 = [
    ("partial", 203, '{"top1": 39.40886688232422, "top5": 73.89162445068359}', 39.40886688232422),
    ("whole", 50_000, "{}", 77.48200225830078),
    ("odd", 360, '{"top1": 60.0, "top5": 99.0}', 60.0),
    ("coco", 500, '{"box_ap": 38.12}', None),
]


def test_a_store_at_0005_keeps_exact_counts_after_the_upgrade(
    store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Results 0005 stored as float32 percentages get their exact counts (round(pct * n / 100)); readers then show
    the exact percentage (80 of 203: 39.4088669951, not 39.4088668823). Down at 0005 again, the rows stay."""
    old = make_engine(store_url)
    _migrate(old, "0005_task_metrics")
    with old.begin() as connection:
        for run_id, samples, metrics, top1 in ROWS_AT_0005:
            row = {"run": run_id, "n": samples, "metrics": metrics, "top1": top1, "now": "2026-12-01 10:00",
                   "fp": json.dumps({"dataset": "imagenet", "split": "val", "num_samples": samples,
                                     "num_classes": 1000})}  # fmt: skip
            connection.execute(text("INSERT INTO runs (id, job_name, command, model_name, status, created_at, config, "
                                    "versions, num_nodes, world_size) VALUES (:run, 'j', 'validate', 'eca_resnet50', "
                                    "'succeeded', :now, '{}', '{}', 1, 1)"), row)  # fmt: skip
            connection.execute(text("INSERT INTO results (run_id, model_name, dataset, split, metrics, top1, "
                                    "samples_evaluated, fingerprint, created_at) VALUES (:run, 'eca_resnet50', "
                                    "'imagenet', 'val', :metrics, :top1, :n, :fp, :now)"), row)  # fmt: skip
    old.dispose()

    engine = writer_engine(store_url)  # the first write of this version migrates it
    with session_scope(engine) as session:
        results = {r.run_id: r for r in session.scalars(select(Result))}
        assert {run_id: r.counts for run_id, r in results.items()} == {
            "partial": {"top1": {"correct": 80, "evaluated": 203}, "top5": {"correct": 150, "evaluated": 203}},
            "whole": {"top1": {"correct": 38_741, "evaluated": 50_000}},
            "odd": {"top1": {"correct": 216, "evaluated": 360}},
            "coco": None,
        }
        values = {run_id: r.metric_values for run_id, r in results.items()}
    assert f"{values['partial']['top1']:.10f}" == "39.4088669951" and values["whole"] == {"top1": 77.482}
    assert values["odd"] == {"top1": 60.0, "top5": 99.0} and values["coco"] == {"box_ap": 38.12}
    monkeypatch.setenv("ECA_DB_URL", store_url)
    assert eca(["claims", "--json", "--model", "eca_resnet50"]) == 0
    [top1] = [claim for claim in json.loads(capsys.readouterr().out) if claim["metric"] == "top1"]
    assert (top1["status"], top1["verified_value"], top1["evidence_run_id"]) == ("Verified", 77.482, "whole")

    _migrate(engine, "0005_task_metrics", down=True)
    columns = {column["name"] for column in inspect(engine).get_columns("results")}
    assert "metrics" in columns and not {"counts", "class_names"} & columns
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Result.__table__)).scalar() == len(ROWS_AT_0005)
    engine.dispose()


def test_run_metrics_and_results_round_trip(store_url: str) -> None:
    engine = writer_engine(store_url)
    start_run(engine, "r1", job_name="j", command="fit", model_name="eca_resnet50", config={"a": [1, 2]})
    record_epoch_metrics(engine, "r1", 0, 10, {"train_loss": 2.0, "val_top1": 51.0})
    record_epoch_metrics(engine, "r1", 1, 20, {"train_loss": 1.0, "val_top1": 63.5, "nan": float("nan")})
    record_epoch_metrics(engine, "r1", 1, 20, {"val_top1": 60.0})  # a re-sent epoch updates, never duplicates
    add_result(engine, "r1", model_name="eca_resnet50", dataset="digits", split="val", top1=60.0, top5=99.0,
               loss=1.0, samples_evaluated=360, fingerprint={"dataset": "digits", "num_samples": 360})  # fmt: skip
    finish_run(engine, "r1", "succeeded", checkpoint_sha256="ab" * 32)
    with session_scope(engine) as session:
        run = session.get(Run, "r1")
        assert (run.status, run.best_top1, run.config) == ("succeeded", 63.5, {"a": [1, 2]})
        assert run.started_at is not None and run.ended_at >= run.started_at
        values = {(m.epoch, m.name): m.value for m in run.metrics}
        assert values == {(0, "train_loss"): 2.0, (0, "val_top1"): 51.0, (1, "train_loss"): 1.0, (1, "val_top1"): 60.0}
        [result] = run.results
        assert (result.top1, result.samples_evaluated, result.fingerprint["num_samples"]) == (60.0, 360, 360)
    engine.dispose()


def test_a_queued_run_is_updated_started_restarted_and_finished_in_place(store_url: str) -> None:
    engine = writer_engine(store_url)
    upsert_run(engine, "r1", job_name="q", command="fit", model_name="m", status="queued", slurm_job_id="42")
    upsert_run(engine, "r1", slurm_job_id="43")  # only the fields given change
    finish_run(engine, "r1", "interrupted", error="preempted")
    start_run(engine, "r1", job_name="q", command="fit", model_name="m", slurm_job_id=None, host="node1")
    with session_scope(engine) as session:
        run = session.get(Run, "r1")
        assert (run.status, run.error, run.ended_at, run.slurm_job_id) == ("running", None, None, "43")
        first_start = run.started_at
    start_run(engine, "r1", host="node2")  # a requeued job: same run, first start kept
    with session_scope(engine) as session:
        assert (session.get(Run, "r1").started_at, session.get(Run, "r1").host) == (first_start, "node2")
    with pytest.raises(LookupError, match="'nope' is not in the store"):
        finish_run(engine, "nope", "failed")
    engine.dispose()


def test_read_only_engine_reads_but_cannot_write(store_url: str) -> None:
    writer = writer_engine(store_url)
    start_run(writer, "r1", job_name="j", command="fit", model_name="m")
    reader = make_engine(store_url, readonly=True)
    with session_scope(reader) as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 1
    with pytest.raises(DBAPIError, match="(?i)read-only|readonly"), session_scope(reader) as session:
        session.execute(text("DELETE FROM runs"))
    with session_scope(reader) as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 1
    reader.dispose()
    writer.dispose()


def test_eca_db_upgrade_creates_then_reports_up_to_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ECA_DB_URL", f"sqlite:///{tmp_path / 'new' / 'runs.db'}")
    assert eca(["db", "upgrade"]) == 0
    assert f"upgraded from empty to {head_revision()}" in capsys.readouterr().out
    assert eca(["db", "upgrade"]) == 0
    assert f"already at {head_revision()}" in capsys.readouterr().out
    assert eca(["db", "url"]) == 0
    assert capsys.readouterr().out.strip().endswith("new/runs.db")


def test_default_store_is_a_per_user_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ecaplatform.store.database import db_url

    monkeypatch.delenv("ECA_DB_URL")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert db_url() == f"sqlite:///{tmp_path / 'xdg' / 'ecaplatform' / 'runs.db'}"


# --- concurrency -------------------------------------------------------------------------------------------------

WRITERS = 8
EPOCHS = 15


def _write_one_run(url: str, index: int) -> None:
    """One process's whole run: created, one transaction per epoch, a result, finished; schema on first write."""
    engine = writer_engine(url)
    run_id = f"proc-{index}"
    start_run(engine, run_id, job_name=f"job-{index}", command="fit", model_name="eca_resnet18")
    for epoch in range(EPOCHS):
        record_epoch_metrics(engine, run_id, epoch, epoch * 10, {"train_loss": 1.0 / (epoch + 1), "val_top1": epoch})
    add_result(engine, run_id, model_name="eca_resnet18", dataset="digits", split="val", top1=50.0, top5=90.0,
               loss=1.0, samples_evaluated=360, fingerprint={})  # fmt: skip
    finish_run(engine, run_id, "succeeded")
    engine.dispose()


def _run_writers(url: str, count: int) -> None:
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_write_one_run, args=(url, i)) for i in range(count)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * count, "a writer raised (see its stderr above)"


def _assert_nothing_lost(url: str, count: int) -> None:
    engine = make_engine(url, readonly=True)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Run).where(Run.status == "succeeded")) == count
        assert session.scalar(select(func.count()).select_from(EpochMetric)) == count * EPOCHS * 2
        assert session.scalar(select(func.count()).select_from(Result)) == count
        assert session.scalar(select(func.max(Run.best_top1))) == EPOCHS - 1
    engine.dispose()


def test_eight_processes_writing_one_sqlite_file_lose_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"  # no schema yet: the writers race to create it too
    _run_writers(url, WRITERS)
    _assert_nothing_lost(url, WRITERS)


@pytest.mark.postgres
def test_concurrent_writers_on_postgres_lose_nothing(fresh_postgres_url: str) -> None:
    _run_writers(fresh_postgres_url, 4)
    _assert_nothing_lost(fresh_postgres_url, 4)


def test_eca_runs_filters_and_shows_one_run(capsys: pytest.CaptureFixture[str]) -> None:
    engine = writer_engine()
    for index, (model, status) in enumerate([("eca_resnet50", "succeeded"), ("resnet50", "failed"),
                                              ("eca_resnet50", "failed")]):  # fmt: skip
        start_run(engine, f"run-{index}", job_name=f"job-{index}", command="fit", model_name=model)
        finish_run(engine, f"run-{index}", status, error="boom" if status == "failed" else None)
    record_epoch_metrics(engine, "run-2", 0, 5, {"val_top1": 12.5})

    def listed(*args: str) -> list[str]:
        assert eca(["runs", *args]) == 0
        return sorted(line.split()[0] for line in capsys.readouterr().out.splitlines()[2:])

    assert listed() == ["run-0", "run-1", "run-2"]
    assert listed("--status", "failed") == ["run-1", "run-2"]
    assert listed("--status", "failed", "--model", "eca_resnet50") == ["run-2"]
    assert len(listed("--limit", "1")) == 1
    assert eca(["runs", "--show", "run-2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["error"], shown["metrics"][0]["value"]) == ("failed", "boom", 12.5)
    assert eca(["runs", "--show", "nope"]) == 1
    assert "no run with id 'nope'" in capsys.readouterr().err
