"""`eca profile` (params and MACs next to the paper's numbers) and `eca models` (the registry).

What "MACs" counts here (the paper's "FLOPs" column, in 2^30 units): every multiply-accumulate of the
convolutions and linear layers (torch.utils.flop_counter's formulas, halved), plus ONE operation per element
for the per-element work the paper's counter evidently included: batch norm (a fused scale-and-shift at
inference), ReLU/ReLU6, sigmoid, the residual add, the attention rescaling multiply, and one per INPUT element
for every pooling/reduction (max pool, global average/max pool, CBAM's channel max/mean).
Why: conv+linear alone gives ResNet-50 3.81 vs the paper's 3.86 (-1.3%); with the per-element work every
ResNet row lands within 0.7% of the paper. No single common convention reproduces every printed value
exactly (see the report in the README); MobileNetV2 stays ~6% below the paper's 319.4M either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .eca import ECALayer
from .factory import create_model
from .registry import get_model_info

aten = torch.ops.aten

# Ops whose built-in flop formula counts 2 FLOPs per multiply-accumulate.
_MAC_OPS = {aten.convolution, aten.addmm, aten.mm, aten.bmm, aten.baddbmm}


def _elements(shape: object) -> int:
    # out_shape of a multi-output op (batch norm) is a tuple of shapes: the first is the output.
    if isinstance(shape, (tuple, list)) and shape and isinstance(shape[0], (torch.Size, tuple, list)):
        shape = shape[0]
    return math.prod(shape) if shape is not None else 0


def _per_output_element(*args: object, out_shape: object = None, **kwargs: object) -> int:
    return _elements(out_shape)


def _per_input_element(*args: object, out_shape: object = None, **kwargs: object) -> int:
    return _elements(args[0])


def _packets(*names: str) -> list:
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


_ELEMENTWISE_OPS = _packets(
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "cudnn_batch_norm", "relu", "relu_", "hardtanh", "hardtanh_", "sigmoid", "sigmoid_",
    "add", "add_", "mul", "mul_",
)
_REDUCTION_OPS = _packets(
    "max_pool2d_with_indices", "max_pool2d", "mean", "amax", "adaptive_max_pool2d", "_adaptive_avg_pool2d",
    "avg_pool2d",
)
_CUSTOM_MAPPING = {**{op: _per_output_element for op in _ELEMENTWISE_OPS},
                   **{op: _per_input_element for op in _REDUCTION_OPS}}


@dataclass
class MacCount:
    total: int  # conv/linear MACs + per-element operations
    conv_linear: int  # conv/linear MACs only
    by_op: dict[str, int]  # per aten op, in MACs / elements


def count_macs(model: nn.Module, input_size: int = 224) -> MacCount:
    """MACs of one forward pass of one image (eval mode, no grad); see the module docstring for what counts."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=_CUSTOM_MAPPING)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        model.train(was_training)
    by_op = {}
    for op, value in counter.get_flop_counts().get("Global", {}).items():
        by_op[str(op).removeprefix("aten.")] = value // 2 if op in _MAC_OPS else value
    conv_linear = sum(v for op, v in counter.get_flop_counts().get("Global", {}).items() if op in _MAC_OPS) // 2
    return MacCount(total=sum(by_op.values()), conv_linear=conv_linear, by_op=by_op)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_eca_params(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if isinstance(m, ECALayer) for p in m.parameters())


@dataclass
class ProfileRow:
    name: str
    params: int
    params_m: float  # 2^20 units
    paper_params_m: float | None
    eca_params: int
    macs: int
    macs_g: float  # 2^30 units
    conv_linear_macs_g: float
    paper_flops_g: float | None

    @property
    def macs_diff_percent(self) -> float | None:
        if self.paper_flops_g is None:
            return None
        return 100 * (self.macs_g - self.paper_flops_g) / self.paper_flops_g


def profile_model(name: str, input_size: int = 224) -> ProfileRow:
    model = create_model(name)
    macs = count_macs(model, input_size)
    info = get_model_info(name)
    params = count_params(model)
    return ProfileRow(name=name, params=params, params_m=params / 2**20, paper_params_m=info.paper_params_m,
                      eca_params=count_eca_params(model), macs=macs.total, macs_g=macs.total / 2**30,
                      conv_linear_macs_g=macs.conv_linear / 2**30, paper_flops_g=info.paper_flops_g)
