"""Training and inference throughput of ECA-Net against its baselines, measured side by side in one run.

The paper (Table 3, 4x RTX 2080Ti) reports images/s; absolute numbers depend on the machine, so this reports
each model's throughput relative to its plain baseline (ResNet-50, MobileNetV2) next to the paper's ratio.
Models are timed round-robin (one timed batch of each model per round, median over rounds) so that noise from
a shared machine hits every model alike.

    python benchmarks/bench_throughput.py                      # CPU, 224x224, batch 8
    python benchmarks/bench_throughput.py --device cuda --batch-size 128 --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from ecaplatform.models import create_model
from ecaplatform.paper import RESULTS

# model -> (paper train FPS, paper inference FPS), Table 3; only the ResNet-50 and MobileNetV2 rows are timed.
PAPER_FPS = {
    name: (RESULTS[name].train_fps, RESULTS[name].infer_fps)
    for name in ("resnet50", "se_resnet50", "cbam_resnet50", "eca_resnet50", "mobilenet_v2", "se_mobilenet_v2",
                 "eca_mobilenet_v2")
}
BASELINE = {name: ("mobilenet_v2" if "mobilenet" in name else "resnet50") for name in PAPER_FPS}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def measure(names: list[str], device: torch.device, batch_size: int, image_size: int, rounds: int) -> dict:
    models: dict[str, nn.Module] = {name: create_model(name).to(device) for name in names}
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    labels = torch.randint(0, 1000, (batch_size,), device=device)
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for name, m in models.items()}
    loss_fn = nn.CrossEntropyLoss()

    def infer(model: nn.Module) -> None:
        with torch.inference_mode():
            model(images)

    def train(name: str) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        loss_fn(models[name](images), labels).backward()
        optimizers[name].step()

    for name, model in models.items():  # warm-up: allocator, cuDNN autotuning, lazy init
        model.eval()
        infer(model)
        model.train()
        train(name)

    times: dict[str, dict[str, list[float]]] = {name: {"train": [], "infer": []} for name in names}
    for r in range(rounds):
        for name, model in models.items():
            model.eval()
            times[name]["infer"].append(_timed(lambda m=model: infer(m), device))
            model.train()
            times[name]["train"].append(_timed(lambda n=name: train(n), device))
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return {
        name: {kind: batch_size / statistics.median(values) for kind, values in per_kind.items()}
        for name, per_kind in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(PAPER_FPS), choices=list(PAPER_FPS))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    names = list(dict.fromkeys([BASELINE[n] for n in args.models] + args.models))
    print(
        f"throughput on {device} ({torch.get_num_threads()} threads), batch {args.batch_size}, "
        f"{args.image_size}x{args.image_size}, median of {args.rounds} rounds",
        flush=True,
    )
    fps = measure(names, device, args.batch_size, args.image_size, args.rounds)

    columns = ("train img/s", "ratio", "paper", "infer img/s", "ratio", "paper")
    header = f"{'model':<18} " + " ".join(f"{c:>11}" if "img/s" in c else f"{c:>6}" for c in columns)
    print(header)
    print("-" * len(header))
    for name in names:
        base = BASELINE[name]
        paper_train, paper_infer = PAPER_FPS[name]
        base_train, base_infer = PAPER_FPS[base]
        print(
            f"{name:<18} {fps[name]['train']:>11.1f} {fps[name]['train'] / fps[base]['train']:>6.3f} "
            f"{paper_train / base_train:>6.3f} {fps[name]['infer']:>11.1f} "
            f"{fps[name]['infer'] / fps[base]['infer']:>6.3f} {paper_infer / base_infer:>6.3f}"
        )
    print("ratio = throughput / the plain baseline's, measured in this run; paper = the same ratio from Table 3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
