"""Building registered models, with or without weights (timm's _factory): the one module that knows both the
model families and the checkpoint helpers, so neither of those needs the other."""

from __future__ import annotations

import inspect
from pathlib import Path

from torch import nn

from .checkpoint import infer_architecture, load_checkpoint_into, load_state_dict_strict, read_state_dict
from .mobilenetv2 import MobileNetV2
from .registry import get_model_info, model_entrypoint
from .resnet import ResNet

# Importing the families above registers their models; their classes word the "allowed keyword arguments" error.
_FAMILY_CLASSES: dict[str, type[nn.Module]] = {"resnet": ResNet, "mobilenet_v2": MobileNetV2}


def create_model(name: str, num_classes: int = 1000, checkpoint: str | Path | None = None,
                 **kwargs: object) -> nn.Module:
    """Build a registered model; with `checkpoint`, load its weights strictly.

    kwargs go to the model's constructor (e.g. k_size="adaptive" or k_size=[3, 3, 3, 3] for ECA models,
    se_reduction, dropout for MobileNetV2). A checkpoint may be a released one (dict with `state_dict`,
    `module.` prefixes), a bare state_dict, or one of our Lightning checkpoints (`model.` prefixes).
    """
    info = get_model_info(name)
    if info.task != "classification":
        raise ValueError(f"{name!r} is a {info.task} model: build it with ecaplatform.models.detection."
                         "create_detector (num_classes counts object classes, 80 for COCO)")
    if "k_size" in kwargs and info.attention != "eca":
        raise ValueError(f"k_size applies to ECA models only, and {name!r} has attention={info.attention!r}")
    try:
        model = model_entrypoint(name)(num_classes=num_classes, **kwargs)
    except TypeError as err:
        allowed = [p for p in inspect.signature(_FAMILY_CLASSES[info.family]).parameters
                   if p not in ("depth", "attention")]
        raise TypeError(f"{name}: {err}; allowed keyword arguments: {', '.join(allowed)}") from err
    if checkpoint is not None:
        load_checkpoint_into(model, checkpoint, model_name=name)
    return model


def load_official_checkpoint(path: str | Path) -> nn.Module:
    """Build the model a checkpoint file holds and load it strictly; the model is returned in eval mode.

    Reads released ECA-Net files ({'state_dict': ...} with `module.` prefixes), bare state_dicts and our
    Lightning checkpoints (`model.` prefixes). The `arch` field is ignored: architecture, attention, ECA
    kernels per stage/block, SE ratio and number of classes come from the tensors themselves.
    """
    state_dict = read_state_dict(path)
    spec = infer_architecture(state_dict)
    model = create_model(spec.name, num_classes=spec.num_classes, **spec.kwargs)
    load_state_dict_strict(model, state_dict, f"checkpoint {str(path)!r} (read as {spec.name})")
    return model.eval()
