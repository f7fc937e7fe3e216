"""`eca models` (the registry) and `eca profile` (params and MACs next to the paper's numbers; what is counted
is said in ecaplatform.models.profile)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from ecaplatform.cli.text_table import text_table
from ecaplatform.models.attention import ATTENTIONS
from ecaplatform.models.profile import (
    DetectorProfileRow,
    ProfileRow,
    count_eca_params,
    count_macs,
    count_params,
    profile_detector,
    profile_model,
)
from ecaplatform.models.registry import get_model_info, list_models


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
        return (info.task != "classification", info.family != "resnet", info.family, info.depth or 0,
                ATTENTIONS.index(info.attention))

    return sorted(names, key=key)


def profile_checkpoint(path: str, input_size: int = 224) -> ProfileRow:
    """The row of the network a checkpoint file holds, built as load_official_checkpoint builds it (architecture,
    kernels and class count from its tensors); the paper's numbers are those of the registered model it is."""
    from ecaplatform.models import infer_architecture, load_official_checkpoint

    model = load_official_checkpoint(path)
    info = get_model_info(infer_architecture(model.state_dict()).name)
    macs, params = count_macs(model, input_size), count_params(model)
    return ProfileRow(name=info.name, params=params, params_m=params / 2**20, paper_params_m=info.paper_params_m,
                      eca_params=count_eca_params(model), macs=macs.total, macs_g=macs.total / 2**30,
                      conv_linear_macs_g=macs.conv_linear / 2**30, paper_flops_g=info.paper_flops_g)


def profile_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="eca profile", description=(
        "Exact params, params in 2^20 units, ECA params and MACs (2^30 units; the paper's 'FLOPs') of "
        "registered models, next to the paper's numbers."))
    parser.add_argument("names", nargs="*", help="model names (default: every registered model; see `eca models`)")
    parser.add_argument("--input-size", type=int, default=224, help="square input side in pixels (default 224)")
    parser.add_argument("--checkpoint", metavar="FILE", help="profile the network a checkpoint file holds (e.g. a "
                        "released .pth.tar; its architecture is read from its tensors) instead of model names")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    output.add_argument("--markdown", action="store_true", help="print the README's markdown table (224x224 only)")
    args = parser.parse_args(argv)
    if args.markdown and args.input_size != 224:
        parser.error("--markdown prints the paper's 224x224 comparison; drop --input-size")
    if args.checkpoint:
        from ecaplatform.models import CheckpointError

        if args.names:
            parser.error("give model names or --checkpoint, not both")
        try:
            rows = [profile_checkpoint(args.checkpoint, args.input_size)]
        except CheckpointError as err:
            print(f"eca profile: {err}", file=sys.stderr)
            return 1
        return print_profile(rows, args)
    names = args.names or display_order(list_models())
    unknown = [n for n in names if n not in list_models(None)]
    if unknown:
        print(f"eca profile: unknown model(s) {', '.join(unknown)}; known: {', '.join(list_models(None))}",
              file=sys.stderr)
        return 2
    detectors = [n for n in names if get_model_info(n).task != "classification"]
    if detectors:
        return profile_detectors(detectors, args.json)
    rows = []
    for i, name in enumerate(names, start=1):
        print(f"[{i}/{len(names)}] profiling {name} ...", file=sys.stderr, flush=True)
        rows.append(profile_model(name, args.input_size))
    return print_profile(rows, args)


def profile_detectors(names: list[str], as_json: bool) -> int:
    """Detectors next to Table 5, as MMDetection's get_flops.py counts (ecaplatform.models.profile)."""
    rows: list[DetectorProfileRow] = []
    for i, name in enumerate(names, start=1):
        print(f"[{i}/{len(names)}] profiling {name} at 1280x800 ...", file=sys.stderr, flush=True)
        rows.append(profile_detector(name))
    if as_json:
        print(json.dumps([{**asdict(r), "params_diff_percent": r.params_diff_percent} for r in rows], indent=2))
        return 0

    def num(v: float | None, digits: int = 2) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    cells = [[r.name, f"{r.params:,}", f"{r.trainable_params:,}", num(r.trainable_params / 1e6, 3),
              num(r.paper_params_m), "-" if r.params_diff_percent is None else f"{r.params_diff_percent:+.3f}%",
              num(r.macs_g), num(r.mmdet_macs_g), num(r.paper_gflops), num(r.conv_linear_macs_g)] for r in rows]
    print(text_table(["model", "params", "trainable", "trainable(M)", "paper", "diff", "GMACs@1280x800",
                      "as MMDet", "paper", "conv+fc only"], cells, right=range(1, 10)))
    print("\nMMDetection's convention (Table 5): trainable params (stem and layer1 frozen) in 10^6, MACs in 10^9 of "
          "backbone + FPN + heads, R-CNN box head on 1000 proposals and mask head on 100; MACs as for the "
          "classifiers (conv/linear + 1 per element of BN, ReLU, add, ...), RoIAlign not counted; 'as MMDet' counts "
          "the mask head's deconv per output position (4x its MACs), as MMDetection's counter did.")
    return 0


def print_profile(rows: list[ProfileRow], args: argparse.Namespace) -> int:
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
    infos = [get_model_info(n) for n in display_order(list_models(None))]
    if args.json:
        print(json.dumps([asdict(i) for i in infos], indent=2))
        return 0

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    print(text_table(["name", "task", "backbone", "attention", "method", "paper top-1", "paper top-5",
                      "released checkpoint"],
                     [[i.name, i.task, i.backbone, i.attention, i.method, num(i.paper_top1), num(i.paper_top5),
                       i.released_checkpoint or "-"] for i in infos]))
    return 0
