"""Per-image outcomes of an evaluation: for each image of the split, in the fingerprint's file order, its true class,
the predicted class and whether top-1 and top-5 were right.

Two results on the same fingerprint (same files, same order) therefore align image by image: a paired comparison,
McNemar's test and per-class accuracies need nothing else. Stored compactly next to the result (one row in
`result_outcomes`): the two correctness vectors as packed bits, the class vectors zlib-compressed (the true classes
of an ImageFolder split come sorted, so they compress to almost nothing): about 70 KB for ImageNet's 50,000 images.

Torch-free (numpy only): the store, the leaderboard and the statistics read it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from ecaplatform.store.schema import ResultOutcome, percent


class OutcomesError(ValueError):
    """Per-image outcomes that do not fit their result (or are malformed)."""


@dataclass(frozen=True, eq=False)
class Outcomes:
    """Image i of the split (the fingerprint's order): `target[i]` its class, `predicted[i]` the top-1 prediction,
    `top1[i]`/`top5[i]` whether the true class was the first / among the first five predictions."""

    target: np.ndarray  # int, [N]
    predicted: np.ndarray  # int, [N]
    top1: np.ndarray  # bool, [N]
    top5: np.ndarray  # bool, [N]

    def __post_init__(self) -> None:
        n = len(self.target)
        for name in ("predicted", "top1", "top5"):
            if len(getattr(self, name)) != n:
                raise OutcomesError(f"outcomes: {name} has {len(getattr(self, name))} entries, target has {n}")
        object.__setattr__(self, "target", np.asarray(self.target, dtype=np.int64))
        object.__setattr__(self, "predicted", np.asarray(self.predicted, dtype=np.int64))
        object.__setattr__(self, "top1", np.asarray(self.top1, dtype=bool))
        object.__setattr__(self, "top5", np.asarray(self.top5, dtype=bool))
        if np.any(self.top1 != (self.predicted == self.target)):
            raise OutcomesError("outcomes: top1 must be exactly `predicted == target`")
        if np.any(self.top1 & ~self.top5):
            raise OutcomesError("outcomes: an image right at top-1 must be right at top-5")

    @property
    def num_samples(self) -> int:
        return len(self.target)

    @property
    def top1_percent(self) -> float:
        return percent(int(self.top1.sum()), self.num_samples) if self.num_samples else float("nan")

    @property
    def top5_percent(self) -> float:
        return percent(int(self.top5.sum()), self.num_samples) if self.num_samples else float("nan")

    def check_against(self, top1: float | None, top5: float | None, samples_evaluated: int) -> None:
        """Raise OutcomesError unless these outcomes are the result's own: the same number of images, and the
        result's top-1/top-5 (percent) count exactly the images marked right here."""
        if samples_evaluated != self.num_samples:
            raise OutcomesError(f"outcomes hold {self.num_samples} images, the result counted {samples_evaluated}")
        for name, value, right in (("top-1", top1, self.top1), ("top-5", top5, self.top5)):
            if value is None:
                continue
            counted = value * self.num_samples / 100.0
            if abs(counted - int(right.sum())) > 0.5:  # percent -> images: must be the same whole number
                raise OutcomesError(f"outcomes mark {int(right.sum())} images right at {name}, the result's "
                                    f"{value:.4f}% of {self.num_samples} is {counted:.2f} images")  # fmt: skip


def _class_dtype(values: np.ndarray) -> str:
    high = int(values.max()) if len(values) else 0
    if int(values.min() if len(values) else 0) < 0:
        raise OutcomesError("outcomes: class indices must not be negative")
    return "<u2" if high < 2**16 else "<u4"


@dataclass(frozen=True)
class EncodedOutcomes:
    """The stored form (the columns of `result_outcomes`)."""

    num_samples: int
    target: bytes  # zlib(little-endian uint16/uint32)
    predicted: bytes
    top1_bits: bytes  # numpy.packbits, big-endian bit order
    top5_bits: bytes
    class_dtype: str  # "<u2" or "<u4"


def encode(outcomes: Outcomes) -> EncodedOutcomes:
    dtype = _class_dtype(np.concatenate([outcomes.target, outcomes.predicted]))
    return EncodedOutcomes(
        num_samples=outcomes.num_samples,
        target=zlib.compress(outcomes.target.astype(dtype).tobytes(), 9),
        predicted=zlib.compress(outcomes.predicted.astype(dtype).tobytes(), 9),
        top1_bits=np.packbits(outcomes.top1).tobytes(),
        top5_bits=np.packbits(outcomes.top5).tobytes(),
        class_dtype=dtype,
    )


def decode(encoded: EncodedOutcomes) -> Outcomes:
    n = encoded.num_samples
    if encoded.class_dtype not in ("<u2", "<u4"):
        raise OutcomesError(f"outcomes: unknown class dtype {encoded.class_dtype!r}")
    try:
        target = np.frombuffer(zlib.decompress(encoded.target), dtype=encoded.class_dtype)
        predicted = np.frombuffer(zlib.decompress(encoded.predicted), dtype=encoded.class_dtype)
    except zlib.error as exc:
        raise OutcomesError(f"outcomes: damaged class vectors ({exc})") from None
    if not len(encoded.top1_bits) == len(encoded.top5_bits) == (n + 7) // 8:
        raise OutcomesError(f"outcomes: stored bit vectors do not hold {n} images")
    top1 = np.unpackbits(np.frombuffer(encoded.top1_bits, dtype=np.uint8), count=n).astype(bool)
    top5 = np.unpackbits(np.frombuffer(encoded.top5_bits, dtype=np.uint8), count=n).astype(bool)
    if not (len(target) == len(predicted) == len(top1) == len(top5) == n):
        raise OutcomesError(f"outcomes: stored vectors do not all hold {n} images")
    return Outcomes(target=target, predicted=predicted, top1=top1, top5=top5)


def read_outcomes(session: Session, result_id: int) -> Outcomes | None:
    """The per-image outcomes stored with result `result_id`, or None where it has none (recorded before outcomes
    were kept, or by a data module that cannot say which image is which)."""
    row = session.get(ResultOutcome, result_id)
    if row is None:
        return None
    return decode(EncodedOutcomes(num_samples=row.num_samples, target=row.target, predicted=row.predicted,
                                  top1_bits=row.top1_bits, top5_bits=row.top5_bits, class_dtype=row.class_dtype))
