"""CocoMetric: COCO box and mask AP with pycocotools' semantics, each evaluated image scored once under any world size.

Each rank keeps its detections as `dist_reduce_fx="cat"` state (boxes, scores, labels, image ids, and masks as
compressed RLE bytes: a 1,000 x 1,000 mask is a few hundred bytes, not a megabyte); compute() gathers them and
global rank 0 scores the whole set ONCE with COCOeval (pycocotools, or faster-coco-eval: the same numbers, see
benchmarks/bench_coco_eval.py), then broadcasts the numbers, so every rank returns the same dict. An image scored
twice (a padding sampler) is refused: it would count its detections twice.

The names: box_ap, box_ap50, box_ap75, box_aps, box_apm, box_apl (and mask_* likewise), fractions in [0, 1] as
COCOeval's stats (-1 where the split has no object of that size, as COCOeval), and `images`, how many distinct
images were scored.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from pycocotools import mask as mask_utils
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

STATS = ("ap", "ap50", "ap75", "aps", "apm", "apl")  # the first six of COCOeval.stats, in its order
PREFIXES = {"bbox": "box", "segm": "mask"}
# Per-rank state, gathered by concatenation: every evaluated image's id; per detection its image, box, score, label
# and, for masks, the length and bytes of its compressed RLE and the mask's (height, width).
STATE_DTYPES = {"image_ids": torch.long, "det_image_ids": torch.long, "boxes": torch.float32,
                "scores": torch.float32, "labels": torch.long, "rle_lengths": torch.long, "rle_bytes": torch.uint8,
                "mask_sizes": torch.long}  # fmt: skip


def metric_names(iou_types: Sequence[str]) -> list[str]:
    return [f"{PREFIXES[t]}_{s}" for t in iou_types for s in STATS]


def _evaluator(backend: str) -> tuple[Any, Any]:
    """(COCO class, COCOeval class) of the backend."""
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def coco_stats(gt: Any, detections: list[dict[str, Any]], iou_type: str, image_ids: Sequence[int],
               backend: str = "pycocotools") -> list[float]:  # fmt: skip
    """COCOeval's first six stats for `detections` (COCO result dicts) on `image_ids` of the ground truth `gt`."""
    coco_cls, eval_cls = _evaluator(backend)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        if detections:
            dt = gt.loadRes([dict(d) for d in detections])  # copies: loadRes adds fields to each dict it gets
        else:  # loadRes cannot take an empty list: an empty result set scores as COCOeval scores no detections
            dt = coco_cls()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        evaluator = eval_cls(gt, dt, iouType=iou_type)
        evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(s) for s in evaluator.stats[: len(STATS)]]


def load_ground_truth(path: str | Path, backend: str = "pycocotools") -> Any:
    coco_cls, _ = _evaluator(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_cls(str(path))


class CocoMetric(Metric):
    """`update(preds, targets)` per batch with torchvision's detection outputs (boxes x1 y1 x2 y2 in the original
    image's pixels, scores, labels 1..K, masks [N, 1, H, W] probabilities or booleans) and targets carrying
    `image_id`; `compute()` on every rank returns {name: float}.

    Args:
        annotation_file: the split's instances JSON (the data module's `annotation_file(split)`); read on rank 0.
        category_ids: COCO category id of each label (label l -> category_ids[l - 1]; the data module's).
        iou_types: "bbox" and/or "segm".
        backend: pycocotools (the reference) or faster_coco_eval.
        mask_threshold: a probability mask's pixels above it are the instance (torchvision's and MMDetection's 0.5).
    """

    full_state_update = False

    def __init__(self, annotation_file: str | Path, category_ids: Sequence[int], iou_types: Sequence[str] = ("bbox",),
                 backend: Literal["pycocotools", "faster_coco_eval"] = "pycocotools",
                 mask_threshold: float = 0.5) -> None:  # fmt: skip
        super().__init__()
        if not set(iou_types) <= set(PREFIXES):
            raise ValueError(f"iou_types must be among {sorted(PREFIXES)}, got {list(iou_types)}")
        self.annotation_file, self.iou_types, self.backend = Path(annotation_file), tuple(iou_types), backend
        self.category_ids, self.mask_threshold = list(category_ids), mask_threshold
        self._gt: Any = None
        for name in STATE_DTYPES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[dict[str, torch.Tensor]], targets: Sequence[dict[str, Any]]) -> None:
        for pred, target in zip(preds, targets, strict=True):
            image_id, n = int(target["image_id"]), len(pred["scores"])
            self.image_ids.append(torch.tensor([image_id], device=self.device))
            self.det_image_ids.append(torch.full((n,), image_id, dtype=torch.long, device=self.device))
            self.boxes.append(pred["boxes"].detach().float().reshape(-1, 4))
            self.scores.append(pred["scores"].detach().float())
            self.labels.append(pred["labels"].detach().long())
            if "segm" in self.iou_types:
                self._add_masks(pred["masks"])

    def _add_masks(self, masks: torch.Tensor) -> None:
        """Encode each mask as compressed RLE now, on this rank: the state holds bytes, not pixels."""
        masks = masks.detach()
        binary = masks > self.mask_threshold if masks.is_floating_point() else masks.bool()
        binary = binary.reshape(len(binary), *binary.shape[-2:]).cpu().numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []
        counts = [np.frombuffer(r["counts"], dtype=np.uint8) for r in rles]
        self.rle_lengths.append(torch.tensor([len(c) for c in counts], dtype=torch.long, device=self.device))
        data = np.concatenate(counts) if counts else np.zeros(0, np.uint8)
        self.rle_bytes.append(torch.from_numpy(data).to(self.device))
        self.mask_sizes.append(torch.tensor([list(binary.shape[1:])] * len(binary), dtype=torch.long,
                                            device=self.device).reshape(-1, 2))  # fmt: skip

    def _cat(self, name: str, shape: tuple[int, ...] = (-1,)) -> np.ndarray:
        state = getattr(self, name)
        if isinstance(state, list):
            state = dim_zero_cat(state) if state else torch.zeros(0, dtype=STATE_DTYPES[name])
        return state.cpu().numpy().reshape(shape)

    def detections(self) -> dict[str, list[dict[str, Any]]]:
        """The (gathered) detections as COCO result dicts per iou type: what COCOeval's loadRes reads."""
        image_ids, boxes, scores = self._cat("det_image_ids"), self._cat("boxes", (-1, 4)), self._cat("scores")
        categories = [self.category_ids[int(label) - 1] for label in self._cat("labels")]
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
        common = [{"image_id": int(i), "category_id": c, "score": float(s)}
                  for i, c, s in zip(image_ids, categories, scores, strict=True)]  # fmt: skip
        out = {"bbox": [{**d, "bbox": b.tolist()} for d, b in zip(common, xywh, strict=True)]}
        if "segm" in self.iou_types:  # no box: loadRes derives a mask result's box from its mask
            lengths, data, sizes = self._cat("rle_lengths"), self._cat("rle_bytes"), self._cat("mask_sizes", (-1, 2))
            ends = np.cumsum(lengths)
            rles = [{"size": [int(h), int(w)], "counts": data[e - n : e].tobytes().decode()}
                    for n, e, (h, w) in zip(lengths, ends, sizes, strict=True)]  # fmt: skip
            out["segm"] = [{**d, "segmentation": r} for d, r in zip(common, rles, strict=True)]
        return out

    def compute(self) -> dict[str, float]:
        names = metric_names(self.iou_types)
        image_ids = self._cat("image_ids")
        repeated = np.unique(image_ids, return_counts=True)
        if (repeated[1] > 1).any():
            raise ValueError(f"{int((repeated[1] > 1).sum())} images were scored more than once (e.g. image "
                             f"{int(repeated[0][repeated[1] > 1][0])}): a padding sampler? Evaluate each image once")
        values = torch.full((len(names),), float("nan"), dtype=torch.float64)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        failure = None
        if not distributed or dist.get_rank() == 0:
            try:
                if self._gt is None:
                    self._gt = load_ground_truth(self.annotation_file, self.backend)
                detections = self.detections()
                values = torch.tensor([v for t in self.iou_types
                                       for v in coco_stats(self._gt, detections[t], t, image_ids, self.backend)],
                                      dtype=torch.float64)  # fmt: skip
            except Exception as err:  # broadcast first: the other ranks wait for rank 0's numbers
                failure = err
        if distributed:  # NCCL moves device tensors only
            values = values.to(self.device)
            dist.broadcast(values, src=0)
        if failure is not None:
            raise failure
        result = dict(zip(names, values.cpu().tolist(), strict=True))
        result["images"] = float(len(image_ids))
        return result
