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
from sqlalchemy import Engine, ScalarSelect, inspect, select, true
from sqlalchemy.orm import Session, aliased

from ecaplatform.paper import detection_result, paper_result
from ecaplatform.store.board import Board, dataset_name, fmt_value, metric_name, shown_top1
from ecaplatform.store.database import has_tables
from ecaplatform.store.pipelines import pipeline_label
from ecaplatform.store.schema import Claim, EpochMetric, Result, Run
from ecaplatform.store.slurm_states import ASKED_STATUSES, SlurmEnd, slurm_ended
from ecaplatform.store.slurm_states import shown_status as slurm_shown
from ecaplatform.store.verification import (
    LOST,
    display_order,
    disqualification,
    evaluate_claims,
    run_status,
    within_tolerance,
)

# The curves the run page draws, by panel.
LOSS_CURVES = ("train_loss", "val_loss")
ACCURACY_CURVES = ("val_top1", "val_top5", "train_top1")


@dataclass(frozen=True)
class RunDetail:
    run: dict[str, Any]  # the run's columns
    results: pd.DataFrame  # one row per final evaluation, a column per metric name
    curves: pd.DataFrame  # long format: epoch, name, value
    evidence_for: list[str]  # claims this run is the evidence for: "ECA-Net (ResNet-50) top-1 77.48 (Verified)"
    partial: list[str]  # a note per result that evaluated only part of its split (partial_note)


# ------------------------------------------------------------------------------------------------- runs

MAX_RUNS = 5000  # the newest runs a listing reads; the store may hold many more


RUN_LIST_COLUMNS = (  # and the stored status, shown through shown_status
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
    Run.slurm_job_id,
    Run.host,
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


def shown_status(status: str, heartbeat_at: datetime | None, started_at: datetime | None,
                 created_at: datetime | None, now: datetime, slurm_end: SlurmEnd | None = None) -> str:  # fmt: skip
    """The status every page shows for a run: the stored one, `lost` for a running run that stopped beating (from
    its start or creation if it never beat), and SLURM's word where its job ended unseen (`slurm_end`: cancelled,
    timed out, failed). The one place a page's run status comes from."""
    return slurm_shown(run_status(status, heartbeat_at, started_at or created_at, now=now), slurm_end)


def ended_jobs(rows: Sequence[Any]) -> dict[str, SlurmEnd]:
    """SLURM's word on the listed runs that the store calls queued or running (one call for the page, cached)."""
    return slurm_ended((row.id, row.slurm_job_id) for row in rows if row.status in ASKED_STATUSES)


def _newest_result_id() -> ScalarSelect[int | None]:
    """The id of the run's newest result (a correlated subquery: one query for a listing)."""
    result = aliased(Result)
    return (select(result.id).where(result.run_id == Run.id).correlate(Run).order_by(result.id.desc()).limit(1)
            .scalar_subquery())  # fmt: skip


def runs_frame(engine: Engine | None, limit: int = MAX_RUNS) -> pd.DataFrame:
    """The newest `limit` runs, newest first, with the columns the Runs page lists and filters on. `top1` is what
    `eca runs` shows (board.shown_top1): a fit run's best val top-1, another run's result's."""
    columns = [
        "id", "status", "job", "command", "model", "dataset", "claim", "top1", "created_at",
        "duration_s", "commit", "wandb", "wandb_url", "world_size", "slurm_job_id", "host",
    ]  # fmt: skip
    if engine is None or not has_tables(engine):
        return pd.DataFrame(columns=columns)
    now = datetime.now(timezone.utc)  # one moment for the statuses and the durations
    query = (select(*RUN_LIST_COLUMNS, Run.status, Result).outerjoin(Result, Result.id == _newest_result_id())
             .order_by(Run.created_at.desc(), Run.id).limit(limit))  # fmt: skip
    records = []
    with Session(engine) as session:
        rows = session.execute(query).all()
        ended = ended_jobs(rows)
        for row in rows:
            status = shown_status(row.status, row.heartbeat_at, row.started_at, row.created_at, now, ended.get(row.id))
            commit = (row.git_commit or "")[:10]
            if commit and row.git_dirty:
                commit += " (dirty)"
            result_top1 = row.Result.metric_values.get("top1") if row.Result is not None else None
            records.append({
                "id": row.id, "status": status, "job": row.job_name, "command": row.command, "model": row.model_name,
                "dataset": row.dataset_name or "", "claim": row.claim_id or "",
                "top1": shown_top1(row.command, row.best_top1, result_top1), "created_at": _aware(row.created_at),
                "duration_s": run_duration(status, row.started_at, row.ended_at, row.heartbeat_at, now),
                "commit": commit, "wandb": row.wandb_path or "", "wandb_url": wandb_url(row.wandb_path, row.wandb_mode),
                "world_size": row.world_size, "slurm_job_id": row.slurm_job_id or "", "host": row.host or "",
            })  # fmt: skip
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


def _claims_of(session: Session, models: Sequence[str]) -> dict[tuple[str, str], list[Claim]]:
    """The store's claims by (model, data set), in display order."""
    found: dict[tuple[str, str], list[Claim]] = {}
    for claim in display_order(session.scalars(select(Claim).where(Claim.model.in_(sorted(set(models)))))):
        found.setdefault((claim.model, claim.dataset), []).append(claim)
    return found


def verdict(result: Result | None, status: str, claims: Sequence[Claim]) -> tuple[bool, str]:
    """Whether a run's result counts for the paper's claims (`claims`: those of its model on its data set), and in a
    few words why (not)."""
    if result is None:
        return False, {"queued": "queued: no result yet", "running": "running: no result yet",
                       LOST: "lost: stopped reporting before a result"}.get(status, f"{status}: no result")  # fmt: skip
    if not claims:
        return False, f"no claim of the paper is on {dataset_name(result.dataset)}"
    judged = [(claim, disqualification(claim, result, status)) for claim in claims]
    counting = [claim for claim, reason in judged if reason is None]
    if not counting:
        return False, f"does not count: {judged[0][1]}"
    words = []
    for claim in counting:
        value = result.metric_values[claim.metric]
        verdict = "verifies" if within_tolerance(claim, value) else "below tolerance for"
        words.append(f"{verdict} {metric_name(claim.metric)} {fmt_value(claim.claimed, claim.metric)}")
    return True, "counts: " + ", ".join(words)


def partial_note(result: Result, claims: Sequence[Claim]) -> str | None:
    """For an evaluation of part of a split (fewer samples than the split, or a smaller split than the claim's):
    what part, and that it does not count; None for a whole one."""
    split_size = (result.fingerprint or {}).get("num_samples")
    expected = max((claim.expected_samples for claim in claims), default=None)
    whole = expected if isinstance(expected, int) else split_size
    if not isinstance(whole, int) or result.samples_evaluated >= whole:
        return None
    return (f"Partial evaluation: {result.samples_evaluated:,} of {whole:,} {dataset_name(result.dataset)} "
            f"{result.split} images; it does not count toward a claim.")  # fmt: skip


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


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
        fields["status"] = shown_status(run.status, run.heartbeat_at, run.started_at, run.created_at, now,
                                        ended_jobs([run]).get(run.id))  # fmt: skip
        fields["duration_s"] = run_duration(fields["status"], run.started_at, run.ended_at, run.heartbeat_at, now)
        fields["wandb_url"] = wandb_url(run.wandb_path, run.wandb_mode)
        claims = _claims_of(session, [run.model_name])
        records, notes = [], []
        stored = list(session.scalars(select(Result).where(Result.run_id == run_id).order_by(Result.id)))
        for r in stored:
            of_dataset = claims.get((run.model_name, r.dataset), [])
            note = partial_note(r, of_dataset)
            notes += [note] if note else []
            records.append({
                "Dataset": dataset_name(r.dataset), "Split": r.split,
                **{metric_name(name): fmt_value(value, name) for name, value in r.metric_values.items()},
                "Loss": "-" if r.loss is None else f"{r.loss:.4f}", "Samples evaluated": f"{r.samples_evaluated:,}",
                "Split size": _count((r.fingerprint or {}).get("num_samples")), "Pipeline": pipeline_label(r.pipeline),
                "Fingerprint": (r.fingerprint or {}).get("hash", "")[:16],
                "Recorded (UTC)": f"{r.created_at:%Y-%m-%d %H:%M:%S}",
                "Counts for a claim": verdict(r, fields["status"], of_dataset)[1],
            })  # fmt: skip
        fields["top1"] = shown_top1(run.command, run.best_top1,
                                    next((r.metric_values["top1"] for r in reversed(stored)
                                          if "top1" in r.metric_values), None))  # fmt: skip
        curve_rows = session.execute(
            select(EpochMetric.epoch, EpochMetric.name, EpochMetric.value)
            .where(EpochMetric.run_id == run_id)
            .order_by(EpochMetric.epoch, EpochMetric.name)
        ).all()
        curves = pd.DataFrame([tuple(r) for r in curve_rows], columns=["epoch", "name", "value"])
        model_claims = [claim for found in claims.values() for claim in found]
        evidence_for = [
            f"{s.claim.label} {metric_name(s.claim.metric)} {s.claim.claimed:.2f} ({s.status})"
            for s in evaluate_claims(session, model_claims)
            if s.evidence_run_id == run_id
        ]
    return RunDetail(run=fields, results=pd.DataFrame.from_records(records), curves=curves,
                     evidence_for=evidence_for, partial=notes)  # fmt: skip


# ----------------------------------------------------------------------------------------- reproductions

MAX_REPRODUCTIONS = 200  # the newest listed; a store may hold thousands of runs


def reproductions(engine: Engine | None, claims: Sequence[Claim], *, claim: Claim | None = None,
                  other_datasets: bool = False, limit: int = MAX_REPRODUCTIONS) -> pd.DataFrame:  # fmt: skip
    """The runs that tried to reproduce the paper, newest first: each that targeted one of its `claims` (the job's
    `claim:`) or ran on a claim's data set (only `claim`'s model there, when given); every run with
    `other_datasets`. Per run: who and where, what, its result and whether it counts and why not."""
    columns = ["id", "created_at", "status", "host", "slurm_job_id", "model", "job", "command", "dataset",
               "pipeline", "seed", "value", "metric", "counts", "why"]  # fmt: skip
    if engine is None or not has_tables(engine) or not claims:
        return pd.DataFrame(columns=columns)
    if claim is not None:
        wanted = (Run.claim_id == claim.id) | ((Run.model_name == claim.model) & (Run.dataset_name == claim.dataset))
    elif other_datasets:
        wanted = true()
    else:
        datasets = sorted({c.dataset for c in claims})
        wanted = Run.claim_id.in_([c.id for c in claims]) | Run.dataset_name.in_(datasets)
    seed = Run.config["seed_everything"].as_string()  # JSON: no need to load the whole config
    query = (select(Run.id, Run.created_at, Run.status, Run.heartbeat_at, Run.started_at, Run.host, Run.slurm_job_id,
                    Run.model_name, Run.job_name, Run.command, Run.dataset_name, seed.label("seed"), Result)
             .outerjoin(Result, Result.id == _newest_result_id()).where(wanted)
             .order_by(Run.created_at.desc(), Run.id).limit(limit))  # fmt: skip
    now, records = datetime.now(timezone.utc), []
    with Session(engine) as session:
        rows = session.execute(query).all()
        by_dataset = _claims_of(session, [row.model_name for row in rows])
        ended = ended_jobs(rows)
        for row in rows:
            status = shown_status(row.status, row.heartbeat_at, row.started_at, row.created_at, now, ended.get(row.id))
            result: Result | None = row.Result
            dataset = result.dataset if result is not None else row.dataset_name
            of_dataset = by_dataset.get((row.model_name, dataset or ""), [])
            shown = claim or (of_dataset[0] if of_dataset else None)
            metric = shown.metric if shown else "top1"
            counts, why = verdict(result, status, of_dataset)
            records.append({
                "id": row.id, "created_at": _aware(row.created_at), "status": status, "host": row.host or "",
                "slurm_job_id": row.slurm_job_id or "", "model": row.model_name, "job": row.job_name,
                "command": row.command, "dataset": dataset or "", "seed": row.seed,
                "pipeline": pipeline_label(result.pipeline) if result is not None else "",
                "value": result.metric_values.get(metric) if result is not None else None, "metric": metric,
                "counts": counts, "why": why,
            })  # fmt: skip
    return pd.DataFrame.from_records(records, columns=columns)


# ---------------------------------------------------------------------------------------------- compare


COMPARED_METRICS = ("top1", "box_ap", "mask_ap")  # the Compare page's: ImageNet top-1, COCO box and mask AP


def compare_frame(board: Board) -> pd.DataFrame:
    """The top-1 and AP claims per backbone: the paper's number next to ours, with the paper's parameters and FLOPs
    (Tables 1-3 for ImageNet, Table 5 for the COCO detectors at 1280x800).

    "Ours" is the best result that qualifies under the verification rule (full split, counted once), so a
    subset run never shows up here as if it were comparable with the paper.
    """
    records = []
    for row in board.rows:
        claim = row.claim
        if claim.metric not in COMPARED_METRICS:
            continue
        paper, detector = paper_result(claim.model), detection_result(claim.model)  # ecaplatform/paper.py: no torch
        records.append({
            "backbone": claim.backbone, "method": claim.method, "model": claim.model, "task": claim.task,
            "dataset": claim.dataset, "split": claim.split, "metric": claim.metric,
            "params_m": paper.params_m if paper else detector and detector.params_m,
            "flops_g": paper.flops_g if paper else detector and detector.gflops,
            "paper_value": claim.claimed, "our_value": row.verified_value, "delta": row.delta, "status": row.status,
            "evidence_run_id": row.evidence_run_id,
        })  # fmt: skip
    columns = ["backbone", "method", "model", "task", "dataset", "split", "metric", "params_m", "flops_g",
               "paper_value", "our_value", "delta", "status", "evidence_run_id"]  # fmt: skip
    return pd.DataFrame.from_records(records, columns=columns)
