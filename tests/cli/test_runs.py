"""`eca runs` and `eca claims` read the store as the leaderboard does: a run that stopped beating is `lost`, and a
store at an older schema is named in one line (a reader never migrates)."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import Engine, update

from ecaplatform.cli.main import main as eca
from ecaplatform.store import writes
from ecaplatform.store.database import make_engine, session_scope, upgrade, writer_engine
from ecaplatform.store.schema import Run, utcnow


def table_rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}


def _result(engine: Engine, run_id: str, top1: float | None) -> None:
    writes.add_result(engine, run_id, model_name="resnet18", dataset="digits", split="val", top1=top1, top5=None,
                      loss=None, samples_evaluated=360, fingerprint={})  # fmt: skip


def test_eca_runs_shows_top1_for_every_run_with_a_result(
    store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fit run shows its best val top-1 over the epochs (not its final result); a validate or test run, which
    records no epochs, shows its result's top-1; a run without either shows nothing (on SQLite and PostgreSQL)."""
    monkeypatch.setenv("ECA_DB_URL", store_url)
    engine = writer_engine(store_url)
    for run_id, command in [("fit1", "fit"), ("val1", "validate"), ("test1", "test"), ("bare", "validate")]:
        writes.start_run(engine, run_id, job_name="j", command=command, model_name="resnet18")
    for epoch, top1 in enumerate([91.5, 93.25, 92.0]):
        writes.record_epoch_metrics(engine, "fit1", epoch, epoch * 10, {"val_top1": top1})
    _result(engine, "fit1", 92.0)  # the last epoch's weights: below the best epoch
    _result(engine, "val1", 88.25)
    _result(engine, "test1", None)  # a result without top-1, then one with
    _result(engine, "test1", 77.5)
    engine.dispose()

    assert eca(["runs"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert "93.25" in rows["fit1"] and "92.00" not in rows["fit1"]
    assert "88.25" in rows["val1"] and "77.50" in rows["test1"]
    assert not [cell for cell in rows["bare"] if re.fullmatch(r"\d+\.\d\d", cell)], rows["bare"]


def test_a_run_that_stopped_beating_is_lost_in_eca_runs(capsys: pytest.CaptureFixture[str]) -> None:
    engine = writer_engine()
    for run_id in ("alive", "dead"):
        writes.start_run(engine, run_id, job_name="j", command="fit", model_name="resnet18")
    with session_scope(engine) as session:  # the dead one's process last beat an hour ago
        session.execute(update(Run).where(Run.id == "dead").values(heartbeat_at=utcnow() - timedelta(hours=1)))

    assert eca(["runs"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert "lost" in rows["dead"] and "running" in rows["alive"]
    assert eca(["runs", "--status", "lost"]) == 0
    assert set(table_rows(capsys.readouterr().out)) == {"dead"}
    assert eca(["runs", "--status", "running"]) == 0
    assert set(table_rows(capsys.readouterr().out)) == {"alive"}
    assert eca(["runs", "--show", "dead"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "lost"


@pytest.mark.parametrize("command", [["runs"], ["runs", "--show", "x"], ["claims"]])
def test_a_store_at_an_older_schema_is_named_in_one_line(capsys: pytest.CaptureFixture[str], command: list[str]
                                                         ) -> None:  # fmt: skip
    upgrade(make_engine(), "0001_initial")  # as an older ecaplatform left it
    assert eca(command) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at schema 0001_initial" in err and "eca db upgrade" in err, err
