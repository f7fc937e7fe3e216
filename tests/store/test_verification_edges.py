"""Edges of the verification rule and of `lost` that mutation testing (`make mutation`) found untested: each test
names the mistake it catches."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.schema import Claim, Result, Run
from ecaplatform.store.verification import (
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    LOST,
    NOT_REPRODUCED,
    VERIFIED,
    display_order,
    disqualification,
    heartbeat_interval_s,
    heartbeat_timeout_s,
    lost_condition,
    run_status,
    run_status_expression,
    status_of,
)

FULL = {"dataset": "imagenet", "split": "val", "num_samples": 50000, "num_classes": 1000, "hash": "f" * 64}


def _claim(metric: str = "top1", **fields: object) -> Claim:
    base: dict[str, object] = {"id": "c", "paper": "p", "label": "l", "backbone": "b", "method": "m",
                               "model": "eca_resnet50", "dataset": "imagenet", "split": "val",
                               "expected_samples": 50000, "expected_classes": 1000, "metric": metric,
                               "claimed": 77.48, "tolerance": 0.1, "source": "s", "public": True, "position": 0}
    return Claim(**{**base, **fields})  # fmt: skip


def _result(value: float | None = 77.45, run_id: str = "r", **fields: object) -> Result:
    base: dict[str, object] = {"run_id": run_id, "model_name": "eca_resnet50", "dataset": "imagenet",
                               "split": "val", "metrics": {"top1": value, "top5": 93.0}, "samples_evaluated": 50000,
                               "fingerprint": dict(FULL), "pipeline": "torchvision"}  # fmt: skip
    return Result(**{**base, **fields})


# --- disqualification --------------------------------------------------------------------------------------------


def test_a_qualifying_result_needs_no_run_status_argument() -> None:
    # The default run status is "succeeded" (callers holding a result of a finished run pass none).
    assert disqualification(_claim(), _result()) is None


@pytest.mark.parametrize("fingerprint", [{**FULL, "split": "test"}, {**FULL, "dataset": "digits"}])
def test_a_fingerprint_naming_another_dataset_or_split_disqualifies(fingerprint: dict[str, object]) -> None:
    # Either one wrong (not only both) is another data set: the result's own columns may still say imagenet/val.
    assert disqualification(_claim(), _result(fingerprint=fingerprint)) == (
        "its dataset fingerprint does not name the claim's dataset and split")


def test_a_claim_on_a_metric_the_result_does_not_have_is_disqualified_not_an_error() -> None:
    assert disqualification(_claim(metric="top10"), _result()) == "it has no top10 value"


def test_a_claim_takes_its_metric_by_name_and_older_results_have_top1_and_top5() -> None:
    box_ap = _claim(metric="box_ap", task="detection", claimed=40.0)
    assert status_of(box_ap, [(_result(metrics={"box_ap": 39.95, "top1": 90.0}), "succeeded")]).verified_value == 39.95
    # What an older ecaplatform writes into a migrated store (a run started before the upgrade): the columns only.
    assert status_of(_claim(), [(_result(metrics={}, top1=77.45), "succeeded")]).status == VERIFIED


def test_the_tolerance_edge_itself_verifies() -> None:
    claim = _claim()
    edge = claim.claimed - claim.tolerance - 1e-9  # the rule is `value >= claimed - tolerance - 1e-9`
    assert status_of(claim, [(_result(edge), "succeeded")]).status == VERIFIED
    assert status_of(claim, [(_result(edge - 1e-6), "succeeded")]).status == NOT_REPRODUCED


# --- status_of and display order ---------------------------------------------------------------------------------


def test_display_order_is_public_first_then_position_then_id() -> None:
    claims = [_claim(id="b", public=False, position=0), _claim(id="z", public=True, position=2),
              _claim(id="a", public=False, position=0), _claim(id="y", public=True, position=1),
              _claim(id="c", public=False, position=1), _claim(id="p", public=False, position=None)]  # fmt: skip
    # No position counts as 0.
    assert [c.id for c in display_order(claims)] == ["y", "z", "a", "b", "p", "c"]


def test_of_equal_best_results_the_first_stays_the_evidence() -> None:
    # A later result with the same value must not move the evidence (nor the reason shown beside it).
    claim = _claim()
    found = [(_result(77.45, "first"), "succeeded"), (_result(77.45, "second"), "succeeded"),
             (_result(78.0, "other-1", samples_evaluated=10), "succeeded"),
             (_result(78.0, "other-2", pipeline="dali-gpu"), "succeeded")]  # fmt: skip
    status = status_of(claim, found)
    assert (status.status, status.evidence_run_id, status.best_other_run_id) == (VERIFIED, "first", "other-1")
    assert status.best_other_reason == "10 samples counted for a split of 50000 (each must count once)"


# --- run status: lost --------------------------------------------------------------------------------------------

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=timezone.utc)


def test_the_heartbeat_timeout_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECA_HEARTBEAT_TIMEOUT_S", raising=False)
    assert heartbeat_timeout_s() == DEFAULT_HEARTBEAT_TIMEOUT_S == 300.0
    assert heartbeat_interval_s() == 60.0
    monkeypatch.setenv("ECA_HEARTBEAT_TIMEOUT_S", "")
    assert heartbeat_timeout_s() == 300.0
    monkeypatch.setenv("ECA_HEARTBEAT_TIMEOUT_S", "12.5")
    assert heartbeat_timeout_s() == 12.5 and heartbeat_interval_s() == 2.5
    monkeypatch.setenv("ECA_HEARTBEAT_TIMEOUT_S", "0.5")  # any positive number of seconds, also below one
    assert heartbeat_timeout_s() == 0.5
    for bad in ("0", "-3", "soon", "nan"):
        monkeypatch.setenv("ECA_HEARTBEAT_TIMEOUT_S", bad)
        with pytest.raises(ValueError) as info:
            heartbeat_timeout_s()
        assert str(info.value) == (f"ECA_HEARTBEAT_TIMEOUT_S={bad!r} is not a number of seconds above 0; "
                                   "unset it for the default 300")  # fmt: skip


def test_a_run_is_lost_only_once_its_silence_exceeds_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECA_HEARTBEAT_TIMEOUT_S", "60")
    beat = NOW - timedelta(seconds=60)
    assert run_status("running", beat, now=NOW) == "running"  # exactly the timeout: not yet
    assert run_status("running", beat - timedelta(microseconds=1), now=NOW) == LOST
    assert run_status("running", None, None, now=NOW) == "running"  # no sign of life recorded: nothing to judge
    # A heartbeat stored with another UTC offset is the same instant, not a naive UTC time.
    plus_two = timezone(timedelta(hours=2))
    assert run_status("running", (NOW - timedelta(seconds=30)).astimezone(plus_two), now=NOW) == "running"
    assert run_status("running", (NOW - timedelta(seconds=90)).astimezone(plus_two), now=NOW) == LOST
    # A naive time (SQLite hands those back) is UTC.
    assert run_status("running", (NOW - timedelta(seconds=30)).replace(tzinfo=None), now=NOW) == "running"


def _run(run_id: str, **times: datetime | None) -> Run:
    return Run(id=run_id, job_name="j", command="validate", model_name="eca_resnet50", status="running", **times)


def test_the_sql_lost_condition_uses_heartbeat_then_start_then_creation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECA_HEARTBEAT_TIMEOUT_S", "60")
    old, recent = NOW - timedelta(days=1), NOW - timedelta(seconds=10)
    runs = {
        "beating": _run("beating", heartbeat_at=recent, started_at=old, created_at=old),
        "silent": _run("silent", heartbeat_at=old, started_at=recent, created_at=recent),
        # Queued long ago, started just now, before heartbeats existed: its start says it is alive.
        "started": _run("started", heartbeat_at=None, started_at=recent, created_at=old),
        # Never started nor beat, created long ago (a lost launch): its creation is the last sign of life.
        "created": _run("created", heartbeat_at=None, started_at=None, created_at=old),
        "edge": _run("edge", heartbeat_at=NOW - timedelta(seconds=60), started_at=old, created_at=old),
        # Only a running run can be lost: a finished one stopped beating because it finished.
        "done": _run("done", heartbeat_at=old, started_at=old, created_at=old),
    }
    runs["done"].status = "succeeded"
    engine = writer_engine()
    with session_scope(engine) as session:
        session.add_all(runs.values())
    with session_scope(engine) as session:
        lost = set(session.scalars(select(Run.id).where(lost_condition(now=NOW))))
        shown = dict(session.execute(select(Run.id, run_status_expression(now=NOW))).all())
    assert lost == {"silent", "created"}
    assert shown == {"beating": "running", "silent": LOST, "started": "running", "created": LOST, "edge": "running",
                     "done": "succeeded"}
