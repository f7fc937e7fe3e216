"""COCO detectors over our ResNets (pure torch + torchvision): Faster R-CNN, Mask R-CNN and RetinaNet with an FPN
as MMDetection v1's 1x configs, registered by name (zoo), ImageNet backbone initialisation (pretrained), and the
six released ECA detectors (MMDetection v1 checkpoints) loaded strictly in v1's box convention (mmdet_v1)."""

from __future__ import annotations

from .detectors import DETECTORS, RELEASED_DETECTOR_KERNELS, RetinaNet, build_detector
from .legacy import use_mmdet_v1_boxes
from .mmdet_v1 import (
    COCO_CATEGORY_IDS,
    RELEASED_DETECTORS,
    infer_v1_architecture,
    load_mmdet_v1_state_dict,
    load_released_detector,
)
from .pretrained import BackboneInit, init_backbone
from .zoo import create_detector, detector_name

__all__ = [
    "COCO_CATEGORY_IDS",
    "DETECTORS",
    "RELEASED_DETECTORS",
    "RELEASED_DETECTOR_KERNELS",
    "BackboneInit",
    "RetinaNet",
    "build_detector",
    "create_detector",
    "detector_name",
    "infer_v1_architecture",
    "init_backbone",
    "load_mmdet_v1_state_dict",
    "load_released_detector",
    "use_mmdet_v1_boxes",
]
