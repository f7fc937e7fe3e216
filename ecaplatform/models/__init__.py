"""ECA-Net models in pure torch: the ECA layer, ResNet and MobileNetV2 with none | se | cbam | eca attention,
a registry carrying the paper's numbers, and safe loading of the released checkpoints. No Lightning here."""

from __future__ import annotations

from . import detection as detection  # importing it registers the detectors (Tables 5/6)
from .attention import CBAM, SELayer, make_attention
from .checkpoint import CheckpointError, extract_state_dict, infer_architecture
from .eca import ECALayer, adaptive_kernel_size
from .factory import create_model, load_official_checkpoint  # importing it registers every model family
from .mobilenetv2 import MobileNetV2
from .registry import ModelInfo, get_model_info, list_models, register_model
from .resnet import RELEASED_RESNET_KERNELS, ResNet

__all__ = [
    "CBAM",
    "RELEASED_RESNET_KERNELS",
    "CheckpointError",
    "ECALayer",
    "MobileNetV2",
    "ModelInfo",
    "ResNet",
    "SELayer",
    "adaptive_kernel_size",
    "create_model",
    "extract_state_dict",
    "get_model_info",
    "infer_architecture",
    "list_models",
    "load_official_checkpoint",
    "make_attention",
    "register_model",
]
