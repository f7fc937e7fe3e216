"""Property-based tests (hypothesis) of the claim verification rule, checked against an
expectation computed independently here (integer arithmetic, no call into the code under test)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ecaplatform.store.schema import RUN_STATUSES, Claim, Result
from ecaplatform.store.verification import (
    LOST,
    NOT_REPRODUCED,
    RUNNING,
    UNVERIFIED,
    VERIFIED,
    disqualification,
    status_of,
    within_tolerance,
)

# The claim's exact comparison (verification.within_tolerance): value >= claimed - tolerance - 1e-9. The 1e-9 absorbs
# the float rounding of claimed - tolerance, so a value on the edge verifies however the decimals round
# (77.48 - 0.10 = 77.38000000000001 > 77.38).
EPSILON = 1e-9
EXPECTED_SAMPLES, EXPECTED_CLASSES = 50000, 1000


def _claim(claimed: float, tolerance: float, metric: str = "top1") -> Claim:
    return Claim(id="c", paper="p", label="l", backbone="ResNet-50", method="ECA-Net", model="eca_resnet50",
                 dataset="imagenet", split="val", expected_samples=EXPECTED_SAMPLES,
                 expected_classes=EXPECTED_CLASSES, metric=metric, claimed=claimed, tolerance=tolerance,
                 source="s", public=True, position=0)  # fmt: skip


def _full_fingerprint() -> dict[str, Any]:
    return {"dataset": "imagenet", "split": "val", "num_samples": EXPECTED_SAMPLES,
            "num_classes": EXPECTED_CLASSES, "hash": "f" * 64}  # fmt: skip


def _result(value: float | None, metric: str = "top1", other: float | None = None, **fields: Any) -> Result:
    metrics = {name: v for name, v in ((metric, value), ("another_metric", other)) if v is not None}
    base: dict[str, Any] = {"run_id": "r", "model_name": "eca_resnet50", "dataset": "imagenet", "split": "val",
                            "samples_evaluated": EXPECTED_SAMPLES, "fingerprint": _full_fingerprint(),
                            "pipeline": "torchvision", "metrics": metrics}  # fmt: skip
    return Result(**{**base, **fields})


# Claimed value, tolerance and result value as hundredths (the store's numbers have two decimals): the exact decimal
# rule "value >= claimed - tolerance" is then an integer comparison the test can make without any rounding.
HUNDREDTHS = st.integers(min_value=0, max_value=10000)
TOLERANCES = st.integers(min_value=0, max_value=200)


# Any metric name: a claim takes its metric by name (classification's top1/top5, COCO's box and mask AP).
@given(claimed=HUNDREDTHS, tolerance=TOLERANCES, value=HUNDREDTHS, metric=st.sampled_from(["top1", "top5", "box_ap"]))
@example(claimed=7748, tolerance=10, value=7738, metric="top1")  # exactly on the edge: verifies
@example(claimed=7748, tolerance=10, value=7737, metric="top1")  # one hundredth below: not reproduced
def test_a_full_split_result_verifies_iff_within_tolerance_on_the_hundredths_grid(
    claimed: int, tolerance: int, value: int, metric: str
) -> None:
    claim = _claim(claimed / 100, tolerance / 100, metric)
    result = _result(value / 100, metric)
    assert disqualification(claim, result, "succeeded") is None
    status = status_of(claim, [(result, "succeeded")])
    expected = VERIFIED if value >= claimed - tolerance else NOT_REPRODUCED
    assert status.status == expected
    assert within_tolerance(claim, value / 100) is (value >= claimed - tolerance)
    assert status.verified_value == value / 100 and status.evidence_run_id == "r"
    assert status.delta == pytest.approx((value - claimed) / 100)


FLOATS = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)


@given(claimed=FLOATS, tolerance=st.floats(min_value=0, max_value=100, allow_nan=False), value=FLOATS,
       offset=st.sampled_from([-1e-6, -2e-9, 0.0, 1e-12, 1e-6]))  # fmt: skip
def test_the_tolerance_comparison_is_value_at_least_claimed_minus_tolerance_minus_1e9(
    claimed: float, tolerance: float, value: float, offset: float
) -> None:
    claim = _claim(claimed, tolerance)
    assert within_tolerance(claim, value) is (value >= claimed - tolerance - EPSILON)
    assert within_tolerance(claim, claimed - tolerance - EPSILON)  # the comparison is >=: its own edge verifies
    edge = claimed - tolerance + offset  # around the edge: verifies iff offset >= -1e-9 (up to the edge's rounding)
    if abs(edge) < 1e3:  # far from the floats' coarse spacing, the offsets are representable as such
        assert within_tolerance(claim, edge) is (offset >= -EPSILON)
    assert status_of(claim, [(_result(value), "succeeded")]).status == (
        VERIFIED if value >= claimed - tolerance - EPSILON else NOT_REPRODUCED
    )


# A result is drawn as a faithful one (on the claim's whole split, counted once, reference pipeline, succeeded run)
# with up to three of these changes: one or two at a time is how a real result goes wrong, and drawing every field
# independently would almost never make a result that misses by exactly one fact.
VARIATIONS: list[tuple[str, Any]] = [
    *(("status", s) for s in ("failed", "interrupted", "queued", "running", LOST, None)),
    ("dataset", "digits"), ("split", "test"),
    ("pipeline", None), ("pipeline", "dali-gpu"), ("pipeline", "dali-cpu"),
    ("fingerprint", None), ("fingerprint", {}),
    ("fp.dataset", "digits"), ("fp.split", "test"), ("fp.dataset", None),
    ("fp.num_samples", 10000), ("fp.num_samples", EXPECTED_SAMPLES + 16), ("fp.num_samples", None),
    ("fp.num_classes", 100), ("fp.num_classes", None),
    ("samples", EXPECTED_SAMPLES + 16), ("samples", EXPECTED_SAMPLES - 16), ("samples", 0),
    ("value", None),
]  # fmt: skip
assert {s for f, s in VARIATIONS if f == "status"} | {"succeeded"} == {*RUN_STATUSES, LOST, None}


@st.composite
def candidates(draw: st.DrawFn) -> tuple[Result, str | None, dict[str, Any]]:
    """A result and its run status, and the facts the rule reads, as plain data for the independent check."""
    facts: dict[str, Any] = {"dataset": "imagenet", "split": "val", "pipeline": "torchvision",
                             "samples": EXPECTED_SAMPLES, "fingerprint": _full_fingerprint(), "status": "succeeded",
                             "value": draw(HUNDREDTHS), "other": draw(st.one_of(HUNDREDTHS, st.none()))}  # fmt: skip
    for field, value in draw(st.lists(st.sampled_from(VARIATIONS), max_size=3)):
        if field.startswith("fp."):
            facts["fingerprint"] = {**(facts["fingerprint"] or {}), field[3:]: value}
        else:
            facts[field] = value
    result = _result(None if facts["value"] is None else facts["value"] / 100, "top1", dataset=facts["dataset"],
                     split=facts["split"], pipeline=facts["pipeline"], samples_evaluated=facts["samples"],
                     fingerprint=facts["fingerprint"],
                     other=None if facts["other"] is None else facts["other"] / 100)  # fmt: skip
    return result, facts["status"], facts


def _qualifies(facts: dict[str, Any]) -> bool:
    """The rule as the docs state it: a succeeded run, on the claim's dataset and split, with the reference (or an
    unrecorded) pipeline, whose fingerprint is the whole split and every sample counted once, with a value."""
    fingerprint = facts["fingerprint"] or {}
    return (
        facts["status"] == "succeeded"
        and (facts["dataset"], facts["split"]) == ("imagenet", "val")
        and facts["pipeline"] in ("torchvision", None)
        and (fingerprint.get("dataset"), fingerprint.get("split")) == ("imagenet", "val")
        and fingerprint.get("num_samples") == EXPECTED_SAMPLES
        and fingerprint.get("num_classes") == EXPECTED_CLASSES
        and facts["samples"] == EXPECTED_SAMPLES
        and facts["value"] is not None
    )


@given(claimed=HUNDREDTHS, tolerance=TOLERANCES, found=st.lists(candidates(), max_size=5), active=st.booleans())
def test_a_claim_is_verified_iff_a_qualifying_result_is_within_tolerance(
    claimed: int, tolerance: int, found: list[tuple[Result, str | None, dict[str, Any]]], active: bool
) -> None:
    claim = _claim(claimed / 100, tolerance / 100)
    status = status_of(claim, [(result, run_status) for result, run_status, _ in found], active)
    for result, run_status, facts in found:
        reason = disqualification(claim, result, run_status)
        assert (reason is None) is _qualifies(facts), (facts, reason)
        if reason is None:  # the rule's two parts are independent: qualifying says nothing of the value
            assert within_tolerance(claim, facts["value"] / 100) is (facts["value"] >= claimed - tolerance)

    qualifying = [f["value"] for _, _, f in found if _qualifies(f)]
    others = [f["value"] for _, _, f in found if not _qualifies(f) and f["value"] is not None]
    if any(v >= claimed - tolerance for v in qualifying):
        expected = VERIFIED
    elif qualifying:
        expected = NOT_REPRODUCED
    else:
        expected = RUNNING if active else UNVERIFIED
    assert status.status == expected
    # The evidence is the best qualifying value; a non-qualifying result is shown beside it, never as evidence.
    assert status.verified_value == (max(qualifying) / 100 if qualifying else None)
    assert status.best_other_value == (max(others) / 100 if others else None)
    assert (status.best_other_reason is None) is (not others)
