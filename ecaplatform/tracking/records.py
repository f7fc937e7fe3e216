"""Writing runs, per-epoch metrics and results. Every function is one committed transaction, so a crash
loses at most the write in flight; the recorder callback and `eca submit` are the only callers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, select

from ecaplatform.tracking.claims import ensure_claims
from ecaplatform.tracking.schema import EpochMetric, Result, Run, utcnow
from ecaplatform.tracking.store import session_scope

TERMINAL_STATUSES = ("succeeded", "failed", "interrupted")
ERROR_MAX_CHARS = 4000


def _claims_loaded_for(engine: Engine, fields: Mapping[str, Any]) -> None:
    # runs.claim_id references claims.id: the registry must be in the store before a run names a claim.
    if fields.get("claim_id"):
        ensure_claims(engine)


def upsert_run(engine: Engine, run_id: str, **fields: Any) -> None:
    """Create the run or update the given fields of an existing one (a resume or requeue continues the record)."""
    _claims_loaded_for(engine, fields)
    with session_scope(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            fields.setdefault("job_name", "unnamed")
            fields.setdefault("command", "fit")
            fields.setdefault("model_name", "unknown")
            fields.setdefault("status", "running")
            session.add(Run(id=run_id, **fields))
            return
        for name, value in fields.items():
            setattr(run, name, value)


def start_run(engine: Engine, run_id: str, **fields: Any) -> None:
    """Mark the run running (creating it if `eca submit` did not); an earlier error or end time is cleared."""
    _claims_loaded_for(engine, fields)
    with session_scope(engine) as session:
        run = session.get(Run, run_id)
        now = utcnow()
        if run is None:
            fields.setdefault("job_name", "unnamed")
            fields.setdefault("command", "fit")
            fields.setdefault("model_name", "unknown")
            session.add(Run(id=run_id, status="running", created_at=now, started_at=now, **fields))
            return
        for name, value in fields.items():
            if value is not None:  # keep what `eca submit` recorded (e.g. the SLURM job id) unless we know better
                setattr(run, name, value)
        run.status, run.error, run.ended_at = "running", None, None
        run.started_at = run.started_at or now


def finish_run(engine: Engine, run_id: str, status: str, error: str | None = None, **fields: Any) -> None:
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"status {status!r}: a finished run is one of {TERMINAL_STATUSES}")
    with session_scope(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise LookupError(f"run {run_id!r} is not in the store {engine.url}")
        run.status, run.ended_at = status, utcnow()
        run.error = error[:ERROR_MAX_CHARS] if error else None
        for name, value in fields.items():
            if value is not None:
                setattr(run, name, value)


def record_epoch_metrics(engine: Engine, run_id: str, epoch: int, step: int, metrics: Mapping[str, float]) -> int:
    """Upsert one epoch's scalars on (run, epoch, name) and keep Run.best_top1; returns how many were written."""
    values = {name: float(v) for name, v in metrics.items() if v is not None and math.isfinite(float(v))}
    if not values:
        return 0
    with session_scope(engine) as session:
        existing = {
            row.name: row
            for row in session.scalars(
                select(EpochMetric).where(EpochMetric.run_id == run_id, EpochMetric.epoch == epoch)
            )
        }
        for name, value in values.items():
            row = existing.get(name)
            if row is None:
                session.add(EpochMetric(run_id=run_id, epoch=epoch, step=step, name=name, value=value))
            else:
                row.value, row.step = value, step
        if "val_top1" in values:
            run = session.get(Run, run_id)
            if run is not None and (run.best_top1 is None or values["val_top1"] > run.best_top1):
                run.best_top1 = values["val_top1"]
    return len(values)


def add_result(
    engine: Engine,
    run_id: str,
    *,
    model_name: str,
    dataset: str,
    split: str,
    top1: float | None,
    top5: float | None,
    loss: float | None,
    samples_evaluated: int,
    fingerprint: Mapping[str, Any],
) -> int:
    """Store a final evaluation (percent accuracies) and return its id."""
    with session_scope(engine) as session:
        result = Result(
            run_id=run_id, model_name=model_name, dataset=dataset, split=split, top1=top1, top5=top5, loss=loss,
            samples_evaluated=int(samples_evaluated), fingerprint=dict(fingerprint),
        )  # fmt: skip
        session.add(result)
        session.flush()
        return result.id
