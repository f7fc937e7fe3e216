"""The ECA layer (Efficient Channel Attention) and the rules that choose its 1-D kernel size.

Three ways to pick k, because the paper and the released checkpoints disagree (see PAPER.md):
- "adaptive": the paper's Eq. 12, k = |log2(C)/gamma + b/gamma|_odd (gamma=2, b=1);
- "released": the fixed per-stage kernels of the released checkpoints (named in their file names);
- explicit odd integers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

# Per-stage kernels (layer1..layer4) of the released ResNet checkpoints, e.g. eca_resnet50_k3557.pth.tar.
RELEASED_RESNET_KERNELS: dict[int, tuple[int, int, int, int]] = {
    18: (3, 5, 7, 7),
    34: (3, 3, 5, 7),
    50: (3, 5, 5, 7),
    101: (3, 3, 5, 7),
    152: (3, 3, 5, 7),
}

K_SIZE_CHOICES = ("released", "adaptive")


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


def _resolve_kernels(k_size: str | int | Sequence[int], channels: Sequence[int], released: Callable[[], list[int]],
                     model: str, unit: str) -> list[int]:
    """One kernel size per attention site (`channels` gives each site's channels); `released()` is the
    released checkpoint's choice. `model` and `unit` only word the errors."""
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


def resolve_resnet_kernels(k_size: str | int | Sequence[int], depth: int,
                           stage_channels: Sequence[int]) -> list[int]:
    """One kernel size per ResNet stage.

    k_size: "released" (the released checkpoint's kernels for this depth), "adaptive" (the paper's formula on
    each stage's attention channels), one odd int for every stage, or a list of 4 odd ints.
    """

    def released() -> list[int]:
        if depth not in RELEASED_RESNET_KERNELS:
            raise ValueError(f"no released ECA kernels for ResNet-{depth}; known depths: "
                             f"{sorted(RELEASED_RESNET_KERNELS)}; pass k_size='adaptive' or 4 ints")
        return list(RELEASED_RESNET_KERNELS[depth])

    return _resolve_kernels(k_size, stage_channels, released, model="a ResNet", unit="stage")


def released_mobilenet_kernel(channels: int) -> int:
    """The released ECA-MobileNetV2 rule: k=1 below 96 output channels, else 3 (`<`, not `<=`)."""
    return 1 if channels < 96 else 3


def resolve_mobilenet_kernels(k_size: str | int | Sequence[int], block_channels: Sequence[int]) -> list[int]:
    """One kernel size per inverted-residual block (17 of them at width 1.0).

    k_size: "released" (k=1 if the block's output channels < 96 else 3), "adaptive" (the paper's formula on
    each block's output channels), one odd int for every block, or a list with one odd int per block.
    """
    return _resolve_kernels(k_size, block_channels, lambda: [released_mobilenet_kernel(c) for c in block_channels],
                            model="MobileNetV2", unit="inverted-residual block")
