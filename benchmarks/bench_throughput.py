"""Training and inference throughput of ECA-Net against its baselines, measured side by side in one run.

The paper (Table 3, 4x RTX 2080Ti) reports images/s; absolute numbers depend on the machine, so this reports
each model's throughput relative to its plain baseline (ResNet-50, MobileNetV2) next to the paper's ratio.
Models are timed round-robin (one timed batch of each model per round, median over rounds) so that noise from
a shared machine hits every model alike.

    python benchmarks/bench_throughput.py                      # CPU, 224x224, batch 8
    python benchmarks/bench_throughput.py --device cuda --batch-size 128 --rounds 20
    python benchmarks/bench_throughput.py --device cuda --batch-size 256 --bf16 --channels-last --compile \\
        --cudnn-benchmark --models se_resnet50 eca_resnet50 --markdown

Speed switches, as the platform's training uses them: --channels-last (NHWC weights and inputs), --bf16
(torch.autocast to bfloat16 on the device, CPU included where supported), --compile (Module.compile in place, as
ImageClassifier(compile=True) does; warm-up runs longer so that compilation is not timed). On CUDA the table also
shows each model's peak memory during its timed steps, less what the other models held (all models stay on the
device, so the raw allocator peak would count the others' weights and optimizer state too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from ecaplatform.models import create_model
from ecaplatform.paper import RESULTS

# model -> (paper train FPS, paper inference FPS), Table 3; only the ResNet-50 and MobileNetV2 rows are timed.
PAPER_FPS = {
    name: (RESULTS[name].train_fps, RESULTS[name].infer_fps)
    for name in ("resnet50", "se_resnet50", "cbam_resnet50", "eca_resnet50", "mobilenet_v2", "se_mobilenet_v2",
                 "eca_mobilenet_v2")
}  # fmt: skip
BASELINE = {name: ("mobilenet_v2" if "mobilenet" in name else "resnet50") for name in PAPER_FPS}
# The issue's target: ECA-ResNet-50 trains at >= 0.95x ResNet-50's images/s on the same stack.
ECA_TRAIN_TARGET = 0.95
MIB = 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def unsupported(device: torch.device, bf16: bool, compile_: bool) -> str | None:
    """Why a requested switch cannot run on this device, or None."""
    if bf16:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return f"--bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support"
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
        except (RuntimeError, AssertionError) as err:
            return f"--bf16: torch.autocast(bfloat16) does not run on {device.type}: {err}"
    if compile_ and not hasattr(torch, "compile"):
        return "--compile needs torch >= 2.0"
    return None


def _resident_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> int:
    """What the model holds between steps: parameters, buffers, and for training its gradients (where allocated)
    and optimizer state (momentum)."""
    tensors = list(model.parameters()) + list(model.buffers())
    if optimizer is not None:
        tensors += [p.grad for p in model.parameters() if p.grad is not None]
        tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def measure(
    names: list[str], device: torch.device, batch_size: int, image_size: int, rounds: int, *,
    channels_last: bool = False, bf16: bool = False, compile_: bool = False, warmup: int = 1,
    deadline: float | None = None,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """images/s per model and kind ("train", "infer"), plus peak MiB ("train_mib", "infer_mib") on CUDA.

    With a deadline (time.perf_counter() value), models whose warm-up would start after it are left out, and rounds
    stop early once it has passed (at least one round is timed), so a budgeted run reports what it could measure.
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if compile_:
        # The models share forward code (ResNet.forward, the blocks'); each model and mode (train/eval) is its own
        # compiled entry, and past Dynamo's recompile limit (8) it would silently run eager.
        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, name, max(getattr(config, name), 4 * len(names)))
    models: dict[str, nn.Module] = {}
    for name in names:
        models[name] = create_model(name).to(device, memory_format=memory_format)
        if compile_:
            models[name].compile()  # in place, as ImageClassifier(compile=True)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 1000, (batch_size,), device=device)
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for name, m in models.items()}
    loss_fn = nn.CrossEntropyLoss()
    cuda = device.type == "cuda"

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def infer(model: nn.Module) -> None:
        with torch.inference_mode(), autocast():
            model(images)

    def train(name: str) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(models[name](images).float(), labels)
        loss.backward()
        optimizers[name].step()

    peaks: dict[str, dict[str, int]] = {name: {"train": 0, "infer": 0} for name in names}

    @contextlib.contextmanager
    def tracked(name: str, kind: str) -> Iterator[None]:
        """Peak memory of this model alone: the allocator's peak during the step, less what the other models
        held (everything allocated before the step that is not this model's)."""
        if not cuda:
            yield
            return
        _sync(device)
        own = _resident_bytes(models[name], optimizers[name] if kind == "train" else None)
        others = torch.cuda.memory_allocated(device) - own
        torch.cuda.reset_peak_memory_stats(device)
        yield
        _sync(device)
        peaks[name][kind] = max(peaks[name][kind], torch.cuda.max_memory_allocated(device) - others)

    # Warm-up: allocator, cuDNN autotuning, lazy init; with --compile the first calls compile (train and eval are
    # two graphs), so a few more calls follow before anything is timed.
    for name, model in list(models.items()):
        if deadline is not None and time.perf_counter() > deadline:
            print(f"  time budget spent: {name} left out", file=sys.stderr, flush=True)
            del models[name], optimizers[name]
            continue
        started = time.perf_counter()
        for _ in range(warmup):  # not tracked: cuDNN's autotuning tries algorithms with large workspaces
            model.eval()
            infer(model)
            model.train()
            train(name)
        print(f"  {name} warmed up in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)

    times: dict[str, dict[str, list[float]]] = {name: {"train": [], "infer": []} for name in models}
    for r in range(rounds):
        for name, model in models.items():
            model.eval()
            with tracked(name, "infer"):
                times[name]["infer"].append(_timed(lambda m=model: infer(m), device))
            model.train()
            with tracked(name, "train"):
                times[name]["train"].append(_timed(lambda n=name: train(n), device))
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        if deadline is not None and time.perf_counter() > deadline and r + 1 < rounds:
            print(f"  time budget spent: stopping after {r + 1} rounds", file=sys.stderr, flush=True)
            break
    results: dict[str, dict[str, float]] = {}
    for name, per_kind in times.items():
        results[name] = {kind: batch_size / statistics.median(values) for kind, values in per_kind.items()}
        results[name]["rounds"] = len(per_kind["train"])
        if cuda:
            for kind in ("train", "infer"):
                results[name][f"{kind}_mib"] = peaks[name][kind] / MIB
    return results


def _table(fps: dict[str, dict[str, float]], names: list[str], markdown: bool, memory: bool) -> list[str]:
    columns = ["train img/s", "ratio", "paper", "infer img/s", "ratio", "paper"]
    if memory:
        columns += ["train MiB", "infer MiB"]
    rows = []
    for name in names:
        if name not in fps:
            continue
        base = BASELINE[name]
        paper_train, paper_infer = PAPER_FPS[name]
        base_train, base_infer = PAPER_FPS[base]
        have_base = base in fps
        cells = [
            f"{fps[name]['train']:.1f}",
            f"{fps[name]['train'] / fps[base]['train']:.3f}" if have_base else "n/a",
            f"{paper_train / base_train:.3f}",
            f"{fps[name]['infer']:.1f}",
            f"{fps[name]['infer'] / fps[base]['infer']:.3f}" if have_base else "n/a",
            f"{paper_infer / base_infer:.3f}",
        ]
        if memory:
            cells += [f"{fps[name]['train_mib']:.0f}", f"{fps[name]['infer_mib']:.0f}"]
        rows.append((name, cells))
    if markdown:
        lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
        return lines
    widths = [11 if ("img/s" in c or "MiB" in c) else 6 for c in columns]
    header = f"{'model':<18} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
    lines = [header, "-" * len(header)]
    for name, cells in rows:
        lines.append(f"{name:<18} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(PAPER_FPS), choices=list(PAPER_FPS))
    parser.add_argument("--channels-last", action="store_true", help="NHWC weights and inputs")
    parser.add_argument("--bf16", action="store_true", help="torch.autocast to bfloat16 on the device")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models (Module.compile)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="cuDNN autotuning, as the GPU recipes use")
    parser.add_argument("--warmup", type=int, help="warm-up calls per model and mode (default 1, 3 with --compile)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--max-seconds", type=float, help="soft time budget: leave out models / stop rounds after")
    parser.add_argument("--strict", action="store_true",
                        help=f"exit 1 if ECA-ResNet-50 trains at < {ECA_TRAIN_TARGET}x ResNet-50")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    deadline = time.perf_counter() + args.max_seconds if args.max_seconds else None
    device = torch.device(args.device)
    reason = unsupported(device, args.bf16, args.compile)
    if reason:
        print(f"unsupported: {reason}", file=sys.stderr)
        return 2
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    warmup = args.warmup if args.warmup is not None else (3 if args.compile else 1)
    names = list(dict.fromkeys([BASELINE[n] for n in args.models] + args.models))
    flags = {"channels_last": args.channels_last, "bf16 autocast": args.bf16, "torch.compile": args.compile,
             "cudnn.benchmark": args.cudnn_benchmark}  # fmt: skip
    switches = [switch for switch, on in flags.items() if on]
    print(
        f"throughput on {device} ({torch.get_num_threads()} threads), batch {args.batch_size}, "
        f"{args.image_size}x{args.image_size}, median of {args.rounds} rounds"
        + (f", {', '.join(switches)}" if switches else ""),
        flush=True,
    )
    fps = measure(names, device, args.batch_size, args.image_size, args.rounds, channels_last=args.channels_last,
                  bf16=args.bf16, compile_=args.compile, warmup=warmup, deadline=deadline)  # fmt: skip

    memory = device.type == "cuda"
    print("\n".join(_table(fps, names, args.markdown, memory)))
    print("ratio = throughput / the plain baseline's, measured in this run; paper = the same ratio from Table 3")
    if memory:
        print("MiB = peak CUDA memory of the model's own steps (the other models' resident memory not counted)")
    eca_ratio = None
    if "eca_resnet50" in fps and "resnet50" in fps:
        eca_ratio = fps["eca_resnet50"]["train"] / fps["resnet50"]["train"]
        verdict = "met" if eca_ratio >= ECA_TRAIN_TARGET else "MISSED"
        print(f"eca_resnet50 / resnet50 training throughput: {eca_ratio:.3f}x (target >= {ECA_TRAIN_TARGET}x: "
              f"{verdict})")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "device": str(device), "device_name": torch.cuda.get_device_name(device) if memory else "cpu",
            "torch": torch.__version__, "batch_size": args.batch_size, "image_size": args.image_size,
            "rounds": args.rounds, "switches": switches, "models": fps, "eca_train_ratio": eca_ratio,
            "eca_train_target": ECA_TRAIN_TARGET, "left_out": [name for name in names if name not in fps],
        }, indent=1))  # fmt: skip
    missing = [name for name in names if name not in fps]
    if missing:
        print(f"not measured (time budget): {', '.join(missing)}")
    if args.strict and (eca_ratio is None or eca_ratio < ECA_TRAIN_TARGET):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
