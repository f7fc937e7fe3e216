"""MobileNetV2 (torchvision layout) with pluggable channel attention at the end of each inverted residual.

The attention module is the LAST element of the block's `conv` Sequential (after the projection BN, before the
residual add), on the block's output channels, so the released ECA-MobileNetV2 keys read
`features.1.conv.3.conv.weight` (block 1 has no expansion conv) and `features.N.conv.4.conv.weight` (N=2..17).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import make_attention
from .eca import resolve_kernel_sizes
from .registry import ModelInfo, register_model

# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of divisor without going more than 10% below value (torchvision's rule)."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new_value + divisor if new_value < 0.9 * value else new_value


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) + BN + ReLU6; a Sequential so keys read `.0.weight` / `.1.weight` like torchvision's."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                      bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, attention: nn.Module | None) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        if attention is not None:
            layers.append(attention)
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def resolve_mobilenet_kernels(k_size: str | int | Sequence[int], block_channels: Sequence[int]) -> list[int]:
    """One kernel size per inverted-residual block (17 at width 1.0), k_size as MobileNetV2 documents it."""
    # The released rule (eca_mobilenetv2_k13): k=1 below 96 output channels, else 3 (`<`, not `<=`).
    return resolve_kernel_sizes(k_size, block_channels, lambda: [1 if c < 96 else 3 for c in block_channels],
                                model="MobileNetV2", unit="inverted-residual block")


def block_output_channels(width_mult: float = 1.0, round_nearest: int = 8) -> list[int]:
    """Output channels of each inverted-residual block, in order (17 blocks)."""
    return [make_divisible(c * width_mult, round_nearest)
            for _, c, n, _ in INVERTED_RESIDUAL_SETTING for _ in range(n)]


class MobileNetV2(nn.Module):
    """MobileNetV2 with `attention` (none | se | cbam | eca) in every inverted residual.

    k_size (ECA only): "released" (k=1 if the block's output channels < 96 else 3, as the released
    checkpoint), "adaptive" (the paper's formula per block), one odd int for all blocks, or one odd int per
    block (17). se_reduction: SE/CBAM ratio r (8, as the paper's SE-MobileNetV2). dropout: before the classifier.
    """

    def __init__(self, num_classes: int = 1000, attention: str = "none",
                 k_size: str | int | Sequence[int] = "released", se_reduction: int = 8, dropout: float = 0.2,
                 width_mult: float = 1.0, round_nearest: int = 8) -> None:
        super().__init__()
        self.attention = attention
        channels = block_output_channels(width_mult, round_nearest)
        kernels = resolve_mobilenet_kernels(k_size, channels) if attention == "eca" else [None] * len(channels)
        self.eca_kernels = kernels if attention == "eca" else None
        input_channel = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [ConvBNReLU6(3, input_channel, stride=2)]
        block = 0
        for t, _, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                oup = channels[block]
                att = make_attention(attention, oup, k_size=kernels[block], reduction=se_reduction)
                features.append(InvertedResidual(input_channel, oup, s if i == 0 else 1, t, att))
                input_channel = oup
                block += 1
        features.append(ConvBNReLU6(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        # torchvision's init; ECA's Conv1d and the SE Linears keep PyTorch's defaults.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        classifier = self.classifier[1]
        nn.init.normal_(classifier.weight, 0, 0.01)
        nn.init.zeros_(classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# ---- registered models (the paper's numbers for them are in ecaplatform.paper) ----------------------------------
@register_model(ModelInfo(name="mobilenet_v2", family="mobilenet_v2", depth=None, attention="none",
                          backbone="MobileNetV2", method="MobileNetV2"))
def mobilenet_v2(num_classes: int = 1000, **kwargs: object) -> MobileNetV2:
    """Plain MobileNetV2 (torchvision layout and dropout 0.2)."""
    return MobileNetV2(num_classes=num_classes, attention="none", **kwargs)


@register_model(ModelInfo(name="se_mobilenet_v2", family="mobilenet_v2", depth=None, attention="se",
                          backbone="MobileNetV2", method="SE (r=8)"))
def se_mobilenet_v2(num_classes: int = 1000, **kwargs: object) -> MobileNetV2:
    """MobileNetV2 with SE (r=8, as in the paper) on each inverted residual's output."""
    return MobileNetV2(num_classes=num_classes, attention="se", **kwargs)


@register_model(ModelInfo(name="eca_mobilenet_v2", family="mobilenet_v2", depth=None, attention="eca",
                          backbone="MobileNetV2", method="ECA-Net"))
def eca_mobilenet_v2(num_classes: int = 1000, **kwargs: object) -> MobileNetV2:
    """MobileNetV2 with ECA (released kernels: k=1 below 96 channels, else 3) and the released dropout 0.25."""
    kwargs.setdefault("dropout", 0.25)
    return MobileNetV2(num_classes=num_classes, attention="eca", **kwargs)
