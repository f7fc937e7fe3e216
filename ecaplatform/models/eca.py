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


# Training-speed helpers for channel gates (SE, ECA). Their values and gradients equal the plain formulas' up to
# float rounding, and without autograd they run the plain formulas, so inference (and the MAC counter in
# profile.py) sees the same ops as before. Measured on a 2-core CPU (old and new models in one process): ECA- and
# SE-ResNet-50 train ~1-2% faster in NCHW and ~4-5% faster channels_last; the extra full-size passes are the cost.


class _GlobalAvgPool(torch.autograd.Function):
    """x.mean((2, 3), keepdim=True), whose backward returns a broadcast view of grad / (H*W): autograd's own
    mean backward materialises that [B, C, H, W] tensor only to add it to x's other gradient."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        return x.mean((2, 3), keepdim=True)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        shape = ctx.shape
        return (grad / (shape[2] * shape[3])).expand(shape)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, 1, 1] spatial mean (what nn.AdaptiveAvgPool2d(1) computes)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _GlobalAvgPool.apply(x)
    return x.mean((2, 3), keepdim=True)


class _GatedResidual(torch.autograd.Function):
    """identity + x * gate as one addcmul: one pass over the map and one allocation fewer than mul then add.
    The backward is written out because autograd's addcmul backward first materialises `x * value` (a third
    full-size product); this one does only the two that mul's backward does."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, identity: torch.Tensor, x: torch.Tensor,
                gate: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, gate)
        ctx.identity_shape = identity.shape
        return torch.addcmul(identity, x, gate)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, gate = ctx.saved_tensors
        need_identity, need_x, need_gate = ctx.needs_input_grad
        # sum_to_size undoes broadcasting (the gate's H, W; a no-op for same-shape inputs).
        grad_identity = grad.sum_to_size(ctx.identity_shape) if need_identity else None
        grad_x = (grad * gate).sum_to_size(x.shape) if need_x else None
        grad_gate = (grad * x).sum_to_size(gate.shape) if need_gate else None
        return grad_identity, grad_x, grad_gate


def gated_residual(identity: torch.Tensor, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """identity + x * gate, gate a channel gate [B, C, 1, 1]: a block's residual sum with SE/ECA attention."""
    if torch.is_grad_enabled() and (identity.requires_grad or x.requires_grad or gate.requires_grad):
        return _GatedResidual.apply(identity, x, gate)
    return x * gate + identity


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
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The channel weights [B, C, 1, 1] that forward multiplies x by (blocks fuse that with their residual)."""
        y = global_avg_pool(x)  # [B, C, 1, 1]
        y = self.conv(y.squeeze(-1).transpose(-1, -2))  # channels as a 1-D sequence: [B, 1, C]
        return self.sigmoid(y.transpose(-1, -2).unsqueeze(-1))  # back to [B, C, 1, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

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
