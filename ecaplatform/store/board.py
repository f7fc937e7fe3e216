"""The claims board, built here for every reader: `eca claims` (text and --json), `eca export` (board.json, badges)
and the leaderboard's Claims and Compare pages. Per claim: the verdict (ecaplatform.store.verification: status,
best qualifying value, evidence run, the best result that does not qualify and why) and the evidence's
fingerprint, pipeline and seed spread (ecaplatform.store.spread). Reads only; without a store, or with one nobody
has migrated, every claim is Unverified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ecaplatform.store.claims import claims_file, file_claims
from ecaplatform.store.database import Store, has_tables
from ecaplatform.store.schema import Claim, Run
from ecaplatform.store.spread import ClaimEvidence, claim_evidence
from ecaplatform.store.verification import ClaimStatus, display_order, evaluate_claims, status_of

# What the store can look like to a reader.
STORE_OK = "ok"
STORE_MISSING = "missing"  # the SQLite file does not exist yet (a fresh user)
STORE_UNINITIALISED = "uninitialised"  # the database exists but has no tables (no `eca db upgrade` yet)

# How metrics and data sets are named on every page and in short text: the one place (a new task adds its names).
METRIC_NAMES = {"top1": "top-1", "top5": "top-5", "box_ap": "box AP", "mask_ap": "mask AP"}
DATASET_NAMES = {"imagenet": "ImageNet", "coco": "COCO", "coco2017": "COCO 2017", "digits": "digits (CPU demo)"}


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def dataset_name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


def shown_top1(command: str, best_top1: float | None, result_top1: float | None) -> float | None:
    """The top-1 a run listing shows: a fit run's best val top-1 over its epochs; a validate or test run logs no
    epochs (its best_top1 stays empty), so its result's. Either falls back on the other (as `eca runs`)."""
    if command == "fit":
        return best_top1 if best_top1 is not None else result_top1
    return result_top1 if result_top1 is not None else best_top1


# Each task's section title on the pages, in the order they are shown.
TASK_TITLES = {"classification": "classification", "detection": "object detection (box AP, Table 5)",
               "instance_segmentation": "instance segmentation (mask AP, Table 6)"}  # fmt: skip


def task_title(task: str, dataset: str) -> str:
    """"ImageNet classification", "COCO 2017 object detection (box AP, Table 5)"."""
    return f"{dataset_name(dataset)} {TASK_TITLES.get(task, task.replace('_', ' '))}"


def decimals(metric: str) -> int:
    """As the paper prints them: top-1 and top-5 with two decimals, COCO AP (Tables 5 and 6) with one."""
    return 1 if metric.startswith(("box_", "mask_")) else 2


def fmt_value(value: float | None, metric: str = "top1") -> str:
    """A metric's value as the paper prints it (decimals); a dash for none."""
    return "-" if value is None else f"{value:.{decimals(metric)}f}"


@dataclass(frozen=True)
class BoardRow(ClaimStatus):
    """One claim: its verdict (the ClaimStatus fields) and its evidence's fingerprint, pipeline and seed spread."""

    evidence: ClaimEvidence | None = None  # None without an evidence run

    def record(self) -> dict[str, Any]:
        """The claim as plain JSON data: `eca claims --json` and board.json (its schema: ecaplatform/cli/export.py)."""
        claim, evidence = self.claim, self.evidence
        return {
            "id": claim.id, "label": claim.label, "task": claim.task, "dataset": claim.dataset, "split": claim.split,
            "model": claim.model, "metric": claim.metric, "claimed": claim.claimed, "tolerance": claim.tolerance,
            "public": bool(claim.public), "status": self.status, "verified_value": self.verified_value,
            "delta": self.delta, "evidence_run_id": self.evidence_run_id, "samples_evaluated": self.samples_evaluated,
            "evidence_fingerprint": evidence.fingerprint if evidence else None,
            "evidence_pipeline": evidence.pipeline if evidence else None,
            "seed_spread": evidence.spread.as_dict() if evidence and evidence.spread else None,
            "best_other_value": self.best_other_value, "best_other_run_id": self.best_other_run_id,
            "best_other_reason": self.best_other_reason,
        }  # fmt: skip


@dataclass(frozen=True)
class Board:
    state: str  # STORE_OK | STORE_MISSING | STORE_UNINITIALISED
    claims_source: str  # "store", "given", or the claims file the claims were read from
    rows: list[BoardRow]
    run_count: int = 0


def _from_file() -> tuple[list[Claim], str]:
    path = claims_file()
    return file_claims(path), str(path)


def build_board(engine: Engine | None, claims: Sequence[Claim] | None = None) -> Board:
    """Every claim, in display order, judged on the store `engine` reads (None: no store yet). `claims`: which to
    judge; by default the store's, or the claims file's while the store has none. Raises SchemaBehind for a store
    at an older schema, StoreError for one that cannot be read."""
    source = "given" if claims is not None else "store"
    if engine is None or not has_tables(engine):
        if claims is None:
            claims, source = _from_file()
        state = STORE_MISSING if engine is None else STORE_UNINITIALISED
        return Board(state, source, [BoardRow(**vars(status_of(claim, []))) for claim in display_order(claims)])
    with Session(engine) as session:
        if claims is None:
            claims = list(session.scalars(select(Claim)))
            if not claims:  # tables, but no `eca fit` or `eca db upgrade` loaded the claims yet: the file's
                claims, source = _from_file()
        statuses = evaluate_claims(session, display_order(claims))
        evidence = claim_evidence(session, [(s.claim, s.evidence_run_id) for s in statuses])
        run_count = session.scalar(select(func.count()).select_from(Run)) or 0
    rows = [BoardRow(**vars(status), evidence=evidence.get(status.claim.id)) for status in statuses]
    return Board(STORE_OK, source, rows, run_count)


def read_board(store: Store, *, public: bool = False, model: str | None = None) -> Board:
    """The claims file's claims (only the public ones, only one model's) judged on `store`, read-only (a missing
    store is not created): what `eca claims` and `eca export` show. StoreError or ClaimsFileError, one line."""
    claims = [c for c in file_claims() if (not public or c.public) and (not model or c.model == model)]
    engine = store.reader()
    try:
        return build_board(engine, claims)
    finally:
        if engine is not None:
            engine.dispose()
