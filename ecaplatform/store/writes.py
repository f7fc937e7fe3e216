"""Writing runs, per-epoch metrics and results. Every function is one committed transaction, so a crash
loses at most the write in flight; the recorder callback and `eca submit` are the only callers.

Runs and epoch metrics are written as one INSERT ... ON CONFLICT DO UPDATE (`store.upsert`): a requeued job,
its submitter and a re-sent epoch never race between reading a row and inserting it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, func, or_, update

from ecaplatform.store.claims import ensure_claims
from ecaplatform.store.database import session_scope, upsert
from ecaplatform.store.outcomes import Outcomes, encode
from ecaplatform.store.schema import EpochMetric, Result, ResultOutcome, Run, percent, utcnow

TERMINAL_STATUSES = ("succeeded", "failed", "interrupted")
ERROR_MAX_CHARS = 4000
PROPORTIONS = ("top1", "top5")  # metrics that are a share of the evaluated samples: stored as exact counts
# A float32 percentage (torchmetrics') is within ~1.2e-7 of its share relatively, so its count is off by at most
# n * 1.2e-7 images: round() recovers it exactly for millions of images. A value further from any count is none.
COUNT_TOLERANCE = 1e-6
NEW_RUN_DEFAULTS = {"job_name": "unnamed", "command": "fit", "model_name": "unknown", "status": "running"}


def _write_run(
    engine: Engine, run_id: str, fields: Mapping[str, Any], copy: Collection[str], set_: Mapping[str, Any] | None = None
) -> None:
    if fields.get("claim_id"):  # runs.claim_id references claims.id: the claims must be in the store first
        ensure_claims(engine)
    with session_scope(engine) as session:
        upsert(session, Run, {**NEW_RUN_DEFAULTS, **fields, "id": run_id}, keys=("id",), copy=copy, set_=set_)


def upsert_run(engine: Engine, run_id: str, **fields: Any) -> None:
    """Create the run or update the given fields of an existing one (a resume or requeue continues the record)."""
    _write_run(engine, run_id, fields, copy=fields)


def start_run(engine: Engine, run_id: str, **fields: Any) -> None:
    """Mark the run running (creating it if `eca submit` did not); an earlier error or end time is cleared, the
    first start time is kept, and a None field keeps what `eca submit` recorded (e.g. the SLURM job id)."""
    now = utcnow()
    known = [name for name, value in fields.items() if value is not None]
    restart = {"status": "running", "error": None, "ended_at": None, "started_at": func.coalesce(Run.started_at, now),
               "heartbeat_at": now}  # fmt: skip
    new = {**fields, "status": "running", "created_at": now, "started_at": now, "heartbeat_at": now}
    _write_run(engine, run_id, new, known, restart)


def heartbeat(engine: Engine, run_id: str) -> bool:
    """Say the running run's process is alive (one small UPDATE); False if the run is no longer running."""
    with session_scope(engine) as session:
        alive = update(Run).where(Run.id == run_id, Run.status == "running").values(heartbeat_at=utcnow())
        return session.execute(alive).rowcount > 0


def finish_run(engine: Engine, run_id: str, status: str, error: str | None = None, **fields: Any) -> None:
    """End the run with a terminal status (and the error, truncated); None fields keep their recorded value."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"status {status!r}: a finished run is one of {TERMINAL_STATUSES}")
    values = {name: value for name, value in fields.items() if value is not None}
    values.update(status=status, ended_at=utcnow(), error=error[:ERROR_MAX_CHARS] if error else None)
    with session_scope(engine) as session:
        if session.execute(update(Run).where(Run.id == run_id).values(**values)).rowcount == 0:
            raise LookupError(f"run {run_id!r} is not in the store {engine.url}")


def _finite(metrics: Mapping[str, float | None]) -> dict[str, float]:
    """The values that are numbers: a missing (None), NaN or infinite metric is left out, never stored."""
    return {name: float(v) for name, v in metrics.items() if v is not None and math.isfinite(float(v))}


def record_epoch_metrics(engine: Engine, run_id: str, epoch: int, step: int, metrics: Mapping[str, float]) -> int:
    """Upsert one epoch's scalars on (run, epoch, name) and keep Run.best_top1; returns how many were written."""
    values = _finite(metrics)
    if not values:
        return 0
    rows = [{"run_id": run_id, "epoch": epoch, "step": step, "name": name, "value": v} for name, v in values.items()]
    with session_scope(engine) as session:
        upsert(session, EpochMetric, rows, keys=("run_id", "epoch", "name"), copy=("step", "value"))
        # A finished epoch is a sign of life too.
        session.execute(update(Run).where(Run.id == run_id, Run.status == "running").values(heartbeat_at=utcnow()))
        if "val_top1" in values:
            best = values["val_top1"]
            higher = or_(Run.best_top1.is_(None), Run.best_top1 < best)
            session.execute(update(Run).where(Run.id == run_id, higher).values(best_top1=best))
    return len(values)


def count_of(value: float, evaluated: int) -> int | None:
    """How many of `evaluated` samples `value` percent of them is, or None where it is no whole number of them."""
    share = value * evaluated / 100
    correct = round(share)
    fits = evaluated > 0 and 0 <= correct <= evaluated and abs(share - correct) <= COUNT_TOLERANCE * evaluated
    return correct if fits else None


def add_result(
    engine: Engine,
    run_id: str,
    *,
    model_name: str,
    dataset: str,
    split: str,
    samples_evaluated: int,
    fingerprint: Mapping[str, Any],
    metrics: Mapping[str, float | None] | None = None,
    top1: float | None = None,
    top5: float | None = None,
    loss: float | None = None,
    pipeline: str | None = None,
    outcomes: Outcomes | None = None,
    class_names: Sequence[str] | None = None,
) -> int:
    """Store a final evaluation and return its id. `metrics` are its values by name, the names claims use
    (`top1`/`top5` are classification's two, percent; missing and non-finite values are left out). `pipeline` is
    the input pipeline that produced its batches (ecaplatform.store.pipelines.PIPELINES); None when the data module
    does not say. `outcomes`, the per-image outcomes, are stored with it in the same transaction once they agree
    with the result to the image (OutcomesError otherwise, and nothing is stored). The PROPORTIONS are kept as
    exact counts (the outcomes', else read back from the percentage) and stored percentages derive from them.
    `class_names`: class i's name, for readers that list classes."""
    values, n = _finite({"top1": top1, "top5": top5, **(metrics or {})}), int(samples_evaluated)
    counts = {name: count_of(values[name], n) for name in PROPORTIONS if name in values}
    if outcomes is not None:
        outcomes.check_against(values.get("top1"), values.get("top5"), n)
        counts.update({name: int(getattr(outcomes, name).sum()) for name in counts})
    exact = {name: {"correct": count, "evaluated": n} for name, count in counts.items() if count is not None}
    values.update({name: percent(c["correct"], n) for name, c in exact.items()})
    with session_scope(engine) as session:
        result = Result(
            run_id=run_id, model_name=model_name, dataset=dataset, split=split, metrics=values,
            top1=values.get("top1"), top5=values.get("top5"), loss=loss, samples_evaluated=n,
            fingerprint=dict(fingerprint), pipeline=pipeline, counts=exact or None,
            class_names=[str(name) for name in class_names] if class_names is not None else None,
        )  # fmt: skip
        session.add(result)
        session.flush()
        if outcomes is not None:
            stored = encode(outcomes)
            session.add(ResultOutcome(
                result_id=result.id, num_samples=stored.num_samples, class_dtype=stored.class_dtype,
                target=stored.target, predicted=stored.predicted, top1_bits=stored.top1_bits,
                top5_bits=stored.top5_bits,
            ))  # fmt: skip
        return result.id
