"""The model registry (timm's _registry): names -> entrypoints and metadata. Data only: it imports no model
family and no factory or checkpoint code, so every other module may import it.

The paper's numbers come from ecaplatform.paper, the one place they are written; ModelInfo carries them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ecaplatform.paper import detection_result, paper_result

if TYPE_CHECKING:
    from torch import nn

# Registered names are prefix + backbone name; checkpoint inference goes the other way with find_model.
ATTENTION_PREFIX = {"none": "", "se": "se_", "cbam": "cbam_", "eca": "eca_"}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # "resnet" | "mobilenet_v2" | "faster_rcnn" | "mask_rcnn" | "retinanet"
    depth: int | None  # ResNet depth; None for MobileNetV2
    attention: str  # "none" | "se" | "cbam" | "eca"
    backbone: str  # e.g. "ResNet-50"
    method: str  # the paper's row label, e.g. "ECA-Net"
    task: str = "classification"  # | "detection" | "instance_segmentation" (Mask R-CNN: boxes and masks)
    # Filled from ecaplatform.paper by name (not constructor arguments, so no model file can restate them);
    # None where the paper has no number.
    paper_top1: float | None = field(default=None, init=False)
    paper_top5: float | None = field(default=None, init=False)
    paper_params_m: float | None = field(default=None, init=False)  # 2^20 units, as the paper prints ("24.37M")
    paper_flops_g: float | None = field(default=None, init=False)  # 2^30 units ("3.86G"); "319.4M" is 319.4 / 1024
    released_checkpoint: str | None = field(default=None, init=False)  # the official weights' file name

    def __post_init__(self) -> None:
        if self.task != "classification":  # Tables 5/6 (other units and metrics): paper.detection_result
            row = detection_result(self.name)
            object.__setattr__(self, "released_checkpoint", row.released_checkpoint if row else None)
            return
        paper = paper_result(self.name)
        if paper is not None:
            for attr, value in (("paper_top1", paper.top1), ("paper_top5", paper.top5),
                                ("paper_params_m", paper.params_m), ("paper_flops_g", paper.flops_g),
                                ("released_checkpoint", paper.released_checkpoint)):
                object.__setattr__(self, attr, value)  # the documented way to set a frozen field in __post_init__


ModelEntrypoint = Callable[..., "nn.Module"]
_ENTRYPOINTS: dict[str, ModelEntrypoint] = {}
_INFOS: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> Callable[[ModelEntrypoint], ModelEntrypoint]:
    """Decorator: register `entrypoint(num_classes=1000, **kwargs) -> nn.Module` under info.name."""

    def register(entrypoint: ModelEntrypoint) -> ModelEntrypoint:
        if info.name in _ENTRYPOINTS:
            raise RuntimeError(f"model {info.name!r} is registered twice")
        _ENTRYPOINTS[info.name] = entrypoint
        _INFOS[info.name] = info
        return entrypoint

    return register


def list_models(task: str | None = "classification") -> list[str]:
    """The registered model names of a task ("classification", "detection", "instance_segmentation"; None:
    every task), sorted."""
    return sorted(n for n, i in _INFOS.items() if task is None or i.task == task)


def get_model_info(name: str) -> ModelInfo:
    """The registered model's family, attention and the paper's numbers for it."""
    if name not in _INFOS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models(None))}")
    return _INFOS[name]


def model_entrypoint(name: str) -> ModelEntrypoint:
    """The function that builds the registered model `name`."""
    get_model_info(name)  # the unknown-name error
    return _ENTRYPOINTS[name]


def find_model(family: str, depth: int | None, attention: str) -> str | None:
    """The registered name of the model with this family, depth and attention, or None if none is registered."""
    return next((i.name for i in _INFOS.values() if (i.family, i.depth, i.attention) == (family, depth, attention)),
                None)
