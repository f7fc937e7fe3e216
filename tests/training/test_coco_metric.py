"""CocoMetric against pycocotools' COCOeval run directly, on generated COCO-shapes ground truth and detections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ecaplatform.datamodules.coco import CocoDataModule
from ecaplatform.datamodules.coco_shapes import make_coco_shapes
from ecaplatform.training.coco_metric import CocoMetric, coco_stats, load_ground_truth, metric_names

BOTH = ("bbox", "segm")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> CocoDataModule:
    root = make_coco_shapes(tmp_path_factory.mktemp("shapes"), train=2, val=41, seed=1)
    return CocoDataModule(str(root), num_workers=0)


def predictions(data: CocoDataModule, seed: int | None = None, shift_iou: float | None = None) -> list[tuple]:
    """(preds, target) per val image in torchvision's output format, from the ground truth's objects (crowd ones
    left out): exact copies; with `seed`, jittered boxes, random scores and labels, extra false boxes, masks as
    probabilities; with `shift_iou`, each box moved right until its IoU with its object is exactly that."""
    coco, rng = data.coco("val"), np.random.default_rng(seed)
    labels = {c: i for i, c in enumerate(data.category_ids, start=1)}
    out = []
    for image_id in sorted(coco.imgs):
        anns = [a for a in coco.imgToAnns[image_id] if not a["iscrowd"]]
        h, w = coco.imgs[image_id]["height"], coco.imgs[image_id]["width"]
        boxes = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)]).reshape(-1, 4)
        masks = torch.from_numpy(np.stack([coco.annToMask(a) for a in anns]) if anns else np.zeros((0, h, w), np.uint8))
        cls = torch.tensor([labels[a["category_id"]] for a in anns], dtype=torch.long)
        scores = torch.ones(len(anns))
        if shift_iou is not None:  # a box w wide moved by d overlaps (w - d) / (w + d) of the union
            d = (boxes[:, 2] - boxes[:, 0]) * (1 - shift_iou) / (1 + shift_iou)
            boxes = boxes + torch.stack([d, torch.zeros_like(d), d, torch.zeros_like(d)], 1)
        if seed is not None:
            extra = 3
            jitter = torch.from_numpy(rng.normal(0, 3, (len(anns), 4))).float()
            fake = torch.from_numpy(rng.uniform(0, min(h, w) / 2, (extra, 2))).float()
            boxes = torch.cat([boxes + jitter, torch.cat([fake, fake + 20], 1)])
            scores = torch.from_numpy(rng.uniform(0, 1, len(boxes))).float()
            swap = torch.from_numpy(rng.integers(1, len(labels) + 1, len(boxes)))
            cls = torch.where(torch.from_numpy(rng.random(len(boxes)) < 0.2), swap, torch.cat([cls, swap[-extra:]]))
            noise = torch.from_numpy(rng.uniform(0, 0.6, (len(boxes), h, w))).float()
            masks = torch.cat([masks.float() * 0.6 + 0.2, torch.zeros(extra, h, w)]) + noise * 0.4  # 0.5 apart
        out.append(({"boxes": boxes, "scores": scores, "labels": cls, "masks": masks[:, None]}, {"image_id": image_id}))
    return out


def evaluate(data: CocoDataModule, items: list[tuple], iou_types: tuple = BOTH, **kwargs: Any) -> dict[str, float]:
    metric = CocoMetric(data.annotation_file("val"), data.category_ids, iou_types, **kwargs)
    for pred, target in items:
        metric.update([pred], [target])
    return metric.compute()


def test_equals_cocoeval_run_directly_on_the_same_detections(data: CocoDataModule) -> None:
    items = predictions(data, seed=0)
    ours = evaluate(data, items)
    # The reference: the detections as COCO result dicts (xywh boxes, category ids, RLE masks), scored directly.
    from pycocotools import mask as mask_utils

    gt = load_ground_truth(data.annotation_file("val"))
    boxes, segms = [], []
    for pred, target in items:
        for box, score, label, mask in zip(pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(),
                                           pred["masks"][:, 0].numpy(), strict=True):  # fmt: skip
            d = {"image_id": target["image_id"], "category_id": data.category_ids[label - 1], "score": score}
            boxes.append({**d, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
            segms.append({**d, "segmentation": mask_utils.encode(np.asfortranarray((mask > 0.5).astype(np.uint8)))})
    ids = sorted(gt.imgs)
    direct = coco_stats(gt, boxes, "bbox", ids) + coco_stats(gt, segms, "segm", ids)
    assert [ours[n] for n in metric_names(BOTH)] == pytest.approx(direct, abs=1e-6)
    assert 0.05 < ours["box_ap"] < 0.95 and 0.05 < ours["mask_ap"] < 0.95  # neither trivial nor perfect
    assert ours["images"] == 41


def test_a_perfect_set_scores_one_and_a_shifted_set_the_iou_thresholds_it_passes(data: CocoDataModule) -> None:
    perfect = evaluate(data, predictions(data))
    assert all(perfect[n] == pytest.approx(1.0) for n in metric_names(BOTH))
    # Every box at IoU 0.62 with its object: a match at the thresholds 0.50, 0.55, 0.60 of COCO's ten -> AP 3/10.
    shifted = evaluate(data, predictions(data, shift_iou=0.62), ("bbox",))
    assert shifted["box_ap"] == pytest.approx(0.3) and shifted["box_ap50"] == pytest.approx(1.0)
    assert shifted["box_ap75"] == 0.0
    assert shifted["box_aps"] == pytest.approx(0.3) and shifted["box_apl"] == pytest.approx(0.3)


def test_faster_coco_eval_gives_the_same_numbers(data: CocoDataModule) -> None:
    items = predictions(data, seed=2)
    reference = evaluate(data, items)
    assert evaluate(data, items, backend="faster_coco_eval") == pytest.approx(reference, abs=1e-9)


def test_an_image_scored_twice_is_refused(data: CocoDataModule) -> None:
    items = predictions(data)
    with pytest.raises(ValueError, match="1 images were scored more than once"):
        evaluate(data, [*items, items[0]], ("bbox",))


def test_no_detections_at_all_scores_as_cocoeval_scores_none(data: CocoDataModule) -> None:
    empty = [({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)},
              target) for _, target in predictions(data)]  # fmt: skip
    result = evaluate(data, empty, ("bbox",))
    gt = load_ground_truth(data.annotation_file("val"))
    assert [result[n] for n in metric_names(("bbox",))] == coco_stats(gt, [], "bbox", sorted(gt.imgs))


def _rank(rank: int, init: str, root: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    data = CocoDataModule(root, num_workers=0)
    items = predictions(data, seed=0)[rank::2]  # what the exact sampler gives rank r of 2: ranks differ in size
    torch.save(evaluate(data, items), Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_score_each_image_once_and_match_one_process(data: CocoDataModule, tmp_path: Path) -> None:
    args = (f"file://{tmp_path / 'rendezvous'}", str(data.root), str(tmp_path))
    # spawn, not fork: a fork after torch's OpenMP pool has run (earlier tests in this process) can hang the child
    mp.start_processes(_rank, args=args, nprocs=2, start_method="spawn")
    single = evaluate(data, predictions(data, seed=0))
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["images"] == 41  # 21 and 20 per rank, gathered: each image once
        assert result == pytest.approx(single, abs=1e-12)


@pytest.mark.slow
def test_the_batches_train_and_evaluate_torchvisions_mask_rcnn(data: CocoDataModule) -> None:
    """The contract with the detectors: a training step on a batch as the loader gives it (uint8, original sizes,
    masks), and an evaluation whose outputs (boxes in original pixels, probability masks) CocoMetric scores."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    model = MaskRCNN(backbone, num_classes=data.num_classes + 1, min_size=96, max_size=160)
    train = CocoDataModule(str(data.root), batch_size=2, num_workers=0, masks=True)
    train._world = lambda: (0, 1, False)
    images, targets = next(iter(train.train_dataloader()))
    losses = model([im.float() / 255 for im in images], targets)
    sum(losses.values()).backward()
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_mask"}
    model.eval()
    model.roi_heads.detections_per_img = 20  # untrained: keep the CPU time of pasting masks small
    metric = CocoMetric(data.annotation_file("val"), data.category_ids, BOTH)
    images, targets = next(iter(CocoDataModule(str(data.root), batch_size=3, num_workers=0).val_dataloader()))
    with torch.no_grad():
        outputs = model([im.float() / 255 for im in images])
    assert [o["masks"].shape[-2:] for o in outputs] == [im.shape[-2:] for im in images]  # original sizes
    metric.update(outputs, targets)
    result = metric.compute()
    assert result["images"] == 3 and all(-1.0 <= result[n] <= 1.0 for n in metric_names(BOTH))
