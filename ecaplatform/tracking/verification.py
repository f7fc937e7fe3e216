"""The rule that decides whether a claim is verified. The platform decides, not a person.

A result verifies a claim only if it comes from a run that succeeded, is on the claim's dataset and split,
its dataset fingerprint is the whole split (e.g. 50,000 ImageNet val images of 1,000 classes) and every
sample of it was counted exactly once, and its metric is within the claim's tolerance of the claimed value
(or better). Anything else is recorded and shown, never verifying.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecaplatform.tracking.schema import Claim, Result, Run

VERIFIED = "Verified"
NOT_REPRODUCED = "Not reproduced"
UNVERIFIED = "Unverified"
RUNNING = "Running"
ACTIVE_RUN_STATUSES = ("queued", "running")


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
    return getattr(result, claim.metric, None)


def within_tolerance(claim: Claim, value: float) -> bool:
    # Doing better than the paper also verifies the claim.
    return value >= claim.claimed - claim.tolerance - 1e-9


def status_of(
    claim: Claim, results: Iterable[tuple[Result, str | None]], active: bool = False
) -> ClaimStatus:
    """The claim's status given its candidate results as (result, run status) and whether a run is active."""
    best_ok: Result | None = None
    best_other: tuple[Result, str] | None = None
    for result, run_status in results:
        value = metric_value(claim, result)
        if value is None:
            continue
        reason = disqualification(claim, result, run_status)
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

    candidates: dict[str, list[tuple[Result, str | None]]] = defaultdict(list)
    rows = session.execute(
        select(Result, Run.status).join(Run, Run.id == Result.run_id).where(Result.model_name.in_(models))
    )
    for result, run_status in rows:
        candidates[result.model_name].append((result, run_status))

    active_models = set(
        session.scalars(
            select(Run.model_name).where(Run.model_name.in_(models), Run.status.in_(ACTIVE_RUN_STATUSES)).distinct()
        )
    )
    return [status_of(claim, candidates[claim.model], claim.model in active_models) for claim in claims]
