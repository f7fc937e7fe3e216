"""Our ResNet (none | se | eca) as a detection backbone with an FPN, set up as MMDetection v1's 1x configs do.

MMDetection v1's ResNet in those configs: `frozen_stages=1` (stem and layer1 get no gradient),
`norm_cfg=dict(type='BN', requires_grad=True)` with the ResNet default `norm_eval=True`: every BatchNorm keeps
its ImageNet running statistics (eval mode even while training), and the BN scale/shift of layer2-4 still train.
torchvision's FrozenBatchNorm2d would also freeze those affine parameters, so plain BatchNorm2d held in eval
mode is what reproduces v1 (and keeps the classification keys, so ImageNet checkpoints load as they are).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

from ..resnet import STAGE_PLANES, ResNet


class V1RetinaNetExtraLevels(ExtraFPNBlock):
    """P6 = 3x3/2 conv of C5 and P7 = 3x3/2 conv of P6, with NO ReLU between them: MMDetection v1's FPN with
    add_extra_convs=True, extra_convs_on_inputs=True and relu_before_extra_convs=False (its RetinaNet config).
    torchvision's LastLevelP6P7 puts a ReLU before P7, so it would not run v1's weights as trained."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for module in (self.p6, self.p7):
            nn.init.kaiming_uniform_(module.weight, a=1)
            nn.init.zeros_(module.bias)

    def forward(self, p: list[torch.Tensor], c: list[torch.Tensor],
                names: list[str]) -> tuple[list[torch.Tensor], list[str]]:
        p6 = self.p6(c[-1])
        return [*p, p6, self.p7(p6)], [*names, "p6", "p7"]


class ResNetFPN(BackboneWithFPN):
    """BackboneWithFPN over our ResNet: `body` holds the classifier's own module names (conv1, layer1.0.eca, ...),
    BatchNorm stays in eval mode, and the stem plus the first `frozen_stages` stages get no gradient."""

    def __init__(self, resnet: ResNet, returned_stages: Sequence[int], out_channels: int,
                 extra_blocks: ExtraFPNBlock, frozen_stages: int = 1, norm_eval: bool = True) -> None:
        expansion = resnet.layer1[0].expansion
        super().__init__(resnet, {f"layer{s}": str(i) for i, s in enumerate(returned_stages)},
                         [STAGE_PLANES[s - 1] * expansion for s in returned_stages], out_channels, extra_blocks)
        self.depth, self.attention, self.eca_kernels = resnet.depth, resnet.attention, resnet.eca_kernels
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        # MMDetection's convention: 0 freezes the stem, N also stages 1..N, -1 nothing
        frozen = ["conv1", "bn1", *(f"layer{s}" for s in range(1, frozen_stages + 1))] if frozen_stages >= 0 else []
        for name in frozen:
            for p in getattr(self.body, name).parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNetFPN:
        super().train(mode)
        for m in self.body.modules() if self.norm_eval else ():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()  # norm_eval: the ImageNet statistics are kept (batches of 2 images cannot estimate them)
        return self


def resnet_fpn(depth: int, attention: str = "none", k_size: str | int | Sequence[int] = "released",
               se_reduction: int = 16, retinanet: bool = False, out_channels: int = 256,
               frozen_stages: int = 1, norm_eval: bool = True) -> ResNetFPN:
    """The FPN of MMDetection v1's 1x configs over ResNet-`depth`.

    R-CNNs: P2-P6 from C2-C5 (lateral + 3x3 output convs, P6 = max pool of P5). RetinaNet (start_level=1):
    P3-P7 from C3-C5, P6/P7 by convs from C5 (V1RetinaNetExtraLevels). The classifier's avgpool/fc are unused
    (IntermediateLayerGetter stops at the last returned stage). norm_eval=False lets BatchNorm use batch
    statistics: a backbone trained from scratch (the CPU demo) has no ImageNet statistics to keep.
    """
    resnet = ResNet(depth, attention=attention, k_size=k_size, se_reduction=se_reduction)
    if retinanet:
        c5 = STAGE_PLANES[3] * resnet.layer1[0].expansion
        return ResNetFPN(resnet, (2, 3, 4), out_channels, V1RetinaNetExtraLevels(c5, out_channels), frozen_stages,
                         norm_eval)
    return ResNetFPN(resnet, (1, 2, 3, 4), out_channels, LastLevelMaxPool(), frozen_stages, norm_eval)
