"""`eca runs` and `eca claims` read the store as the leaderboard does: a run that stopped beating is `lost`, and a
store at an older schema is named in one line (a reader never migrates)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import update

from ecaplatform.cli import main as eca
from ecaplatform.tracking import writes
from ecaplatform.tracking.schema import Run, utcnow
from ecaplatform.tracking.store import make_engine, session_scope, upgrade, writer_engine


def table_rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}


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
