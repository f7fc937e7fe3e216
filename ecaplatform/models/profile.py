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

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ecaplatform.text_table import text_table

from .attention import ATTENTIONS
from .eca import ECALayer
from .factory import create_model
from .registry import get_model_info, list_models

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


def _fmt_flops(g: float | None, extra_digit: bool = False) -> str:
    """As the paper prints them: "3.86G" (2^30 units), or "319.4M" (2^20 units) below 1G; measured values
    get one more digit so that the difference stays visible."""
    if g is None:
        return "-"
    digits = 3 if extra_digit else 2
    return f"{g:.{digits}f}G" if g >= 1 else f"{g * 1024:.{digits - 1}f}M"


def format_profile_table(rows: list[ProfileRow], input_size: int = 224) -> str:
    headers = ["model", "params", "params(M)", "paper", "diff", "ECA params", f"MACs@{input_size}", "paper",
               "diff", "conv+fc only"]
    cells = []
    for r in rows:
        params_diff = "-" if r.paper_params_m is None else f"{round(r.params_m, 2) - r.paper_params_m:+.2f}"
        flops_diff = "-" if r.macs_diff_percent is None else f"{r.macs_diff_percent:+.2f}%"
        cells.append([r.name, f"{r.params:,}", f"{r.params_m:.2f}",
                      "-" if r.paper_params_m is None else f"{r.paper_params_m:.2f}", params_diff,
                      str(r.eca_params), _fmt_flops(r.macs_g, True) if input_size == 224 else f"{r.macs_g:.4f}G",
                      _fmt_flops(r.paper_flops_g) if input_size == 224 else "-",
                      flops_diff if input_size == 224 else "-", _fmt_flops(r.conv_linear_macs_g, True)])
    notes = ["params(M) and MACs in 2^20 / 2^30 units as in the paper (G = 2^30, M = 2^20).",
             "MACs = conv/linear multiply-accumulates + 1 per element of BN, ReLU, sigmoid, residual add, "
             "attention multiply, and per input element of pooling."]
    return "\n".join([text_table(headers, cells, right=range(1, len(headers))), "", *notes])


def format_profile_markdown(rows: list[ProfileRow]) -> str:
    """The README's table (224x224): regenerate it with `eca profile --markdown` rather than by hand."""
    lines = ["| model | params | params (2^20) | paper | ECA params | MACs (2^30) | paper | diff |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        paper_params = "-" if r.paper_params_m is None else f"{r.paper_params_m:.2f}"
        diff = "-" if r.macs_diff_percent is None else f"{r.macs_diff_percent:+.2f}%"
        lines.append(f"| {r.name} | {r.params:,} | {r.params_m:.2f} | {paper_params} | {r.eca_params} | "
                     f"{_fmt_flops(r.macs_g, True)} | {_fmt_flops(r.paper_flops_g)} | {diff} |")  # fmt: skip
    return "\n".join(lines)


def display_order(names: list[str]) -> list[str]:
    """ResNets by depth, then MobileNetV2; within a backbone: none, SE, CBAM, ECA (the paper's row order)."""

    def key(name: str) -> tuple:
        info = get_model_info(name)
        return (info.family != "resnet", info.depth or 0, ATTENTIONS.index(info.attention))

    return sorted(names, key=key)


def profile_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="eca profile", description=(
        "Exact params, params in 2^20 units, ECA params and MACs (2^30 units; the paper's 'FLOPs') of "
        "registered models, next to the paper's numbers."))
    parser.add_argument("names", nargs="*", help="model names (default: every registered model; see `eca models`)")
    parser.add_argument("--input-size", type=int, default=224, help="square input side in pixels (default 224)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    output.add_argument("--markdown", action="store_true", help="print the README's markdown table (224x224 only)")
    args = parser.parse_args(argv)
    if args.markdown and args.input_size != 224:
        parser.error("--markdown prints the paper's 224x224 comparison; drop --input-size")
    names = args.names or display_order(list_models())
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        print(f"eca profile: unknown model(s) {', '.join(unknown)}; known: {', '.join(list_models())}",
              file=sys.stderr)
        return 2
    rows = []
    for i, name in enumerate(names, start=1):
        print(f"[{i}/{len(names)}] profiling {name} ...", file=sys.stderr, flush=True)
        rows.append(profile_model(name, args.input_size))
    if args.json:
        print(json.dumps([{**asdict(r), "macs_diff_percent": r.macs_diff_percent} for r in rows], indent=2))
    elif args.markdown:
        print(format_profile_markdown(rows))
    else:
        print(format_profile_table(rows, args.input_size))
    return 0


def models_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="eca models", description="List the registered models.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    infos = [get_model_info(n) for n in display_order(list_models())]
    if args.json:
        print(json.dumps([asdict(i) for i in infos], indent=2))
        return 0

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    print(text_table(["name", "backbone", "attention", "method", "paper top-1", "paper top-5", "released checkpoint"],
                     [[i.name, i.backbone, i.attention, i.method, num(i.paper_top1), num(i.paper_top5),
                       i.released_checkpoint or "-"] for i in infos]))
    return 0
