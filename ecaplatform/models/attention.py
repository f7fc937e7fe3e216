"""SE and CBAM channel attention, and one factory that builds any of none | se | cbam | eca for a block.

Both MLPs are bias-free: with biases SE-ResNet-50 has 28,088,024 parameters (26.79 in 2^20 units), without
them 28,071,976 (26.77), which is what the ECA paper prints for SE and CBAM on ResNet-50/101/152.
"""

from __future__ import annotations

import torch
from torch import nn

from .eca import ECALayer, global_avg_pool

ATTENTIONS = ("none", "se", "cbam", "eca")


class SELayer(nn.Module):
    """Squeeze-and-Excitation: global average pool, FC (C -> C/r), ReLU, FC (C/r -> C), sigmoid, rescale."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The channel weights [B, C, 1, 1] that forward multiplies x by (blocks fuse that with their residual)."""
        b, c = x.shape[:2]
        return self.fc(global_avg_pool(x).view(b, c)).view(b, c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class CBAMChannelGate(nn.Module):
    """CBAM's channel gate: a shared MLP over the average- and max-pooled descriptors, summed, sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))


class CBAMSpatialGate(nn.Module):
    """CBAM's spatial gate: channel-wise max and mean maps, 7x7 conv + BN to one map, sigmoid."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * self.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel gate, then spatial gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel = CBAMChannelGate(channels, reduction)
        self.spatial = CBAMSpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


def attention_attr(attention: str) -> str | None:
    """The attribute name a block stores its attention module under (it becomes part of the state_dict key)."""
    check_attention(attention)
    return None if attention == "none" else attention


def check_attention(attention: str) -> str:
    if attention not in ATTENTIONS:
        raise ValueError(f"attention={attention!r} is not allowed; use one of {', '.join(ATTENTIONS)}")
    return attention


def make_attention(attention: str, channels: int, *, k_size: int | None = None,
                   reduction: int = 16) -> nn.Module | None:
    """Build the attention module for a block with `channels` output channels (None for "none").

    k_size is the ECA kernel (None: the paper's adaptive formula); reduction is SE's / CBAM's ratio r.
    """
    check_attention(attention)
    if attention == "none":
        return None
    if attention == "se":
        return SELayer(channels, reduction)
    if attention == "cbam":
        return CBAM(channels, reduction)
    return ECALayer(channels, k_size)
