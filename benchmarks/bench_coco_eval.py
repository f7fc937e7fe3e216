"""COCO evaluation speed: faster-coco-eval against pycocotools' COCOeval, on the same ground truth and detections.

    python benchmarks/bench_coco_eval.py                                 # 300 images, 100 detections each
    python benchmarks/bench_coco_eval.py --images 1000 --rounds 5 --iou-types bbox

The ground truth is a generated COCO-shapes val split (ecaplatform.datamodules.coco_shapes); the detections are
what a detector gives: per image up to --detections boxes with scores, its objects found with jitter, the rest false
alarms, with masks as compressed RLE. Each round scores them with both backends through `coco_stats` (loadRes,
evaluate, accumulate, summarize: what CocoMetric.compute runs once per evaluation), in alternating order; the
median per backend is reported. Exits 1 when the two backends' numbers differ by more than 1e-9.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ecaplatform.datamodules.coco_shapes import make_coco_shapes
from ecaplatform.training.coco_metric import STATS, coco_stats, load_ground_truth

BACKENDS = ("pycocotools", "faster_coco_eval")


def detections(gt: object, per_image: int, seed: int) -> dict[str, list[dict]]:
    rng = np.random.default_rng(seed)
    boxes, segms = [], []
    categories = sorted(gt.cats)
    for image_id, info in sorted(gt.imgs.items()):
        h, w = info["height"], info["width"]
        found = [[*(np.asarray(a["bbox"]) + rng.normal(0, 2, 4)), a["category_id"], rng.uniform(0.3, 1)]
                 for a in gt.imgToAnns[image_id]]  # fmt: skip
        for _ in range(per_image - len(found)):
            x, y = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
            size = rng.uniform(8, w - x), rng.uniform(8, h - y)
            found.append([x, y, *size, rng.choice(categories), rng.uniform(0, 0.7)])  # a false alarm
        for x, y, bw, bh, category, score in found:
            d = {"image_id": image_id, "category_id": int(category), "score": float(score)}
            boxes.append({**d, "bbox": [float(x), float(y), float(bw), float(bh)]})
            mask = np.zeros((h, w), dtype=np.uint8, order="F")
            mask[max(0, int(y)) : int(y + bh), max(0, int(x)) : int(x + bw)] = 1
            rle = mask_utils.encode(mask)
            segms.append({**d, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    return {"bbox": boxes, "segm": segms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--detections", type=int, default=100, help="per image (torchvision's default maximum)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iou-types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_coco_shapes(Path(tmp), train=0, val=args.images, seed=0)
        path = root / "annotations" / "instances_val2017.json"
        gts = {backend: load_ground_truth(path, backend) for backend in BACKENDS}
        dets = detections(gts["pycocotools"], args.detections, seed=1)
        ids = sorted(gts["pycocotools"].imgs)
        times: dict[tuple[str, str], list[float]] = {}
        stats: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for iou_type in args.iou_types:
                for backend in BACKENDS if round_ % 2 == 0 else BACKENDS[::-1]:
                    start = time.perf_counter()
                    stats[backend, iou_type] = coco_stats(gts[backend], dets[iou_type], iou_type, ids, backend)
                    times.setdefault((backend, iou_type), []).append(time.perf_counter() - start)
    print(f"{args.images} images, {len(dets['bbox']):,} detections, median of {args.rounds} rounds")
    print(f"| iou type | pycocotools (s) | faster-coco-eval (s) | speed-up | max abs difference of {'/'.join(STATS)} |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for iou_type in args.iou_types:
        slow, fast = (statistics.median(times[b, iou_type]) for b in BACKENDS)
        diff = max(abs(a - b) for a, b in zip(stats[BACKENDS[0], iou_type], stats[BACKENDS[1], iou_type], strict=True))
        worst = max(worst, diff)
        print(f"| {iou_type} | {slow:.2f} | {fast:.2f} | {slow / fast:.1f}x | {diff:.1e} |")
    print("numbers:", {f"{t} {s}": round(v, 6) for t in args.iou_types
                       for s, v in zip(STATS, stats[BACKENDS[0], t], strict=True)})  # fmt: skip
    return 1 if worst > 1e-9 else 0


if __name__ == "__main__":
    sys.exit(main())
