"""The model registry: one factory per registered name (timm style), each carrying the paper's numbers.

Paper numbers: top-1/top-5 on ImageNet val (percent), params in 2^20 units and FLOPs (MACs) in 2^30 units,
as printed in the ECA-Net paper (Table 3; ResNet-18/34 accuracies from the paper's poster). None where the
paper has no number.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # "resnet" | "mobilenet_v2"
    depth: int | None  # ResNet depth; None for MobileNetV2
    attention: str  # "none" | "se" | "cbam" | "eca"
    backbone: str  # e.g. "ResNet-50"
    method: str  # the paper's row label, e.g. "ECA-Net"
    paper_top1: float | None = None
    paper_top5: float | None = None
    paper_params_m: float | None = None  # 2^20 units, as the paper prints ("24.37M")
    paper_flops_g: float | None = None  # 2^30 units ("3.86G"); MobileNetV2's "319.4M" is 319.4 / 1024
    released_checkpoint: str | None = None  # the official weights' file name, where one was released


ModelFactory = Callable[..., nn.Module]
_FACTORIES: dict[str, ModelFactory] = {}
_INFOS: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register `factory(num_classes=1000, **kwargs) -> nn.Module` under info.name."""

    def register(factory: ModelFactory) -> ModelFactory:
        if info.name in _FACTORIES:
            raise RuntimeError(f"model {info.name!r} is registered twice")
        _FACTORIES[info.name] = factory
        _INFOS[info.name] = info
        return factory

    return register


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_FACTORIES)


def _check_name(name: str) -> None:
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")


def get_model_info(name: str) -> ModelInfo:
    """The registered model's family, attention and the paper's numbers for it."""
    _check_name(name)
    return _INFOS[name]


def create_model(name: str, num_classes: int = 1000, checkpoint: str | None = None, **kwargs: object) -> nn.Module:
    """Build a registered model; with `checkpoint`, load its weights strictly.

    kwargs go to the model's constructor (e.g. k_size="adaptive" or k_size=[3, 3, 3, 3] for ECA models,
    se_reduction, dropout for MobileNetV2). A checkpoint may be a released one (dict with `state_dict`,
    `module.` prefixes), a bare state_dict, or one of our Lightning checkpoints (`model.` prefixes).
    """
    _check_name(name)
    info = _INFOS[name]
    if "k_size" in kwargs and info.attention != "eca":
        raise ValueError(f"k_size applies to ECA models only, and {name!r} has attention={info.attention!r}")
    try:
        model = _FACTORIES[name](num_classes=num_classes, **kwargs)
    except TypeError as err:
        allowed = [p for p in inspect.signature(_model_class(info.family)).parameters
                   if p not in ("depth", "attention")]
        raise TypeError(f"{name}: {err}; allowed keyword arguments: {', '.join(allowed)}") from err
    if checkpoint is not None:
        from .checkpoint import load_checkpoint_into

        load_checkpoint_into(model, checkpoint, model_name=name)
    return model


def _model_class(family: str) -> type[nn.Module]:
    from .mobilenetv2 import MobileNetV2
    from .resnet import ResNet

    return ResNet if family == "resnet" else MobileNetV2
