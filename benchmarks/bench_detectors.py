"""Detector training and inference images/s with ResNet / SE / ECA backbones, measured side by side in one run.

Absolute speed depends on the machine; what this reports is each backbone's speed relative to the plain ResNet
of the same detector, measured round-robin (one timed step of each model per round, median over rounds), so that
the noise of a shared machine hits every model alike. Inputs are random images of the given size (the detector's
transform resizes them to min_size/max_size as in training), with 3 random boxes (and masks) per image.

    python benchmarks/bench_detectors.py                                  # CPU: the demo's ResNet-18 detectors
    python benchmarks/bench_detectors.py --device cuda --depth 50 --min-size 800 --max-size 1333 --batch-size 2 \\
        --detectors faster_rcnn mask_rcnn retinanet --markdown
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from ecaplatform.models.detection import create_detector, detector_name

ATTENTIONS = ("none", "se", "eca")


def targets(batch: int, size: int, masks: bool, device: torch.device, seed: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        corner = torch.rand(3, 2, generator=generator) * size * 0.6
        boxes = torch.cat([corner, corner + size * 0.2 + torch.rand(3, 2, generator=generator) * size * 0.2], 1)
        target = {"boxes": boxes, "labels": torch.randint(1, 81, (3,), generator=generator)}
        if masks:
            target["masks"] = torch.zeros(3, size, size, dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
                target["masks"][i, y1:y2, x1:x2] = 1
        out.append({k: v.to(device) for k, v in target.items()})
    return out


def step_functions(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Callable[[], None]]:
    model = create_detector(name, min_size=args.min_size, max_size=args.max_size).to(device)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    images = [torch.rand(3, args.image_size, args.image_size, device=device) for _ in range(args.batch_size)]
    boxes = targets(args.batch_size, args.image_size, name.startswith("mask_rcnn"), device, seed=0)

    def train() -> None:
        model.train()
        loss = sum(model(images, boxes).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.inference_mode()
    def infer() -> None:
        model.eval()
        model(images)

    return {"train": train, "infer": infer}


def timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depth", type=int, default=18, choices=(18, 50, 101))
    parser.add_argument("--detectors", nargs="+", default=["faster_rcnn"])
    parser.add_argument("--image-size", type=int, default=256, help="side of the random square input images")
    parser.add_argument("--min-size", type=int, default=256)
    parser.add_argument("--max-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    names = [detector_name(d, args.depth, a) for d in args.detectors for a in ATTENTIONS]
    steps = {name: step_functions(name, args, device) for name in names}
    seconds: dict[tuple[str, str], list[float]] = {(n, k): [] for n in names for k in ("train", "infer")}
    for round_ in range(args.warmup + args.rounds):
        for name in names:  # round-robin: a noisy second hits every model
            for kind, step in steps[name].items():
                elapsed = timed(step, device)
                if round_ >= args.warmup:
                    seconds[(name, kind)].append(elapsed)
    rate = {key: args.batch_size / statistics.median(values) for key, values in seconds.items()}
    bar = "|" if args.markdown else " "
    print(f"{args.device}, {args.image_size} px inputs resized to {args.min_size}/{args.max_size}, batch "
          f"{args.batch_size}, median of {args.rounds} rounds")
    print(f"{bar} {'detector':<34} {bar} {'train img/s':>11} {bar} {'x plain':>7} {bar} {'infer img/s':>11} "
          f"{bar} {'x plain':>7} {bar}")
    if args.markdown:
        print("|---|---|---|---|---|")
    for name in names:
        plain = name.replace("_se_", "_").replace("_eca_", "_")
        ratios = [rate[(name, k)] / rate[(plain, k)] for k in ("train", "infer")]
        print(f"{bar} {name:<34} {bar} {rate[(name, 'train')]:>11.2f} {bar} {ratios[0]:>7.3f} {bar} "
              f"{rate[(name, 'infer')]:>11.2f} {bar} {ratios[1]:>7.3f} {bar}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
