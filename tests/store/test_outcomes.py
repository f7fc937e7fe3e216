"""Per-image outcomes: compact, exact round trip, stored only when they agree with their result to the image."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.outcomes import Outcomes, OutcomesError, decode, encode, read_outcomes
from ecaplatform.store.schema import Result, ResultOutcome
from ecaplatform.store.writes import add_result, start_run


def imagenet_like(n: int = 50_000, classes: int = 1000, top1: float = 0.77, seed: int = 0) -> Outcomes:
    """Outcomes shaped like an ImageNet val evaluation: sorted true classes (ImageFolder order), `top1` right."""
    rng = np.random.default_rng(seed)
    target = np.repeat(np.arange(classes), n // classes)
    right = rng.random(n) < top1
    wrong_guess = (target + rng.integers(1, classes, n)) % classes
    predicted = np.where(right, target, wrong_guess)
    top5 = right | (rng.random(n) < 0.7)
    return Outcomes(target=target, predicted=predicted, top1=right, top5=top5)


def test_imagenet_val_outcomes_take_tens_of_kilobytes_and_round_trip_exactly() -> None:
    outcomes = imagenet_like()
    stored = encode(outcomes)
    size = len(stored.target) + len(stored.predicted) + len(stored.top1_bits) + len(stored.top5_bits)
    assert size < 100_000, size
    back = decode(stored)
    for name in ("target", "predicted", "top1", "top5"):
        assert np.array_equal(getattr(back, name), getattr(outcomes, name)), name
    assert back.top1_percent == outcomes.top1_percent


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 70_000])
def test_round_trip_for_any_length_and_class_count(n: int) -> None:
    rng = np.random.default_rng(n)
    classes = 70_000 if n == 70_000 else 10  # class ids past 2^16 need the wider dtype
    target = rng.integers(0, classes, n)
    predicted = np.where(rng.random(n) < 0.5, target, rng.integers(0, classes, n))
    outcomes = Outcomes(target=target, predicted=predicted, top1=predicted == target, top5=predicted == target)
    back = decode(encode(outcomes))
    assert np.array_equal(back.predicted, outcomes.predicted) and np.array_equal(back.top5, outcomes.top5)


def test_inconsistent_or_damaged_outcomes_are_refused() -> None:
    with pytest.raises(OutcomesError, match="predicted == target"):
        Outcomes(target=[1, 2], predicted=[1, 3], top1=[True, True], top5=[True, True])
    with pytest.raises(OutcomesError, match="top-5"):
        Outcomes(target=[1], predicted=[1], top1=[True], top5=[False])
    stored = encode(imagenet_like(n=1000, classes=10))
    with pytest.raises(OutcomesError, match="bit vectors"):
        decode(type(stored)(**{**stored.__dict__, "top1_bits": stored.top1_bits[:-1]}))


def test_outcomes_are_stored_with_their_result_only_when_they_agree_to_the_image(store_url: str) -> None:
    engine = writer_engine(store_url)
    start_run(engine, "r1", job_name="j", command="validate", model_name="eca_resnet50")
    outcomes = imagenet_like(n=2000, classes=20)
    top1, top5 = outcomes.top1_percent, outcomes.top5_percent
    fields = dict(model_name="eca_resnet50", dataset="imagenet", split="val", loss=1.0,
                  fingerprint={"num_samples": 2000})  # fmt: skip
    result_id = add_result(engine, "r1", top1=top1, top5=top5, samples_evaluated=2000, outcomes=outcomes, **fields)
    with session_scope(engine) as session:
        back = read_outcomes(session, result_id)
        assert back is not None and np.array_equal(back.top1, outcomes.top1)

    one_image_off = top1 + 100.0 / 2000
    with pytest.raises(OutcomesError, match="top-1"):
        add_result(engine, "r1", top1=one_image_off, top5=top5, samples_evaluated=2000, outcomes=outcomes, **fields)
    with pytest.raises(OutcomesError, match="2000 images, the result counted 1999"):
        add_result(engine, "r1", top1=top1, top5=top5, samples_evaluated=1999, outcomes=outcomes, **fields)
    plain = add_result(engine, "r1", top1=top1, top5=top5, samples_evaluated=2000, **fields)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 2  # the refused ones left nothing
        assert session.scalar(select(func.count()).select_from(ResultOutcome)) == 1
        assert read_outcomes(session, plain) is None
    engine.dispose()
