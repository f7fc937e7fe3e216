"""The rule that decides whether a claim is verified. The platform decides, not a person.

A result verifies a claim only if it comes from a run that succeeded, is on the claim's dataset and split,
was evaluated with a verifying input pipeline (ecaplatform.store.pipelines.VERIFYING_PIPELINES: only the reference
torchvision/PIL one, as the paper's numbers were; a result stored before pipelines were recorded came from it),
its dataset fingerprint is the whole split (e.g. 50,000 ImageNet val images of 1,000 classes) and every
sample of it was counted exactly once, and its value of the claim's metric (by name, from the result's metrics) is
within the claim's tolerance of the claimed value (or better). Anything else is recorded and shown, never verifying.

Also here, because a claim's Running depends on it: how a run's status is shown. A `running` run whose process
stopped beating (killed by kill -9 or the OOM killer, a lost node) is `lost`; `run_status` (one run) and
`run_status_expression` (SQL, for listing and filtering) are the one definition every reader uses. A claim is
Running only while such a live run could still qualify for it (`live_claims`: its model, data set and split).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from ecaplatform.store.pipelines import REFERENCE_PIPELINE, VERIFYING_PIPELINES
from ecaplatform.store.schema import RUN_STATUSES, Claim, Result, Run, utcnow
from ecaplatform.store.slurm_states import ended_runs

VERIFIED = "Verified"
NOT_REPRODUCED = "Not reproduced"
UNVERIFIED = "Unverified"
RUNNING = "Running"
ACTIVE_RUN_STATUSES = ("queued", "running")

LOST = "lost"
SHOWN_RUN_STATUSES = (*RUN_STATUSES, LOST)  # what `eca runs --status` and the leaderboard's filter offer
HEARTBEAT_TIMEOUT_ENV_VAR = "ECA_HEARTBEAT_TIMEOUT_S"
# Five missed beats (one a minute): a store that is busy or briefly unreachable, or a host clock a little off,
# never makes a live run look lost, and a killed run shows lost within five minutes.
DEFAULT_HEARTBEAT_TIMEOUT_S = 300.0
BEATS_PER_TIMEOUT = 5


def heartbeat_timeout_s() -> float:
    """Seconds without a heartbeat after which a running run is lost (`ECA_HEARTBEAT_TIMEOUT_S`, default 300)."""
    raw = os.environ.get(HEARTBEAT_TIMEOUT_ENV_VAR)
    if not raw:
        return DEFAULT_HEARTBEAT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ValueError(f"{HEARTBEAT_TIMEOUT_ENV_VAR}={raw!r} is not a number of seconds above 0; "
                         f"unset it for the default {DEFAULT_HEARTBEAT_TIMEOUT_S:.0f}")  # fmt: skip
    return value


def heartbeat_interval_s() -> float:
    """How often a running process beats: a fifth of the timeout (60 s by default)."""
    return heartbeat_timeout_s() / BEATS_PER_TIMEOUT


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; the store is written in UTC.
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def run_status(
    status: str, heartbeat_at: datetime | None, started_at: datetime | None = None, *, now: datetime | None = None
) -> str:
    """The status to show for a run: its stored status, or `lost` for a running run whose last heartbeat (or,
    for a run recorded before heartbeats existed, its start) is older than `heartbeat_timeout_s()`."""
    if status != "running":
        return status
    last_sign_of_life = _aware(heartbeat_at or started_at)
    if last_sign_of_life is None:
        return status
    age = ((now or utcnow()) - last_sign_of_life).total_seconds()
    return LOST if age > heartbeat_timeout_s() else status


def lost_condition(*, now: datetime | None = None) -> ColumnElement[bool]:
    """SQL: the run is stored as running but its process stopped beating (see run_status)."""
    cutoff = (now or utcnow()) - timedelta(seconds=heartbeat_timeout_s())
    return and_(Run.status == "running", func.coalesce(Run.heartbeat_at, Run.started_at, Run.created_at) < cutoff)


def run_status_expression(*, now: datetime | None = None) -> ColumnElement[str]:
    """SQL: the status to show (Run.status, or `lost`), to select in place of Run.status or to filter on, e.g.
    `select(Run).where(run_status_expression() == "lost")`."""
    return case((lost_condition(now=now), LOST), else_=Run.status)


@dataclass(frozen=True)
class ClaimStatus:
    claim: Claim
    status: str  # VERIFIED | NOT_REPRODUCED | UNVERIFIED | RUNNING
    verified_value: float | None  # best measured value among qualifying results
    delta: float | None  # verified_value - claimed
    evidence_run_id: str | None  # the run of that best qualifying result
    samples_evaluated: int | None  # of that result
    best_other_value: float | None  # best value among results that do not qualify (shown, never verifying)
    best_other_run_id: str | None
    best_other_reason: str | None  # why that result does not qualify


def disqualification(claim: Claim, result: Result, run_status: str | None = "succeeded") -> str | None:
    """Why `result` cannot verify `claim`, or None if it qualifies (tolerance is checked separately)."""
    if run_status != "succeeded":
        return f"its run did not succeed (status {run_status})"
    if result.dataset != claim.dataset or result.split != claim.split:
        return f"evaluated on {result.dataset}/{result.split}, the claim is on {claim.dataset}/{claim.split}"
    # NULL: stored before pipelines were recorded, when torchvision was the only one.
    if result.pipeline is not None and result.pipeline not in VERIFYING_PIPELINES:
        return (f"evaluated with the {result.pipeline} pipeline; claims verify only with the reference "
                f"{REFERENCE_PIPELINE} (PIL) evaluation: rerun `eca validate` with "
                f"data.eval_backend: {REFERENCE_PIPELINE}")  # fmt: skip
    fingerprint = result.fingerprint or {}
    split_size = fingerprint.get("num_samples")
    if fingerprint.get("dataset") != claim.dataset or fingerprint.get("split") != claim.split:
        return "its dataset fingerprint does not name the claim's dataset and split"
    if not isinstance(split_size, int):
        return "its dataset fingerprint does not say how many samples its split has"
    if split_size > claim.expected_samples:
        return f"larger than the claim's split ({split_size} of {claim.expected_samples} samples)"
    if split_size < claim.expected_samples:
        return f"a subset: the split it used has {split_size} samples, the claim's has {claim.expected_samples}"
    if fingerprint.get("num_classes") != claim.expected_classes:
        return f"{fingerprint.get('num_classes')} classes, the claim's dataset has {claim.expected_classes}"
    if result.samples_evaluated != split_size:
        return f"{result.samples_evaluated} samples counted for a split of {split_size} (each must count once)"
    if metric_value(claim, result) is None:
        return f"it has no {claim.metric} value"
    return None


def metric_value(claim: Claim, result: Result) -> float | None:
    return result.metric_values.get(claim.metric)


def within_tolerance(claim: Claim, value: float) -> bool:
    # Doing better than the paper also verifies the claim.
    return value >= claim.claimed - claim.tolerance - 1e-9


def status_of(
    claim: Claim, results: Iterable[tuple[Result, str | None]], active: bool = False
) -> ClaimStatus:
    """The claim's status given its candidate results as (result, run status) and whether a run is active."""
    best_ok: Result | None = None
    best_other: tuple[Result, str] | None = None
    for result, shown_status in results:
        value = metric_value(claim, result)
        if value is None:
            continue
        reason = disqualification(claim, result, shown_status)
        if reason is None:
            if best_ok is None or value > metric_value(claim, best_ok):  # type: ignore[operator]
                best_ok = result
        elif best_other is None or value > metric_value(claim, best_other[0]):  # type: ignore[operator]
            best_other = (result, reason)

    if best_ok is not None:
        value = metric_value(claim, best_ok)
        assert value is not None
        status = VERIFIED if within_tolerance(claim, value) else NOT_REPRODUCED
        verified_value, delta = value, value - claim.claimed
        evidence, samples = best_ok.run_id, best_ok.samples_evaluated
    else:
        status = RUNNING if active else UNVERIFIED
        verified_value = delta = None
        evidence = samples = None
    return ClaimStatus(
        claim=claim,
        status=status,
        verified_value=verified_value,
        delta=delta,
        evidence_run_id=evidence,
        samples_evaluated=samples,
        best_other_value=metric_value(claim, best_other[0]) if best_other else None,
        best_other_run_id=best_other[0].run_id if best_other else None,
        best_other_reason=best_other[1] if best_other else None,
    )


# Which split a command's result is on (ecaplatform.training.recorder records it so).
COMMAND_SPLITS = {"fit": "val", "validate": "val", "test": "test"}


def run_dataset(dataset_name: str | None, config: dict[str, Any] | None, claim_dataset: str | None = None,
                ) -> str | None:  # fmt: skip
    """The data set a run evaluates on: recorded once it started; before (a queued SLURM job), the data set of the
    claim its job targets, else its config's data module's name (`ImageNetDataModule` -> imagenet)."""
    if dataset_name or claim_dataset:
        return dataset_name or claim_dataset
    data = (config or {}).get("data")
    class_path = data.get("class_path") if isinstance(data, dict) else None
    if isinstance(class_path, str) and class_path:
        return class_path.rsplit(".", 1)[-1].lower().removesuffix("datamodule") or None
    return None


def could_qualify(claim: Claim, model: str, dataset: str | None, command: str) -> bool:
    """Whether a run of `model` evaluating on `dataset` with `command` can produce a result for `claim`: the claim's
    model, data set and split. (COCO's val split is `val2017`: a split named after the command's counts.)"""
    split = COMMAND_SPLITS.get(command)
    return model == claim.model and dataset == claim.dataset and split is not None and claim.split.startswith(split)


def live_claims(session: Session, claims: Sequence[Claim], *, now: datetime | None = None) -> set[str]:
    """The ids of the claims that a queued or running (not lost) run could still qualify for: only those are
    Running. A CPU demo on another data set never holds an ImageNet claim, nor a run whose SLURM job has ended
    unseen (cancelled while queued, killed over its time limit: SLURM's word, ecaplatform.store.slurm_states)."""
    active = Run.status.in_(ACTIVE_RUN_STATUSES) & ~lost_condition(now=now)
    ended = list(ended_runs(session))
    if ended:
        active = active & Run.id.not_in(ended)
    rows = session.execute(
        select(Run.model_name, Run.dataset_name, Run.command, Run.config, Claim.dataset)
        .outerjoin(Claim, Claim.id == Run.claim_id)
        .where(Run.model_name.in_(sorted({claim.model for claim in claims})), active)
    ).all()  # few: the runs alive right now
    runs = [(model, run_dataset(dataset, config, target), command) for model, dataset, command, config, target in rows]
    return {claim.id for claim in claims if any(could_qualify(claim, *run) for run in runs)}


def display_order(claims: Iterable[Claim]) -> list[Claim]:
    """The order claims are shown in everywhere: the public ones first, then by position and id."""
    return sorted(claims, key=lambda c: (not c.public, c.position or 0, c.id))


def evaluate_claims(session: Session, claims: Sequence[Claim] | None = None) -> list[ClaimStatus]:
    """Every claim's status (all of the store's claims, in display order, unless `claims` is given), with three
    queries whatever the number of runs."""
    if claims is None:
        claims = display_order(session.scalars(select(Claim)))
    models = sorted({claim.model for claim in claims})
    if not models:
        return []

    now = utcnow()  # one moment for the whole answer
    live = live_claims(session, claims, now=now)
    shown = run_status_expression(now=now)
    candidates: dict[str, list[tuple[Result, str | None]]] = defaultdict(list)
    rows = session.execute(
        select(Result, shown).join(Run, Run.id == Result.run_id).where(Result.model_name.in_(models))
    )
    for result, status in rows:
        candidates[result.model_name].append((result, status))

    return [status_of(claim, candidates[claim.model], claim.id in live) for claim in claims]
