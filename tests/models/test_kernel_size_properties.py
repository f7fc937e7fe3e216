"""Property-based tests (hypothesis) of the adaptive ECA kernel size, checked against an
expectation computed independently here (integer arithmetic, no call into the code under test)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ecaplatform.models.eca import adaptive_kernel_size


def paper_kernel_size(channels: int) -> int:
    """|log2(C)/2 + 1/2|_odd in exact integer arithmetic. The paper's snippet truncates t = (log2 C + 1) / 2, and
    t >= n  <=>  log2 C >= 2n - 1  <=>  2C >= 4^n, so t = floor(log4(2C)) = (bit_length(2C) - 1) // 2; an even t is
    bumped to the next odd number."""
    t = ((2 * channels).bit_length() - 1) // 2
    return t if t % 2 else t + 1


CHANNELS = st.integers(min_value=1, max_value=2**16)


@given(channels=CHANNELS)
@example(channels=1)
@example(channels=2**16)
@example(channels=2**15 - 1)  # just below a power of two: the float log2 must not round up across the step
def test_adaptive_kernel_is_odd_positive_and_the_papers_formula(channels: int) -> None:
    k = adaptive_kernel_size(channels)
    assert isinstance(k, int) and k >= 1 and k % 2 == 1
    assert k == paper_kernel_size(channels)


@given(a=CHANNELS, b=CHANNELS)
def test_adaptive_kernel_never_shrinks_as_channels_grow(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert adaptive_kernel_size(low) <= adaptive_kernel_size(high)


def test_adaptive_kernel_steps_exactly_where_the_formula_says() -> None:
    # Exhaustive over 1..2^16 (cheap): k only ever steps up by 2, and only at a power of two (where log2 C is whole).
    previous = adaptive_kernel_size(1)
    assert previous == 1  # the documented minimum: C = 1..3 give k = 1
    for channels in range(2, 2**16 + 1):
        k = adaptive_kernel_size(channels)
        assert k - previous in (0, 2), channels
        if k != previous:
            assert channels & (channels - 1) == 0, f"k changed at C={channels}, not a power of two"
        previous = k
    # The paper's own examples (ResNet stages and the MobileNetV2 widths): 64->3, 256->5, 512->5, 2048->7.
    assert [adaptive_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 5, 7]


@given(channels=st.integers(max_value=0))
def test_adaptive_kernel_refuses_no_channels(channels: int) -> None:
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        adaptive_kernel_size(channels)


