"""The registered detectors: Tables 5/6's 18 configurations (3 detectors x ResNet-50/101 x none | se | eca) and
the CPU demo's Faster R-CNN over ResNet-18 (none | se | eca), built by create_detector."""

from __future__ import annotations

from torch import nn

from ..registry import ATTENTION_PREFIX, ModelInfo, get_model_info, model_entrypoint, register_model
from .detectors import DETECTORS, build_detector

_METHOD = {"none": "ResNet", "se": "SENet", "eca": "ECA-Net"}
_TASK = {"faster_rcnn": "detection", "mask_rcnn": "instance_segmentation", "retinanet": "detection"}
# The CPU demo's detector: images of 128-256 px seen at 160-192 px, a narrower FPN and box head, fewer proposals
# and RoIs; trained from scratch, so nothing is frozen and BatchNorm learns its statistics (no ImageNet ones to keep).
SMALL_DEFAULTS: dict[str, object] = {
    "min_size": 160, "max_size": 192, "frozen_stages": -1, "norm_eval": False, "fpn_channels": 128, "box_head_dim": 256,
    "rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300, "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 100, "rpn_batch_size_per_image": 128, "box_batch_size_per_image": 128,
}


def detector_name(detector: str, depth: int, attention: str) -> str:
    return f"{detector}_{ATTENTION_PREFIX[attention]}resnet{depth}_fpn"


def _register(detector: str, depth: int, attention: str) -> None:
    info = ModelInfo(name=detector_name(detector, depth, attention), family=detector, depth=depth,
                     attention=attention, backbone=f"ResNet-{depth}", method=_METHOD[attention],
                     task=_TASK[detector])
    defaults = SMALL_DEFAULTS if depth == 18 else {}

    def entrypoint(num_classes: int = 80, **kwargs: object) -> nn.Module:
        return build_detector(detector, depth, attention, num_classes=num_classes, **{**defaults, **kwargs})

    entrypoint.__name__ = entrypoint.__qualname__ = info.name
    entrypoint.__doc__ = f"{detector} over {info.method} {info.backbone} + FPN; kwargs go to build_detector."
    register_model(info)(entrypoint)


for _attention in ("none", "se", "eca"):
    for _detector in DETECTORS:
        for _depth in (50, 101):
            _register(_detector, _depth, _attention)
    _register("faster_rcnn", 18, _attention)


def create_detector(name: str, num_classes: int = 80, **kwargs: object) -> nn.Module:
    """Build a registered detector. num_classes counts object classes (80 for COCO; labels 1..num_classes);
    kwargs go to build_detector (k_size, min_size, max_size, mmdet_v1_boxes, torchvision's detector options)."""
    info = get_model_info(name)
    if info.task == "classification":
        raise ValueError(f"{name!r} is a classifier; build it with create_model")
    if "k_size" in kwargs and info.attention != "eca":
        raise ValueError(f"k_size applies to ECA models only, and {name!r} has attention={info.attention!r}")
    return model_entrypoint(name)(num_classes=num_classes, **kwargs)
