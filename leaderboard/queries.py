"""Read-only data access for the leaderboard: plain SQLAlchemy in, plain data (dataclasses, DataFrames) out.

Nothing here imports Streamlit, so the queries are testable and benchmarkable on their own; `leaderboard.data`
adds the caching. Every function takes an engine from `Store.reader()` (or None when the SQLite file does not exist
yet) and never writes. The claims board is `ecaplatform.store.board`'s, and claim statuses come from
`ecaplatform.store.verification`: the rule lives there, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import pandas as pd
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session

from ecaplatform.paper import paper_result
from ecaplatform.store.board import METRIC_NAMES, Board
from ecaplatform.store.database import has_tables
from ecaplatform.store.pipelines import pipeline_label
from ecaplatform.store.schema import Claim, EpochMetric, Result, Run
from ecaplatform.store.verification import LOST, evaluate_claims, run_status, run_status_expression

# The curves the run page draws, by panel.
LOSS_CURVES = ("train_loss", "val_loss")
ACCURACY_CURVES = ("val_top1", "val_top5", "train_top1")


@dataclass(frozen=True)
class RunDetail:
    run: dict[str, Any]  # the run's columns
    results: pd.DataFrame  # one row per final evaluation, a column per metric name
    curves: pd.DataFrame  # long format: epoch, name, value
    evidence_for: list[str]  # claims this run is the evidence for: "ECA-Net (ResNet-50) top-1 77.48 (Verified)"


# ------------------------------------------------------------------------------------------------- runs

RUN_LIST_COLUMNS = (  # and the status to show (run_status_expression), selected as `status`
    Run.id,
    Run.heartbeat_at,
    Run.job_name,
    Run.command,
    Run.model_name,
    Run.dataset_name,
    Run.claim_id,
    Run.best_top1,
    Run.created_at,
    Run.started_at,
    Run.ended_at,
    Run.git_commit,
    Run.git_dirty,
    Run.wandb_path,
    Run.wandb_mode,
    Run.world_size,
)


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; the recorder writes UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def duration_seconds(started: datetime | None, ended: datetime | None, now: datetime | None = None) -> float | None:
    """Wall time of a run: ended - started, or so far for a run still going; None before it started."""
    started, ended = _aware(started), _aware(ended)
    if started is None:
        return None
    end = ended or now or datetime.now(timezone.utc)
    return max((end - started).total_seconds(), 0.0)


def run_duration(
    status: str,
    started: datetime | None,
    ended: datetime | None,
    heartbeat: datetime | None,
    now: datetime | None = None,
) -> float | None:
    """Wall time of a run shown with `status`: a lost run's ends at its last heartbeat (when its process stopped
    reporting), or is unknown if it never beat; any other run's as `duration_seconds`."""
    if status == LOST:
        return duration_seconds(started, heartbeat) if heartbeat is not None else None
    return duration_seconds(started, ended, now)


def wandb_url(path: str | None, mode: str | None) -> str | None:
    """A link to the W&B run page for online runs (`entity/project/run_id`); None for offline runs."""
    if not path:
        return None
    if path.startswith(("http://", "https://")):
        return quote(path, safe=":/?#[]@!$&()*+,;=%~")  # quotes, spaces and <> never reach the page raw
    parts = path.strip("/").split("/")
    if mode == "online" and len(parts) == 3 and not path.startswith("/"):
        entity, project, run_id = (quote(part, safe="") for part in parts)
        return f"https://wandb.ai/{entity}/{project}/runs/{run_id}"
    return None


def runs_frame(engine: Engine | None) -> pd.DataFrame:
    """All runs, newest first, with the columns the Runs page lists and filters on."""
    columns = [
        "id", "status", "job", "command", "model", "dataset", "claim", "best_top1", "created_at",
        "duration_s", "commit", "wandb", "wandb_url", "world_size",
    ]  # fmt: skip
    if engine is None or not has_tables(engine):
        return pd.DataFrame(columns=columns)
    now = datetime.now(timezone.utc)  # one moment for the statuses and the durations
    shown = run_status_expression(now=now).label("status")  # `lost` for a running run that stopped beating
    with engine.connect() as conn:
        rows = conn.execute(select(*RUN_LIST_COLUMNS, shown).order_by(Run.created_at.desc(), Run.id)).all()
    records = []
    for row in rows:
        commit = (row.git_commit or "")[:10]
        if commit and row.git_dirty:
            commit += " (dirty)"
        records.append(
            {
                "id": row.id,
                "status": row.status,
                "job": row.job_name,
                "command": row.command,
                "model": row.model_name,
                "dataset": row.dataset_name or "",
                "claim": row.claim_id or "",
                "best_top1": row.best_top1,
                "created_at": _aware(row.created_at),
                "duration_s": run_duration(row.status, row.started_at, row.ended_at, row.heartbeat_at, now),
                "commit": commit,
                "wandb": row.wandb_path or "",
                "wandb_url": wandb_url(row.wandb_path, row.wandb_mode),
                "world_size": row.world_size,
            }
        )
    return pd.DataFrame.from_records(records, columns=columns)


def filter_runs(
    runs: pd.DataFrame,
    statuses: Sequence[str] = (),
    jobs: Sequence[str] = (),
    models: Sequence[str] = (),
    datasets: Sequence[str] = (),
) -> pd.DataFrame:
    """The runs matching every non-empty filter (an empty filter keeps everything)."""
    mask = pd.Series(True, index=runs.index)
    for column, wanted in (("status", statuses), ("job", jobs), ("model", models), ("dataset", datasets)):
        if wanted:
            mask &= runs[column].isin(list(wanted))
    return runs[mask]


def run_detail(engine: Engine | None, run_id: str) -> RunDetail | None:
    """Everything the run page shows about one run, or None if there is no such run."""
    if engine is None or not has_tables(engine):
        return None
    with Session(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            return None
        fields = {column.key: getattr(run, column.key) for column in inspect(Run).column_attrs}
        for key in ("created_at", "started_at", "ended_at", "heartbeat_at"):
            fields[key] = _aware(fields[key])
        now = datetime.now(timezone.utc)
        fields["stored_status"] = run.status
        # `lost` for a running run that stopped beating; from its start or creation if it never beat, as on Runs.
        fields["status"] = run_status(run.status, run.heartbeat_at, run.started_at or run.created_at, now=now)
        fields["duration_s"] = run_duration(fields["status"], run.started_at, run.ended_at, run.heartbeat_at, now)
        fields["wandb_url"] = wandb_url(run.wandb_path, run.wandb_mode)
        results = pd.DataFrame.from_records(
            [
                {
                    "dataset": r.dataset,
                    "split": r.split,
                    **r.metric_values,  # the names its claims use: top1, top5 for classification
                    "loss": r.loss,
                    "samples_evaluated": r.samples_evaluated,
                    "split_size": (r.fingerprint or {}).get("num_samples"),
                    "fingerprint": (r.fingerprint or {}).get("hash", "")[:16],
                    "pipeline": pipeline_label(r.pipeline),
                    "created_at": _aware(r.created_at),
                }
                for r in session.scalars(select(Result).where(Result.run_id == run_id).order_by(Result.id))
            ]
        )
        curve_rows = session.execute(
            select(EpochMetric.epoch, EpochMetric.name, EpochMetric.value)
            .where(EpochMetric.run_id == run_id)
            .order_by(EpochMetric.epoch, EpochMetric.name)
        ).all()
        curves = pd.DataFrame([tuple(r) for r in curve_rows], columns=["epoch", "name", "value"])
        claims = session.scalars(select(Claim).where(Claim.model == run.model_name)).all()
        evidence_for = [
            f"{s.claim.label} {METRIC_NAMES.get(s.claim.metric, s.claim.metric)} {s.claim.claimed:.2f} ({s.status})"
            for s in evaluate_claims(session, claims)
            if s.evidence_run_id == run_id
        ]
    return RunDetail(run=fields, results=results, curves=curves, evidence_for=evidence_for)


# ---------------------------------------------------------------------------------------------- compare


def compare_frame(board: Board) -> pd.DataFrame:
    """Top-1 claims per backbone: the paper's number next to ours, with the paper's parameter count.

    "Ours" is the best result that qualifies under the verification rule (full split, counted once), so a
    subset run never shows up here as if it were comparable with the paper.
    """
    records = []
    for row in board.rows:
        claim = row.claim
        if claim.metric != "top1":
            continue
        paper = paper_result(claim.model)  # ecaplatform/paper.py: no torch
        records.append(
            {
                "backbone": claim.backbone,
                "method": claim.method,
                "model": claim.model,
                "dataset": claim.dataset,
                "params_m": paper and paper.params_m,
                "flops_g": paper and paper.flops_g,
                "paper_top1": claim.claimed,
                "our_top1": row.verified_value,
                "delta": row.delta,
                "status": row.status,
                "evidence_run_id": row.evidence_run_id,
            }
        )
    columns = ["backbone", "method", "model", "dataset", "params_m", "flops_g", "paper_top1", "our_top1", "delta",
               "status", "evidence_run_id"]
    return pd.DataFrame.from_records(records, columns=columns)
