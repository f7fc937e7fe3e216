"""CocoDataModule on generated COCO-shapes: MMDetection's annotation rules, the flip, aspect-ratio batches under DDP,
exact evaluation under any world size, and the fingerprint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from ecaplatform.datamodules.base import DataError
from ecaplatform.datamodules.coco import AspectRatioBatchSampler, CocoDataModule
from ecaplatform.datamodules.coco_shapes import CATEGORIES, CocoShapesDataModule, make_coco_shapes


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_coco_shapes(tmp_path_factory.mktemp("shapes"), train=60, val=13, seed=3)


def module(root: Path, world: tuple[int, int] = (0, 1), **kwargs: object) -> CocoDataModule:
    data = CocoDataModule(str(root), num_workers=0, **kwargs)
    data._world = lambda: (world[0], world[1], False)  # as a trainer of that world size would say
    return data


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sorted(folder.rglob("*.*")))).hexdigest()


def test_the_generated_set_is_deterministic_and_in_cocos_layout(tmp_path: Path) -> None:
    first = make_coco_shapes(tmp_path / "a", train=4, val=2, seed=7)
    assert digest(first) == digest(make_coco_shapes(tmp_path / "b", train=4, val=2, seed=7))
    assert digest(first) != digest(make_coco_shapes(tmp_path / "c", train=4, val=2, seed=8))
    assert sorted(p.name for p in (first / "annotations").iterdir()) == ["instances_train2017.json",
                                                                         "instances_val2017.json"]  # fmt: skip
    with Image.open(next((first / "val2017").iterdir())) as image:
        assert image.format == "JPEG" and min(image.size) >= 128 and max(image.size) <= 256


def test_training_targets_follow_mmdetections_rules(root: Path) -> None:
    data = module(root, masks=True, flip_prob=0.0)
    coco, dataset = data.coco("train"), data._dataset("train")
    assert data.num_classes == 4 and data.category_ids == [2, 5, 7, 11]  # labels 1..4 <- sparse ids, sorted
    crowd_only = [i for i in coco.imgs if coco.imgToAnns[i] and all(a["iscrowd"] for a in coco.imgToAnns[i])]
    empty = [i for i in coco.imgs if not coco.imgToAnns[i]]
    assert empty and set(dataset.image_ids) == set(coco.imgs) - set(empty) - set(crowd_only)  # skipped in training
    crowded = 0
    for i, image_id in enumerate(dataset.image_ids):
        image, target = dataset[i]
        info, anns = coco.imgs[image_id], [a for a in coco.imgToAnns[image_id] if not a["iscrowd"]]
        crowded += len(coco.imgToAnns[image_id]) - len(anns)
        assert image.dtype == torch.uint8 and image.shape == (3, info["height"], info["width"])  # original size
        assert target["image_id"] == image_id
        assert target["labels"].tolist() == [data.category_ids.index(a["category_id"]) + 1 for a in anns]
        expected = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        assert target["boxes"].dtype == torch.float32 and target["boxes"].tolist() == expected
        assert target["masks"].dtype == torch.uint8
        assert np.array_equal(target["masks"].numpy(), np.stack([coco.annToMask(a) for a in anns]))
    assert crowded > 0  # crowd regions were there, and none became a target


def test_the_flip_moves_the_image_boxes_and_masks_together(root: Path) -> None:
    plain = module(root, masks=True, flip_prob=0.0)._dataset("train")
    flipped = module(root, masks=True, flip_prob=1.0)._dataset("train")
    for i in range(5):
        (image, target), (mirror, mirrored) = plain[i], flipped[i]
        width = image.shape[-1]
        assert torch.equal(mirror, image.flip(-1)) and torch.equal(mirrored["masks"], target["masks"].flip(-1))
        boxes = target["boxes"]
        assert mirrored["boxes"].tolist() == torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0],
                                                          boxes[:, 3]], 1).tolist()  # fmt: skip
        for box, mask in zip(mirrored["boxes"], mirrored["masks"], strict=True):  # each box still frames its mask
            xs = mask.any(0).nonzero()
            assert (int(xs.min()), int(xs.max()) + 1) == (int(box[0]), int(box[2]))


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_evaluation_scores_every_image_once_under_any_world_size(root: Path, world: int) -> None:
    seen = []
    for rank in range(world):
        loader = module(root, (rank, world), batch_size=world, eval_batch_size=4).val_dataloader()
        assert world == 1 or isinstance(loader.sampler, DistributedSampler)  # so Lightning does not replace it
        seen += [t["image_id"] for _, targets in loader for t in targets]
    coco = CocoDataModule(str(root)).coco("val")
    assert sorted(seen) == sorted(coco.imgs) and len(seen) == 13  # images without objects included


def test_aspect_ratio_batches_are_one_orientation_per_step_on_every_rank(root: Path) -> None:
    loaders = [module(root, (rank, 2), batch_size=4).train_dataloader() for rank in range(2)]
    assert all(isinstance(loader.sampler, DistributedSampler) for loader in loaders)
    steps = [list(loader) for loader in loaders]
    assert len(steps[0]) == len(steps[1]) == len(loaders[0])  # DDP: every rank runs the same number of steps
    for (images0, _), (images1, _) in zip(*steps, strict=True):
        assert len(images0) == len(images1) == 2
        assert len({im.shape[2] > im.shape[1] for im in images0 + images1}) == 1
    every = {t["image_id"] for rank in steps for _, targets in rank for t in targets}
    assert every == set(module(root)._dataset("train").image_ids)  # each training image at least once


def test_the_grouped_order_is_seeded_per_epoch_and_padded_within_its_group() -> None:
    groups = [0] * 7 + [1] * 4
    sampler = AspectRatioBatchSampler(groups, batch_size=2, num_replicas=2, rank=1, seed=5)
    first = list(sampler)
    assert first == list(sampler) and len(first) == len(sampler) == 2 + 1  # 7 -> 8 and 4 -> 4 images, 4 per step
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert all(len({groups[i] for i in batch}) == 1 for batch in first)


def test_the_fingerprint_names_the_split_and_changes_with_an_image(root: Path, tmp_path: Path) -> None:
    fingerprint = module(root).fingerprint("val")
    assert {k: fingerprint[k] for k in ("dataset", "split", "folder", "num_samples", "num_classes")} == {
        "dataset": "coco2017", "split": "val", "folder": "val2017", "num_samples": 13,
        "num_classes": len(CATEGORIES)}  # fmt: skip
    assert "prepared_from" not in fingerprint  # no manifest: not built by `eca data coco`
    assert module(root, dataset_name="coco_shapes").fingerprint("test")["dataset"] == "coco_shapes"
    copy = make_coco_shapes(tmp_path / "copy", train=60, val=13, seed=3)
    assert module(copy).fingerprint("val")["hash"] == fingerprint["hash"]
    image = next((copy / "val2017").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    assert module(copy).fingerprint("val")["hash"] != fingerprint["hash"]
    image.unlink()
    with pytest.raises(DataError, match=f"{image.name}, listed in instances_val2017.json, is missing"):
        module(copy).fingerprint("val")


def test_a_missing_root_or_annotation_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist or is not a folder; expected ROOT/train2017"):
        module(tmp_path / "nowhere").setup("validate")
    (tmp_path / "val2017").mkdir()
    with pytest.raises(DataError, match="no annotation file .*instances_val2017.json; expected"):
        module(tmp_path).setup("validate")


def test_the_demo_module_writes_its_set_on_first_use_and_refuses_another(tmp_path: Path) -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()  # what a job's data: init_args go through
    parser.add_class_arguments(CocoShapesDataModule, "data")
    config = parser.parse_args(["--data.root", str(tmp_path / "shapes"), "--data.train_images", "3",
                                "--data.val_images", "2", "--data.batch_size", "2"])  # fmt: skip
    data = CocoShapesDataModule(**config.data)
    assert data.num_classes == 4 and data.fingerprint("val")["dataset"] == "coco_shapes"
    assert data.fingerprint("val")["num_samples"] == 2
    stamp = (tmp_path / "shapes" / "eca_coco_shapes.json").stat().st_mtime_ns
    again = CocoShapesDataModule(str(tmp_path / "shapes"), train_images=3, val_images=2)
    assert again.fingerprint("val") == data.fingerprint("val")
    assert (tmp_path / "shapes" / "eca_coco_shapes.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    with pytest.raises(DataError, match="holds COCO-shapes made with .* give another root or delete it"):
        CocoShapesDataModule(str(tmp_path / "shapes"), train_images=4, val_images=2).setup("validate")
