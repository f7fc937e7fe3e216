"""The ECA layer (Efficient Channel Attention) and the rules that choose its 1-D kernel size.

Three ways to pick k, because the paper and the released checkpoints disagree (README "Models"; the released
files are named in ecaplatform/paper.py):
- "adaptive": the paper's Eq. 12, k = |log2(C)/gamma + b/gamma|_odd (gamma=2, b=1);
- "released": the released checkpoints' fixed kernels, which each model family holds (resnet.py, mobilenetv2.py);
- explicit odd integers.
Nothing here knows a model family, so any network can put ECA layers wherever it likes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


def adaptive_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """The paper's adaptive kernel size psi(C): the nearest odd number to (log2(C) + b) / gamma, rounded
    the way the paper's own snippet does it (truncate, then bump even values up by one)."""
    if channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels}")
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


def check_kernel_size(k: object) -> int:
    """Return k if it is a positive odd int (zero padding (k-1)//2 keeps the channel count only for odd k)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ValueError(f"ECA kernel size must be a positive odd integer (1, 3, 5, ...), got {k!r}")
    return k


class ECALayer(nn.Module):
    """Channel attention by a 1-D convolution over the globally pooled channel descriptor.

    The only parameter is `conv.weight`, shape [1, 1, k] (bias-free, PyTorch's default init, as released).
    Give `k_size` explicitly, or give `channels` and the adaptive formula picks k.
    """

    def __init__(self, channels: int | None = None, k_size: int | None = None, gamma: float = 2,
                 b: float = 1) -> None:
        super().__init__()
        if k_size is None:
            if channels is None:
                raise ValueError("ECALayer needs k_size, or channels to compute the adaptive kernel size")
            k_size = adaptive_kernel_size(channels, gamma, b)
        self.k_size = check_kernel_size(k_size)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)  # [B, C, 1, 1]
        y = self.conv(y.squeeze(-1).transpose(-1, -2))  # channels as a 1-D sequence: [B, 1, C]
        y = self.sigmoid(y.transpose(-1, -2).unsqueeze(-1))  # back to [B, C, 1, 1]
        return x * y

    def extra_repr(self) -> str:
        return f"k_size={self.k_size}"


def resolve_kernel_sizes(k_size: str | int | Sequence[int], channels: Sequence[int],
                         released: Callable[[], list[int]], model: str, unit: str) -> list[int]:
    """One kernel size per attention site (`channels` gives each site's channels); `released()` is the family's
    released checkpoint choice, called only when asked for. `model` and `unit` only word the errors."""
    if isinstance(k_size, str):
        if k_size == "released":
            return released()
        if k_size == "adaptive":
            return [adaptive_kernel_size(c) for c in channels]
        raise ValueError(f"k_size={k_size!r} is not allowed; use 'released', 'adaptive', one odd int, "
                         f"or a list of {len(channels)} odd ints (one per {unit})")
    if isinstance(k_size, int) and not isinstance(k_size, bool):
        return [check_kernel_size(k_size)] * len(channels)
    kernels = list(k_size)
    if len(kernels) != len(channels):
        raise ValueError(f"k_size={kernels!r}: {model} needs {len(channels)} kernel sizes, one per {unit} "
                         f"(or 'released', 'adaptive', one odd int)")
    return [check_kernel_size(k) for k in kernels]
