"""The six released ECA detectors (MMDetection v1 checkpoints) in torchvision's layout, loaded strictly.

A v1 checkpoint is torch.save({"meta": {...}, "state_dict": {...}}). Its names, read from MMDetection v1.x's own
source (ResNet, FPN, RPNHead, SharedFCBBoxHead, FCNMaskHead, RetinaHead; every conv in a ConvModule is `.conv`):
  backbone.conv1/bn1/layerS.B.*       -> backbone.body.*          (the classifier's names; ECA: layerS.B.eca.conv)
  neck.lateral_convs.i.conv           -> backbone.fpn.inner_blocks.i.0
  neck.fpn_convs.i.conv               -> backbone.fpn.layer_blocks.i.0; RetinaNet's fpn_convs.3/.4 (the extra
                                         convs on C5 and P6) -> backbone.fpn.extra_blocks.p6/.p7
  rpn_head.rpn_conv/rpn_cls/rpn_reg   -> rpn.head.conv.0.0/cls_logits/bbox_pred
  bbox_head.shared_fcs.0/.1           -> roi_heads.box_head.fc6/fc7
  bbox_head.fc_cls/fc_reg             -> roi_heads.box_predictor.cls_score/bbox_pred
  mask_head.convs.i.conv/upsample/conv_logits -> roi_heads.mask_head.i.0/mask_predictor.conv5_mask/mask_fcn_logits
  bbox_head.cls_convs.i.conv/reg_convs.i.conv -> head.classification_head.conv.i.0/head.regression_head.conv.i.0
  bbox_head.retina_cls/retina_reg     -> head.classification_head.cls_logits/head.regression_head.bbox_reg
No tensor is permuted: v1's 81-way softmax and its 81 x 4 class-specific regression put background at 0 and
class c at rows c / 4c..4c+3, as torchvision's R-CNN predictors do; the mask logits likewise; v1's RetinaNet
sigmoid head (80 per anchor, channel a*80 + k) is torchvision's layout, and both call channel k label k + 1
(detectors.RetinaNet). Anchors within a location are ordered ratio-major in both. Label i is COCO category
COCO_CATEGORY_IDS[i - 1] (v1's CocoDataset: the sorted category ids, label = index + 1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import CheckpointError, compare_state_dicts, read_checkpoint
from .detectors import build_detector

# The 80 COCO 2017 category ids in label order (label i <-> COCO_CATEGORY_IDS[i - 1]).
COCO_CATEGORY_IDS: tuple[int, ...] = tuple(i for i in range(1, 91) if i not in
                                           (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))

# The released files (ECA-Net README), their registry names and ECA kernels per stage (layer1..layer4).
RELEASED_DETECTORS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "faster_rcnn_ecanet50_k5_bs8_lr0.01": ("faster_rcnn_eca_resnet50_fpn", (5, 5, 5, 5)),
    "faster_rcnn_ecanet101_3357_bs8_lr0.01": ("faster_rcnn_eca_resnet101_fpn", (3, 3, 5, 7)),
    "mask_rcnn_ecanet50_k3377_bs8_lr0.01": ("mask_rcnn_eca_resnet50_fpn", (3, 3, 7, 7)),
    "mask_rcnn_ecanet101_k3357_bs8_lr0.01": ("mask_rcnn_eca_resnet101_fpn", (3, 3, 5, 7)),
    "RetinaNet_ecanet50_k3377_bs8_lr0.01": ("retinanet_eca_resnet50_fpn", (3, 3, 7, 7)),
    "RetinaNet_ecanet101_k3357_bs8_lr0.01": ("retinanet_eca_resnet101_fpn", (3, 3, 5, 7)),
}

_COMMON = [(r"backbone\.(?!fc\.)(.+)", r"backbone.body.\1"),
           (r"neck\.lateral_convs\.(\d)\.conv\.(.+)", r"backbone.fpn.inner_blocks.\1.0.\2")]
_RCNN = [(r"neck\.fpn_convs\.([0-3])\.conv\.(.+)", r"backbone.fpn.layer_blocks.\1.0.\2"),
         (r"rpn_head\.rpn_conv\.(.+)", r"rpn.head.conv.0.0.\1"),
         (r"rpn_head\.rpn_cls\.(.+)", r"rpn.head.cls_logits.\1"),
         (r"rpn_head\.rpn_reg\.(.+)", r"rpn.head.bbox_pred.\1"),
         (r"bbox_head\.shared_fcs\.0\.(.+)", r"roi_heads.box_head.fc6.\1"),
         (r"bbox_head\.shared_fcs\.1\.(.+)", r"roi_heads.box_head.fc7.\1"),
         (r"bbox_head\.fc_cls\.(.+)", r"roi_heads.box_predictor.cls_score.\1"),
         (r"bbox_head\.fc_reg\.(.+)", r"roi_heads.box_predictor.bbox_pred.\1")]
_MASK = [(r"mask_head\.convs\.(\d)\.conv\.(.+)", r"roi_heads.mask_head.\1.0.\2"),
         (r"mask_head\.upsample\.(.+)", r"roi_heads.mask_predictor.conv5_mask.\1"),
         (r"mask_head\.conv_logits\.(.+)", r"roi_heads.mask_predictor.mask_fcn_logits.\1")]
_RETINA = [(r"neck\.fpn_convs\.([0-2])\.conv\.(.+)", r"backbone.fpn.layer_blocks.\1.0.\2"),
           (r"neck\.fpn_convs\.3\.conv\.(.+)", r"backbone.fpn.extra_blocks.p6.\1"),
           (r"neck\.fpn_convs\.4\.conv\.(.+)", r"backbone.fpn.extra_blocks.p7.\1"),
           (r"bbox_head\.cls_convs\.(\d)\.conv\.(.+)", r"head.classification_head.conv.\1.0.\2"),
           (r"bbox_head\.reg_convs\.(\d)\.conv\.(.+)", r"head.regression_head.conv.\1.0.\2"),
           (r"bbox_head\.retina_cls\.(.+)", r"head.classification_head.cls_logits.\1"),
           (r"bbox_head\.retina_reg\.(.+)", r"head.regression_head.bbox_reg.\1")]
KEY_RULES: dict[str, list[tuple[str, str]]] = {
    "faster_rcnn": _COMMON + _RCNN, "mask_rcnn": _COMMON + _RCNN + _MASK, "retinanet": _COMMON + _RETINA}


def v1_key_to_torchvision(key: str, detector: str) -> str | None:
    """Our model's name for a v1 checkpoint key, or None if no rule places it."""
    for pattern, replacement in KEY_RULES[detector]:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def v1_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a v1 checkpoint ({"meta", "state_dict"}) or of a bare v1 state_dict."""
    sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(sd, Mapping) or not any(isinstance(k, str) and k.startswith("backbone.") for k in sd):
        raise CheckpointError(f"{source} is not an MMDetection checkpoint: expected a 'state_dict' with "
                              f"backbone.* keys")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


@dataclass(frozen=True)
class V1Architecture:
    """What a v1 state dict holds: build_detector(detector, depth, attention, k_size=kernels) fits it."""

    detector: str
    depth: int
    attention: str
    kernels: tuple[int, ...] | None
    num_classes: int  # object classes (80 for COCO)

    @property
    def name(self) -> str:
        prefix = {"none": "", "se": "se_", "eca": "eca_"}[self.attention]
        return f"{self.detector}_{prefix}resnet{self.depth}_fpn"


def infer_v1_architecture(sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> V1Architecture:
    """Detector, depth, attention, ECA kernels and class count from the tensors themselves."""
    if "bbox_head.retina_cls.weight" in sd:
        detector, num_classes = "retinanet", sd["bbox_head.retina_cls.weight"].shape[0] // 9
    elif "bbox_head.fc_cls.weight" in sd:
        detector = "mask_rcnn" if "mask_head.conv_logits.weight" in sd else "faster_rcnn"
        num_classes = sd["bbox_head.fc_cls.weight"].shape[0] - 1
    else:
        raise CheckpointError(f"{source}: no bbox_head.retina_cls or bbox_head.fc_cls weights: not a Faster/Mask "
                              f"R-CNN or RetinaNet checkpoint")
    blocks = tuple(len({k.split(".")[2] for k in sd if k.startswith(f"backbone.layer{s}.")}) for s in range(1, 5))
    depth = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (2, 2, 2, 2): 18}.get(blocks)
    if depth is None:
        raise CheckpointError(f"{source}: a ResNet with {blocks} blocks per stage is not ResNet-18/50/101")
    eca = [f"backbone.layer{s}.0.eca.conv.weight" for s in range(1, 5)]
    if all(k in sd for k in eca):
        return V1Architecture(detector, depth, "eca", tuple(int(sd[k].shape[-1]) for k in eca), num_classes)
    attention = "se" if "backbone.layer1.0.se.fc.0.weight" in sd else "none"
    return V1Architecture(detector, depth, attention, None, num_classes)


def map_v1_state_dict(sd: Mapping[str, torch.Tensor], detector: str,
                      source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """v1 keys -> ours, refusing (one line) any key that no rule places."""
    mapped = {}
    for key, tensor in sd.items():
        new = v1_key_to_torchvision(key, detector)
        if new is None:
            raise CheckpointError(f"{source}: cannot place MMDetection v1 key {key!r} (shape {list(tensor.shape)}) "
                                  f"in a torchvision {detector}; the file holds more than a v1 1x {detector}")
        mapped[new] = tensor
    return mapped


def load_mmdet_v1_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], detector: str,
                             source: str = "checkpoint") -> None:
    """Map and load strictly; BN's num_batches_tracked (absent from some files, unused in eval) may be missing."""
    mapped = map_v1_state_dict(sd, detector, source)
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key.endswith("num_batches_tracked") and key not in mapped:
            mapped[key] = tensor
    problem = compare_state_dicts(expected, mapped)
    if problem:
        raise CheckpointError(f"{source} does not fit {detector}: {problem}")
    model.load_state_dict(mapped, strict=True)


def load_released_detector(path: str | Path | Mapping, **build_kwargs: object) -> nn.Module:
    """Build the detector a v1 checkpoint holds (read from its tensors), load it strictly, in v1's box
    convention (legacy.py) and eval mode. `path` may also be an already-loaded checkpoint dict."""
    source = "checkpoint" if isinstance(path, Mapping) else f"checkpoint {str(path)!r}"
    sd = v1_state_dict(path if isinstance(path, Mapping) else read_checkpoint(path), source)
    arch = infer_v1_architecture(sd, source)
    kwargs = {"k_size": list(arch.kernels)} if arch.kernels else {}
    model = build_detector(arch.detector, arch.depth, arch.attention, num_classes=arch.num_classes,
                           mmdet_v1_boxes=True, **kwargs, **build_kwargs)
    load_mmdet_v1_state_dict(model, sd, arch.detector, f"{source} (read as {arch.name})")
    model.released_architecture = arch
    return model.eval()
