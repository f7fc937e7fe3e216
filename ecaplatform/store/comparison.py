"""Paired comparison of two evaluations on the same images: `eca compare RUN_A RUN_B` and the leaderboard's
Compare page.

Two results on the same dataset fingerprint hold per-image outcomes in the same file order (tracking.outcomes), so
they can be compared image by image rather than as two independent accuracies:
- the difference of top-1 (B - A, percentage points) with a 95% paired bootstrap interval: images are resampled with
  replacement, both models together. An image counts towards B - A only when the two disagree, so a resample is
  fully described by how many drawn images are "B right, A wrong", "A right, B wrong" or agreeing: one multinomial
  draw of those three counts per resample is the same distribution as drawing n image indices, at O(1) cost;
- McNemar's exact test: under "equally good", each discordant image is B's with probability 1/2, so the two-sided
  p-value is a binomial test on the discordant counts, computed here in exact integer arithmetic (no float underflow
  or cancellation for 50,000 images);
- per-class top-1 and the classes where the two differ most, by name where the result stored its class names.

Torch-free (numpy and SQLAlchemy): the leaderboard imports it. Reads only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ecaplatform.store.outcomes import Outcomes, read_outcomes
from ecaplatform.store.schema import Result, Run

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 10_000
SHOWN_CLASSES = 5
FINGERPRINT_KEYS = ("dataset", "split", "num_samples", "hash")  # what makes two evaluations the same images
NO_OUTCOMES_HINT = "recorded before per-image outcomes were kept; re-run `eca validate` on its checkpoint"


class ComparisonError(ValueError):
    """Two evaluations that cannot be compared image by image (one line: which, and why)."""


# ----------------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class PairedComparison:
    """B against A on the same n images. Accuracies and differences in percent / percentage points."""

    n: int
    top1_a: float
    top1_b: float
    diff: float  # top1_b - top1_a
    ci_low: float  # the 95% paired bootstrap interval of `diff` (percentile method)
    ci_high: float
    b_only: int  # images B gets right at top-1 and A wrong
    a_only: int  # images A gets right and B wrong
    both_right: int
    both_wrong: int
    p_value: float  # McNemar's exact two-sided test on (b_only, a_only)
    resamples: int
    seed: int
    confidence: float = CONFIDENCE

    @property
    def discordant(self) -> int:
        return self.b_only + self.a_only


def _check_aligned(a: Outcomes, b: Outcomes) -> None:
    """Paired statistics need image i to be the same image in both: the same count and the same true classes."""
    if a.num_samples != b.num_samples:
        raise ComparisonError(f"the two evaluations hold {a.num_samples:,} and {b.num_samples:,} images: "
                              "not the same images")  # fmt: skip
    differ = int(np.count_nonzero(a.target != b.target))
    if differ:
        raise ComparisonError(f"the true classes differ at {differ:,} of {a.num_samples:,} images: not the same "
                              "images in the same order")  # fmt: skip
    if a.num_samples == 0:
        raise ComparisonError("the evaluations hold no images")


def binomial_lower_tail_numerator(m: int, k: int) -> int:
    """sum_{i<=k} C(m, i), exactly: P(X <= k) for X ~ Binomial(m, 1/2) is this over 2**m."""
    term = total = 1
    for i in range(min(k, m)):
        term = term * (m - i) // (i + 1)  # C(m, i+1) from C(m, i): exact, the division always divides
        total += term
    return total if k >= 0 else 0


def mcnemar_exact_p(b_only: int, a_only: int) -> float:
    """McNemar's exact two-sided p-value: the binomial test of min(b, c) among m = b + c discordant pairs, p = 1/2.
    The distribution is symmetric, so the two-sided p is twice the smaller tail (1 at most), which is what
    scipy.stats.binomtest(k, m, 0.5) returns too. Python's int / int division is correctly rounded, so the float is
    the exact value rounded once (0.0 only below the smallest double, e.g. 20,000 to 30,000)."""
    m, k = b_only + a_only, min(b_only, a_only)
    if 2 * k >= m:  # b == c (including no discordant pair): the most likely outcome under the null
        return 1.0
    return min(1.0, 2 * binomial_lower_tail_numerator(m, k) / 2**m)


def paired_comparison(a: Outcomes, b: Outcomes, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> PairedComparison:
    """B against A on the same images (ComparisonError if they are not): top-1 of each, B - A with its 95% paired
    bootstrap interval (`resamples` draws, seeded: the same inputs give the same interval), McNemar's exact p."""
    _check_aligned(a, b)
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    n = a.num_samples
    b_only = int(np.count_nonzero(b.top1 & ~a.top1))
    a_only = int(np.count_nonzero(a.top1 & ~b.top1))
    both_right = int(np.count_nonzero(a.top1 & b.top1))
    both_wrong = n - b_only - a_only - both_right
    # A bootstrap resample of n images is a multinomial draw of the three kinds of image; only two matter.
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [b_only / n, a_only / n, 1.0 - (b_only + a_only) / n], size=resamples)
    diffs = 100.0 * (counts[:, 0] - counts[:, 1]) / n
    tail = 100.0 * (1.0 - CONFIDENCE) / 2
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    return PairedComparison(
        n=n,
        top1_a=a.top1_percent,
        top1_b=b.top1_percent,
        diff=100.0 * (b_only - a_only) / n,
        ci_low=float(low),
        ci_high=float(high),
        b_only=b_only,
        a_only=a_only,
        both_right=both_right,
        both_wrong=both_wrong,
        p_value=mcnemar_exact_p(b_only, a_only),
        resamples=resamples,
        seed=seed,
    )


def per_class_accuracy(o: Outcomes, num_classes: int | None = None) -> np.ndarray:
    """Top-1 per true class, in percent, indexed by class (NaN for a class with no image)."""
    size = max(num_classes or 0, int(o.target.max()) + 1 if o.num_samples else 0)
    images = np.bincount(o.target, minlength=size)
    right = np.bincount(o.target, weights=o.top1.astype(np.float64), minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(images > 0, 100.0 * right / np.maximum(images, 1), np.nan)


@dataclass(frozen=True)
class ClassDifference:
    class_index: int
    acc_a: float  # top-1 of A on this class's images, percent
    acc_b: float
    images: int
    class_name: str | None = None  # its folder name where the result stored the names

    @property
    def label(self) -> str:
        return self.class_name if self.class_name is not None else str(self.class_index)

    @property
    def diff(self) -> float:
        return self.acc_b - self.acc_a


def class_differences(a: Outcomes, b: Outcomes, k: int = SHOWN_CLASSES) -> list[ClassDifference]:
    """The k classes where A's and B's top-1 differ most: largest |B - A| first; ties: more images, lower index.
    Classes where the two are equal are left out."""
    _check_aligned(a, b)
    acc_a, acc_b = per_class_accuracy(a), per_class_accuracy(b)
    images = np.bincount(a.target, minlength=len(acc_a))
    # rounding keeps float noise (1/3 vs 2/6) from deciding a tie or making equal classes differ
    gap = np.round(np.abs(acc_b - acc_a), 9)
    present = np.flatnonzero((images > 0) & (gap > 0))
    order = np.lexsort((present, -images[present], -gap[present]))[:k]  # lexsort: last key first
    return [ClassDifference(int(c), float(acc_a[c]), float(acc_b[c]), int(images[c])) for c in present[order]]


# ------------------------------------------------------------------------------------------ results in the store


@dataclass(frozen=True)
class ComparedResult:
    """One side of a comparison: which result, of which run, on which images."""

    result_id: int
    run_id: str
    model_name: str
    dataset: str
    split: str
    fingerprint: dict[str, Any]
    checkpoint_path: str | None
    class_names: list[str] | None = None  # as the result stored them; None: recorded without


@dataclass(frozen=True)
class ResultComparison:
    a: ComparedResult
    b: ComparedResult
    stats: PairedComparison
    classes: list[ClassDifference]  # where the two differ most


def describe_fingerprint(fingerprint: Mapping[str, Any]) -> str:
    """A fingerprint in a few words: `imagenet/val, 50,000 images, hash 1a2b3c4d5e6f`."""
    where = "/".join(str(fingerprint.get(key) or "?") for key in ("dataset", "split"))
    samples = fingerprint.get("num_samples")
    shown = f"{where}, {samples:,} images" if isinstance(samples, int) else where
    digest = fingerprint.get("hash")
    return f"{shown}, hash {str(digest)[:12]}" if digest else f"{shown}, no hash"


def check_same_images(a: ComparedResult, b: ComparedResult) -> None:
    """ComparisonError naming both fingerprints unless the two results evaluated the same files."""
    differ = [key for key in FINGERPRINT_KEYS if a.fingerprint.get(key) != b.fingerprint.get(key)]
    if differ:
        raise ComparisonError(
            f"result {a.result_id} and result {b.result_id} evaluated different images ({', '.join(differ)} "
            f"differ): {describe_fingerprint(a.fingerprint)} against {describe_fingerprint(b.fingerprint)}"
        )


def _side(result: Result) -> ComparedResult:
    return ComparedResult(
        result_id=result.id, run_id=result.run_id, model_name=result.model_name, dataset=result.dataset,
        split=result.split, fingerprint=dict(result.fingerprint or {}),
        checkpoint_path=result.run.checkpoint_path if result.run is not None else None,
        class_names=list(result.class_names) if result.class_names else None,
    )  # fmt: skip


def _outcomes_of(session: Session, side: ComparedResult, samples_evaluated: int) -> Outcomes:
    outcomes = read_outcomes(session, side.result_id)
    split_size = side.fingerprint.get("num_samples")
    if outcomes is None:
        checkpoint = f" ({side.checkpoint_path})" if side.checkpoint_path else ""
        which = f"result {side.result_id} of run {side.run_id}"
        if isinstance(split_size, int) and samples_evaluated != split_size:  # limit_val_batches, or counted twice
            what = "a partial evaluation" if samples_evaluated < split_size else "an evaluation counting some twice"
            raise ComparisonError(f"{which} is {what} ({samples_evaluated:,} of {split_size:,} images): per-image "
                                  "outcomes are kept only for the whole split, each image once; re-run `eca "
                                  f"validate` on its checkpoint{checkpoint} without limit_val_batches")  # fmt: skip
        raise ComparisonError(f"{which} was {NO_OUTCOMES_HINT}{checkpoint}")
    if split_size is not None and split_size != outcomes.num_samples:
        # image i is the split's i-th file only when every file was evaluated once
        raise ComparisonError(f"result {side.result_id} of run {side.run_id} counted {samples_evaluated:,} of "
                              f"the split's {split_size:,} images: its outcomes do not line up with its files")
    return outcomes


def compare_results(
    session: Session, result_a: int, result_b: int, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
    classes: int = SHOWN_CLASSES,
) -> ResultComparison:  # fmt: skip
    """Stored results B against A (ids), image by image; ComparisonError (one line) when they cannot be compared."""
    rows = {}
    for result_id in (result_a, result_b):
        result = session.get(Result, result_id)
        if result is None:
            raise ComparisonError(f"no result with id {result_id}; `eca runs --show RUN` lists a run's results")
        rows[result_id] = result
    a, b = _side(rows[result_a]), _side(rows[result_b])
    check_same_images(a, b)
    outcomes_a = _outcomes_of(session, a, rows[result_a].samples_evaluated)
    outcomes_b = _outcomes_of(session, b, rows[result_b].samples_evaluated)
    try:
        stats = paired_comparison(outcomes_a, outcomes_b, resamples=resamples, seed=seed)
    except ComparisonError as exc:
        raise ComparisonError(f"result {a.result_id} and result {b.result_id}: {exc}") from None
    names = a.class_names or b.class_names or []
    differences = [replace(c, class_name=str(names[c.class_index])) if c.class_index < len(names) else c
                   for c in class_differences(outcomes_a, outcomes_b, classes)]  # fmt: skip
    return ResultComparison(a=a, b=b, stats=stats, classes=differences)


def newest_val_result(session: Session, run_id: str) -> int:
    """The id of the run's newest result on a val split; ComparisonError (one line) without such a run or result."""
    run = session.get(Run, run_id)
    if run is None:
        raise ComparisonError(f"no run with id {run_id!r}; `eca runs` lists the ids")
    splits = session.execute(select(Result.id, Result.split).where(Result.run_id == run_id).order_by(Result.id.desc()))
    results = list(splits)
    for result_id, split in results:
        if split == "val":
            return int(result_id)
    if results:
        others = ", ".join(sorted({split for _, split in results}))
        raise ComparisonError(f"run {run_id} has no val result (only {others}); pass `--result ID` to compare one")
    raise ComparisonError(f"run {run_id} has no result (status {run.status}); a run records one when its "
                          "evaluation ends")  # fmt: skip


# ------------------------------------------------------------------------------------------------- eca compare


def fmt_p(p: float) -> str:
    """3 significant digits; an underflowed p (below the smallest double) as an upper bound."""
    return "< 1e-300" if p == 0.0 else f"{p:.3g}"
