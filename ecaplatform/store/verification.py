"""The rule that decides whether a claim is verified. The platform decides, not a person.

A result verifies a claim only if it comes from a run that succeeded, is on the claim's dataset and split,
was evaluated with a verifying input pipeline (ecaplatform.store.pipelines.VERIFYING_PIPELINES: only the reference
torchvision/PIL one, as the paper's numbers were; a result stored before pipelines were recorded came from it),
its dataset fingerprint is the whole split (e.g. 50,000 ImageNet val images of 1,000 classes) and every
sample of it was counted exactly once, and its value of the claim's metric (by name, from the result's metrics) is
within the claim's tolerance of the claimed value (or better). Anything else is recorded and shown, never verifying.

Also here, because a claim's Running depends on it: how a run's status is shown. A `running` run whose process
stopped beating (killed by kill -9 or the OOM killer, a lost node) is `lost`; `run_status` (one run) and
`run_status_expression` (SQL, for listing and filtering) are the one definition every reader uses.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from ecaplatform.store.pipelines import REFERENCE_PIPELINE, VERIFYING_PIPELINES
from ecaplatform.store.schema import RUN_STATUSES, Claim, Result, Run, utcnow

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
    if split_size != claim.expected_samples:
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


def display_order(claims: Iterable[Claim]) -> list[Claim]:
    """The order claims are shown in everywhere: the public ones first, then by position and id."""
    return sorted(claims, key=lambda c: (not c.public, c.position or 0, c.id))


def evaluate_claims(session: Session, claims: Sequence[Claim] | None = None) -> list[ClaimStatus]:
    """Every claim's status (all of the store's claims, in display order, unless `claims` is given), with two
    queries whatever the number of runs."""
    if claims is None:
        claims = display_order(session.scalars(select(Claim)))
    models = sorted({claim.model for claim in claims})
    if not models:
        return []

    now = utcnow()  # one moment for the whole answer
    shown = run_status_expression(now=now)
    candidates: dict[str, list[tuple[Result, str | None]]] = defaultdict(list)
    rows = session.execute(
        select(Result, shown).join(Run, Run.id == Result.run_id).where(Result.model_name.in_(models))
    )
    for result, status in rows:
        candidates[result.model_name].append((result, status))

    # A lost run is running no more: it must not hold its claims on Running.
    active = Run.status.in_(ACTIVE_RUN_STATUSES) & ~lost_condition(now=now)
    active_models = set(session.scalars(select(Run.model_name).where(Run.model_name.in_(models), active).distinct()))
    return [status_of(claim, candidates[claim.model], claim.model in active_models) for claim in claims]
