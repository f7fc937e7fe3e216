"""The store survives its writers: a writer killed mid-transaction, and many writers at once, on SQLite and on a
real PostgreSQL server. Kept small (a few seconds each): the point is the outcome, not the load."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ecaplatform.store.database import make_engine, session_scope, writer_engine
from ecaplatform.store.schema import EpochMetric, Result, Run
from ecaplatform.store.writes import finish_run, record_epoch_metrics, start_run

# A writer that commits one run, then opens a write transaction (BEGIN IMMEDIATE: it holds the write lock),
# writes many rows with a tiny page cache so that uncommitted pages spill into the WAL file, says so, and waits
# to be killed before it commits.
KILLED_WRITER = """
import sys, time
from ecaplatform.store.schema import EpochMetric, Run
from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.writes import start_run

engine = writer_engine(sys.argv[1])
start_run(engine, "committed", job_name="j", command="fit", model_name="m")
with session_scope(engine) as session:
    session.connection().exec_driver_sql("PRAGMA cache_size=8")
    session.add(Run(id="uncommitted", job_name="j", command="fit", model_name="m", status="running"))
    session.flush()
    session.add_all(EpochMetric(run_id="committed", epoch=e, step=e, name=f"m{i}", value=1.0)
                    for e in range(100) for i in range(40))
    session.flush()
    print("in the middle of a transaction", flush=True)
    time.sleep(120)
"""


def test_a_writer_killed_mid_transaction_leaves_an_intact_store_that_others_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, url], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "in the middle of a transaction"
        assert (tmp_path / "store.db-wal").stat().st_size > 100_000  # the uncommitted rows reached the WAL file
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL

    with sqlite3.connect(tmp_path / "store.db") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("SELECT id FROM runs").fetchall() == [("committed",)]
        assert raw.execute("SELECT count(*) FROM epoch_metrics").fetchone() == (0,)
    raw.close()

    # The killed writer's lock died with it: the next writers write at once, not after the busy timeout.
    started = time.monotonic()
    engine = writer_engine(url)
    start_run(engine, "after", job_name="j", command="fit", model_name="m")
    record_epoch_metrics(engine, "committed", 0, 1, {"val_top1": 12.0})
    finish_run(engine, "committed", "failed", error="killed")
    assert time.monotonic() - started < 5
    with session_scope(engine) as session:
        assert sorted(session.scalars(select(Run.id))) == ["after", "committed"]
        assert session.get(Run, "committed").best_top1 == 12.0
    engine.dispose()


# --- many writers at once ----------------------------------------------------------------------------------------

WRITERS = 8
RUNS_PER_WRITER = 3
EPOCHS = 4
CLAIM = "eca_resnet18-imagenet-top1"

CONCURRENT_WRITER = f"""
import sys
from ecaplatform.store.database import writer_engine
from ecaplatform.store.writes import add_result, finish_run, record_epoch_metrics, start_run, upsert_run

url, index = sys.argv[1], int(sys.argv[2])
engine = writer_engine(url)  # the first writers race to create the schema, then to load the claims
for number in range({RUNS_PER_WRITER}):
    run_id = f"w{{index}}-r{{number}}"
    upsert_run(engine, run_id, job_name=f"job-{{index}}", command="fit", model_name="eca_resnet18",
               status="queued", claim_id="{CLAIM}", slurm_job_id=str(index))
    start_run(engine, run_id, job_name=f"job-{{index}}", command="fit", model_name="eca_resnet18", host=f"h{{index}}")
    for epoch in range({EPOCHS}):
        record_epoch_metrics(engine, run_id, epoch, epoch * 10, {{"train_loss": 1.0 / (epoch + 1), "val_top1": epoch}})
    add_result(engine, run_id, model_name="eca_resnet18", dataset="digits", split="val", top1=50.0 + index,
               top5=90.0, loss=1.0, samples_evaluated=360, fingerprint={{"dataset": "digits"}})
    finish_run(engine, run_id, "succeeded")
engine.dispose()
"""


def _write_concurrently(url: str) -> None:
    """WRITERS processes at once, each writing its runs through ecaplatform.store.writes; none may fail."""
    writers = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER, url, str(index)], stderr=subprocess.PIPE, text=True)
        for index in range(WRITERS)
    ]
    errors = []
    for writer in writers:
        _, stderr = writer.communicate(timeout=120)
        if writer.returncode != 0:
            errors.append(stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {writer.returncode}")
    assert errors == [], f"{len(errors)} of {WRITERS} writers failed"


def _assert_every_row_is_there(url: str) -> None:
    engine = make_engine(url, readonly=True)
    with session_scope(engine) as session:
        runs = session.execute(select(Run.id, Run.status, Run.best_top1, Run.slurm_job_id, Run.claim_id)).all()
        assert len(runs) == WRITERS * RUNS_PER_WRITER
        assert {(status, best, claim) for _, status, best, _, claim in runs} == {("succeeded", EPOCHS - 1, CLAIM)}
        assert {run_id: slurm for run_id, _, _, slurm, _ in runs} == {
            f"w{i}-r{n}": str(i) for i in range(WRITERS) for n in range(RUNS_PER_WRITER)
        }
        assert session.scalar(select(func.count()).select_from(EpochMetric)) == WRITERS * RUNS_PER_WRITER * EPOCHS * 2
        assert session.scalar(select(func.count()).select_from(Result)) == WRITERS * RUNS_PER_WRITER
    engine.dispose()


def test_eight_writer_processes_lose_nothing_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"  # no store yet: creating it is part of the race
    _write_concurrently(url)
    _assert_every_row_is_there(url)
    with sqlite3.connect(tmp_path / "shared.db") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    raw.close()


@pytest.mark.postgres
def test_eight_writer_processes_lose_nothing_on_postgres(fresh_postgres_url: str) -> None:
    _write_concurrently(fresh_postgres_url)
    _assert_every_row_is_there(fresh_postgres_url)


def test_the_same_run_written_by_many_processes_is_one_row(store_url: str) -> None:
    """A requeued job, its submitter and a re-sent epoch all write the same run: upserts, never duplicates."""
    url = store_url
    writer_engine(url).dispose()
    script = (
        "import sys\n"
        "from ecaplatform.store.database import writer_engine\n"
        "from ecaplatform.store.writes import record_epoch_metrics, upsert_run\n"
        "engine = writer_engine(sys.argv[1])\n"
        "for epoch in range(5):\n"
        "    upsert_run(engine, 'shared', job_name='j', command='fit', model_name='m', host=sys.argv[2])\n"
        "    record_epoch_metrics(engine, 'shared', epoch, epoch, {'val_top1': float(epoch)})\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, url, f"h{i}"]) for i in range(4)]
    assert [writer.wait(timeout=120) for writer in writers] == [0] * 4
    engine = make_engine(url, readonly=True)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 1
        assert session.scalar(select(func.count()).select_from(EpochMetric)) == 5
        assert session.get(Run, "shared").best_top1 == 4.0
    engine.dispose()

