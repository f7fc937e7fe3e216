"""Faster R-CNN, Mask R-CNN and RetinaNet (torchvision's) over our ResNet + FPN, as MMDetection v1's 1x configs.

Labels: every detector takes and returns labels 1..num_classes (0 is background), the convention of
torchvision's R-CNNs and of MMDetection v1 (COCO: label i is category COCO_CATEGORY_IDS[i - 1]). `num_classes`
counts object classes (80 for COCO); the R-CNN classifiers have num_classes + 1 outputs, RetinaNet's sigmoid
head num_classes per anchor (v1's 80-way head; the label shift is in RetinaNet.forward).
Heads (v1 1x): RPN 3 anchors per location (sizes 32-512 on P2-P6, ratios 0.5/1/2), box head 2 shared FC 1024,
class-specific regression, RoIAlign 7x7 (mask 14x14) sampling 2; mask head 4 convs 256 + deconv; RetinaNet
4 + 4 convs, 9 anchors (octave base 4, 3 scales), smooth L1 (beta 1/9 = v1's 0.11). Test settings equal v1's
(RPN 1000/1000 NMS 0.7; score 0.05, NMS 0.5, 100 per image). Left at torchvision's: the R-CNN box loss
(smooth L1, beta 1/9; v1 uses beta 1 there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetHead

from ..resnet import RELEASED_RESNET_KERNELS
from .backbone import resnet_fpn
from .legacy import use_mmdet_v1_boxes

DETECTORS = ("faster_rcnn", "mask_rcnn", "retinanet")
RCNN_STRIDES = (4, 8, 16, 32, 64)  # P2-P6
RETINANET_STRIDES = (8, 16, 32, 64, 128)  # P3-P7
# ECA kernels per stage (layer1..layer4) of the six released detectors, as their file names say.
RELEASED_DETECTOR_KERNELS: dict[tuple[str, int], tuple[int, int, int, int]] = {
    ("faster_rcnn", 50): (5, 5, 5, 5), ("faster_rcnn", 101): (3, 3, 5, 7),
    ("mask_rcnn", 50): (3, 3, 7, 7), ("mask_rcnn", 101): (3, 3, 5, 7),
    ("retinanet", 50): (3, 3, 7, 7), ("retinanet", 101): (3, 3, 5, 7),
}


class RetinaNet(TorchvisionRetinaNet):
    """torchvision's RetinaNet taking and returning labels 1..num_classes like the R-CNNs: its sigmoid head's
    channel k is label k + 1, as in MMDetection v1 (no background channel)."""

    def forward(self, images: list[torch.Tensor],
                targets: list[dict[str, torch.Tensor]] | None = None) -> dict | list[dict[str, torch.Tensor]]:
        if targets is not None:
            targets = [{**t, "labels": t["labels"] - 1} for t in targets]
        out = super().forward(images, targets)
        if isinstance(out, list):
            for detection in out:
                detection["labels"] = detection["labels"] + 1
        return out


def detector_kernels(detector: str, depth: int) -> list[int]:
    """The default ECA kernels: the released detector's for its detector and depth, else the classifier's."""
    return list(RELEASED_DETECTOR_KERNELS.get((detector, depth)) or RELEASED_RESNET_KERNELS[depth])


def build_detector(detector: str, depth: int, attention: str = "none", num_classes: int = 80,
                   k_size: str | int | Sequence[int] = "released", se_reduction: int = 16,
                   min_size: int = 800, max_size: int = 1333, fpn_channels: int = 256,
                   box_head_dim: int = 1024, frozen_stages: int = 1, norm_eval: bool = True,
                   mmdet_v1_boxes: bool = False,
                   **detector_kwargs: object) -> nn.Module:
    """A detector over ResNet-`depth` + FPN (module docstring). k_size="released": the released detector's
    kernels (RELEASED_DETECTOR_KERNELS). mmdet_v1_boxes: v1's "+1" box convention (legacy.py), for v1 weights.
    detector_kwargs go to torchvision's FasterRCNN / MaskRCNN / RetinaNet (e.g. box_batch_size_per_image)."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; use one of {', '.join(DETECTORS)}")
    if attention == "eca" and k_size == "released":
        k_size = detector_kernels(detector, depth)
    retina = detector == "retinanet"
    backbone = resnet_fpn(depth, attention, k_size if attention == "eca" else "released", se_reduction,
                          retinanet=retina, out_channels=fpn_channels, frozen_stages=frozen_stages,
                          norm_eval=norm_eval)
    ratios = ((0.5, 1.0, 2.0),) * 5
    common = {"min_size": min_size, "max_size": max_size, **detector_kwargs}
    if retina:
        sizes = tuple(tuple(s * 4 * 2 ** (i / 3) for i in range(3)) for s in RETINANET_STRIDES)
        head = RetinaNetHead(fpn_channels, 9, num_classes)
        head.regression_head._loss_type = "smooth_l1"  # v1: SmoothL1Loss(beta=0.11); torchvision's is 1/9
        model = RetinaNet(backbone, num_classes, anchor_generator=AnchorGenerator(sizes, ratios), head=head,
                          **common)
    else:
        anchors = AnchorGenerator(tuple((8 * s,) for s in RCNN_STRIDES), ratios)
        heads = {"box_head": TwoMLPHead(fpn_channels * 7 * 7, box_head_dim),
                 "box_predictor": FastRCNNPredictor(box_head_dim, num_classes + 1)}
        if detector == "mask_rcnn":
            heads["mask_predictor"] = MaskRCNNPredictor(256, 256, num_classes + 1)
        cls = MaskRCNN if detector == "mask_rcnn" else FasterRCNN
        model = cls(backbone, None, rpn_anchor_generator=anchors, **heads, **common)
    model.detector, model.num_object_classes = detector, num_classes
    if mmdet_v1_boxes:
        use_mmdet_v1_boxes(model, RETINANET_STRIDES if retina else RCNN_STRIDES)
    return model
