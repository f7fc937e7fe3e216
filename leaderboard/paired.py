"""Read-only queries for the Compare page's paired comparisons: ECA-Net against each baseline of its backbone, image by
image, on the claims' data set and split (never another: a CPU demo on digits is no ImageNet comparison).

Like `leaderboard.queries`, nothing here imports Streamlit (the page adds the caching) and the statistics come from
`ecaplatform.store.comparison`, the same code as `eca compare`: the page and the command show the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ecaplatform.store.comparison import ComparisonError, ResultComparison, compare_results
from ecaplatform.store.database import has_tables
from ecaplatform.store.schema import Result, ResultOutcome, Run

CLASSES_SHOWN = 10  # per-class plot: the classes where the two differ most


@dataclass(frozen=True)
class PairedEntry:
    """ECA-Net (B) against one baseline (A) of the same backbone: the comparison, or why there is none."""

    baseline_model: str
    eca_model: str
    dataset: str  # and split, "imagenet/val": the claims' (the only images compared)
    comparison: ResultComparison | None
    missing: str | None  # why there is no comparison (None when there is one)


@dataclass(frozen=True)
class _Candidate:
    result_id: int
    model: str
    fingerprint: dict[str, Any]

    @property
    def images(self) -> tuple[Any, ...]:
        """Which images: results with the same key evaluated the same files in the same order."""
        return tuple(self.fingerprint.get(key) for key in ("dataset", "split", "num_samples", "hash"))


def _candidates(session: Session, models: Iterable[str]) -> dict[str, list[_Candidate]]:
    """Per model, its results that can be paired: of a succeeded run, with per-image outcomes of every image of the
    split (a subset or padded count does not line up with the split's files). Newest first; no blob is loaded."""
    query = (
        select(Result.id, Result.model_name, Result.fingerprint, Result.samples_evaluated)
        .join(ResultOutcome, ResultOutcome.result_id == Result.id)
        .join(Run, Run.id == Result.run_id)
        .where(Result.model_name.in_(sorted(set(models))), Run.status == "succeeded")
        .order_by(Result.id.desc())
    )
    found: dict[str, list[_Candidate]] = {}
    for result_id, model, fingerprint, samples in session.execute(query):
        fingerprint = dict(fingerprint or {})
        if fingerprint.get("num_samples") == samples:
            found.setdefault(model, []).append(_Candidate(int(result_id), model, fingerprint))
    return found


def _pair(session: Session, pair: tuple[str, str, str, str], found: dict[str, list[_Candidate]],
          seed: int) -> PairedEntry:  # fmt: skip
    baseline, eca, dataset, split = pair
    where = f"{dataset}/{split}"
    on_it = {model: [c for c in found.get(model, []) if c.images[:2] == (dataset, split)] for model in (eca, baseline)}
    for model in (eca, baseline):  # ECA-Net first: one reason shared by all of the backbone's pairs
        if not on_it[model]:
            return PairedEntry(baseline, eca, where, None, f"no result with per-image outcomes for {model} on {where}")
    newest_a = {c.images: c for c in reversed(on_it[baseline])}  # reversed: the newest wins per set of images
    newest_b = {c.images: c for c in reversed(on_it[eca])}
    shared = sorted(set(newest_a) & set(newest_b), key=lambda images: images[2] or 0, reverse=True)  # most images
    if not shared:
        return PairedEntry(baseline, eca, where, None, f"their results on {where} are on different images")
    a, b = newest_a[shared[0]], newest_b[shared[0]]
    try:
        comparison = compare_results(session, a.result_id, b.result_id, seed=seed, classes=CLASSES_SHOWN)
    except ComparisonError as problem:  # e.g. the same fingerprint but different true classes: say so
        return PairedEntry(baseline, eca, where, None, str(problem))
    return PairedEntry(baseline, eca, where, comparison, None)


def paired_comparisons(engine: Engine | None, pairs: Sequence[tuple[str, str, str, str]],
                       seed: int = 0) -> list[PairedEntry]:  # fmt: skip
    """For each (baseline model, ECA model, data set, split) of a claim: ECA-Net minus the baseline on that data set
    and split only, the newest result of each with per-image outcomes there (the most images first)."""
    if engine is None or not has_tables(engine):
        return [PairedEntry(a, b, f"{d}/{s}", None, "no run store yet") for a, b, d, s in pairs]
    with Session(engine) as session:
        found = _candidates(session, [model for pair in pairs for model in pair[:2]])
        return [_pair(session, pair, found, seed) for pair in pairs]
