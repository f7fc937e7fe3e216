"""ResNet-18/34/50/101/152 (torchvision v1.5 layout: stride on the 3x3 conv) with pluggable channel attention.

Module names follow torchvision (conv1, bn1, layer1.0.conv1, downsample.0/1, fc), and the attention module sits
under its own kind's name (`eca`, `se`, `cbam`) after the block's last BN, before the residual add. So the
plain models load torchvision weights and the ECA models load the released ECA-Net checkpoints as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import attention_attr, make_attention
from .eca import gated_residual, resolve_kernel_sizes
from .registry import ATTENTION_PREFIX, ModelInfo, register_model

# depth -> (block type, blocks per stage)
RESNET_LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STAGE_PLANES = (64, 128, 256, 512)
# Per-stage kernels (layer1..layer4) of the released checkpoints, as their file names say (eca_resnet50_k3557).
RELEASED_RESNET_KERNELS: dict[int, tuple[int, int, int, int]] = {
    18: (3, 5, 7, 7), 34: (3, 3, 5, 7), 50: (3, 5, 5, 7), 101: (3, 3, 5, 7), 152: (3, 3, 5, 7),
}


def resolve_resnet_kernels(k_size: str | int | Sequence[int], depth: int,
                           stage_channels: Sequence[int]) -> list[int]:
    """One kernel size per ResNet stage (layer1..layer4), k_size as ResNet documents it."""

    def released() -> list[int]:
        if depth not in RELEASED_RESNET_KERNELS:
            raise ValueError(f"no released ECA kernels for ResNet-{depth}; known depths: "
                             f"{sorted(RELEASED_RESNET_KERNELS)}; pass k_size='adaptive' or 4 ints")
        return list(RELEASED_RESNET_KERNELS[depth])

    return resolve_kernel_sizes(k_size, stage_channels, released, model="a ResNet", unit="stage")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class _AttentionMixin:
    """Stores the block's attention module under its kind's name, so state_dict keys read `...eca.conv.weight`."""

    def _set_attention(self, attention: str, channels: int, k_size: int | None, reduction: int) -> None:
        self.attention_name = attention_attr(attention)
        if self.attention_name is not None:
            module = make_attention(attention, channels, k_size=k_size, reduction=reduction)
            setattr(self, self.attention_name, module)

    def _attend_and_add(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """attention(x) + identity. A pure channel gate (SE, ECA: they have a `gate` method) is fused with the add
        (eca.gated_residual: one pass over the map instead of mul then add); CBAM, with its spatial gate, runs as
        a module."""
        if self.attention_name is None:
            return x + identity
        attention = getattr(self, self.attention_name)
        if hasattr(attention, "gate"):
            return gated_residual(identity, x, attention.gate(x))
        return attention(x) + identity


class BasicBlock(_AttentionMixin, nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 attention: str = "none", k_size: int | None = None, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._set_attention(attention, planes, k_size, reduction)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self._attend_and_add(self.bn2(self.conv2(out)), identity))


class Bottleneck(_AttentionMixin, nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 attention: str = "none", k_size: int | None = None, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self._set_attention(attention, planes * self.expansion, k_size, reduction)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self._attend_and_add(self.bn3(self.conv3(out)), identity))


class ResNet(nn.Module):
    """A ResNet of the given depth with `attention` in every block.

    k_size (ECA only): "released" (default: the released checkpoint's per-stage kernels), "adaptive" (the
    paper's formula), one odd int, or 4 odd ints (layer1..layer4). se_reduction: SE/CBAM ratio r (16).
    """

    def __init__(self, depth: int, num_classes: int = 1000, attention: str = "none",
                 k_size: str | int | Sequence[int] = "released", se_reduction: int = 16) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"ResNet depth {depth} is not supported; use one of {sorted(RESNET_LAYOUTS)}")
        block_kind, layers = RESNET_LAYOUTS[depth]
        block = BasicBlock if block_kind == "basic" else Bottleneck
        self.depth, self.attention = depth, attention
        stage_channels = [p * block.expansion for p in STAGE_PLANES]
        self.eca_kernels = resolve_resnet_kernels(k_size, depth, stage_channels) if attention == "eca" else None
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (planes, blocks) in enumerate(zip(STAGE_PLANES, layers, strict=True)):
            k = self.eca_kernels[i] if self.eca_kernels else None
            stage = self._make_layer(block, planes, blocks, 1 if i == 0 else 2, attention, k, se_reduction)
            setattr(self, f"layer{i + 1}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        # torchvision's / the released code's init; Conv1d (ECA) and Linear keep PyTorch's defaults.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int,
                    attention: str, k_size: int | None, reduction: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, attention, k_size, reduction)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None, attention, k_size, reduction) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- registered models (the paper's numbers for them are in ecaplatform.paper) ----------------------------------
_METHOD = {"none": "ResNet", "se": "SENet", "cbam": "CBAM", "eca": "ECA-Net"}


def _register_resnet(depth: int, attention: str) -> None:
    info = ModelInfo(name=f"{ATTENTION_PREFIX[attention]}resnet{depth}", family="resnet", depth=depth,
                     attention=attention, backbone=f"ResNet-{depth}", method=_METHOD[attention])

    def entrypoint(num_classes: int = 1000, **kwargs: object) -> ResNet:
        return ResNet(depth, num_classes=num_classes, attention=attention, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = info.name
    entrypoint.__doc__ = f"{info.method} {info.backbone} (attention={attention!r}); kwargs go to ResNet."
    register_model(info)(entrypoint)


for _attention in ATTENTION_PREFIX:
    for _depth in RESNET_LAYOUTS:
        _register_resnet(_depth, _attention)
