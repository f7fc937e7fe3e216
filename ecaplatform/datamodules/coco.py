"""COCO 2017 object detection and instance segmentation (or any data set in its layout, e.g. COCO-shapes).

Layout: ROOT/train2017/*.jpg, ROOT/val2017/*.jpg, ROOT/annotations/instances_{train,val}2017.json (what `eca data
coco` builds). Batches are (images, targets), torchvision's detection format: a list of uint8 [3, H, W] images at
their ORIGINAL size, and per image {boxes: float [N, 4] x1 y1 x2 y2 in pixels, labels: int64 [N] in 1..num_classes
(0 is torchvision's background), image_id: COCO's id, masks: uint8 [N, H, W] in training when asked}.

Where MMDetection's default pipeline happens, and why:
- here: decoding (PIL, RGB), the random horizontal flip (p=0.5, boxes and masks with it: it needs the targets),
  the annotation rules of MMDetection's CocoDataset: crowd boxes are not training targets (MMDetection puts them in
  gt_bboxes_ignore, which its 1x assigners ignore), boxes under 1 px, of zero area or outside the image are dropped,
  training skips images without a usable box (filter_empty_gt and skip_img_without_anno) and images under 32 px;
  batches group landscape and portrait images (GroupSampler's flag: width / height > 1).
- in the detector (torchvision's GeneralizedRCNNTransform, min_size=800, max_size=1333, size_divisible=32): the
  keep-ratio resize (scale = min(800 / short side, 1333 / long side), as mmcv.imrescale), normalisation and
  padding to a multiple of 32. So the loader moves uint8 at the original size (a quarter of the bytes of float at
  800 x 1333), the resize runs on the device, and the detector maps its predictions back to the original image's
  coordinates, which are the ones COCOeval scores: no inverse transform here to get wrong. The CPU demo sets
  small min_size / max_size on the detector, not here.
Evaluation scores every image of the split (those without objects too) exactly once under any world size.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ecaplatform.datamodules.base import ClassificationDataModule, DataError

SPLIT_FOLDERS = {"train": "train2017", "val": "val2017"}
MANIFEST_NAME = "eca_coco_manifest.json"
LAYOUT_HINT = (
    "expected ROOT/train2017/*.jpg, ROOT/val2017/*.jpg and ROOT/annotations/instances_{train,val}2017.json; "
    "`eca data coco --archives DIR --out ROOT` builds it from the official zips"
)
MIN_TRAIN_SIDE = 32  # MMDetection's _filter_imgs(min_size=32)


def annotation_file(root: Path, folder: str) -> Path:
    return Path(root) / "annotations" / f"instances_{folder}.json"


def load_coco(path: Path) -> COCO:
    """pycocotools' COCO index of an instances file, without its prints; a missing or broken file is one line."""
    if not path.is_file():
        raise DataError(f"no annotation file {path}; {LAYOUT_HINT}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (ValueError, KeyError, TypeError, AssertionError) as err:
        raise DataError(f"{path} is not a COCO instances file ({type(err).__name__}: {err}); rebuild it") from err


def split_hash(coco: COCO, annotations: Path, image_dir: Path) -> str:
    """sha256 of the annotation file's bytes and of every annotated image's name and size: what a result was
    computed on. A missing image is refused here (an evaluation would otherwise skip it without a word)."""
    digest = hashlib.sha256()
    with open(annotations, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    for image_id in sorted(coco.imgs):
        name = coco.imgs[image_id]["file_name"]
        try:
            size = (image_dir / name).stat().st_size
        except OSError as err:
            raise DataError(f"{image_dir / name}, listed in {annotations.name}, is missing; {LAYOUT_HINT}") from err
        digest.update(f"{name}:{size}\n".encode())
    return digest.hexdigest()


def prepared_from(root: Path, folder: str, current_hash: str) -> dict[str, Any] | None:
    """The fingerprint's `prepared_from`: {source, verified, files: {archive: md5}, unchanged}, from the manifest
    `eca data coco` wrote; None without one. Never raises: a damaged manifest is reported in the entry."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        entry, files = manifest["splits"][folder], manifest["files"]
        names = list(entry["built_from"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return {"source": "unknown", "verified": False, "unchanged": False, "problem": f"{path}: {err!r}"}
    return {
        "source": manifest.get("source"),
        "verified": all(files.get(n, {}).get("verified") is True for n in names),
        "files": {n: files.get(n, {}).get("md5") for n in names},
        "unchanged": entry.get("hash") == current_hash,
    }


def detection_collate(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list, list]:
    """(list of images, list of targets): images differ in size, and torchvision's detectors take lists."""
    return [image for image, _ in batch], [target for _, target in batch]


def _usable(ann: dict[str, Any], width: int, height: int, labels: dict[int, int]) -> bool:
    """MMDetection's CocoDataset._parse_ann_info: a box inside the image, >= 1 px each way, positive area."""
    x, y, w, h = ann["bbox"]
    inside = max(0.0, min(x + w, width) - max(x, 0.0)) * max(0.0, min(y + h, height) - max(y, 0.0))
    return (not ann.get("ignore") and inside > 0 and ann["area"] > 0 and w >= 1 and h >= 1
            and ann["category_id"] in labels)  # fmt: skip


class CocoDetectionDataset(Dataset):
    """One image of a split and its targets; `train` adds the random flip (and masks when asked)."""

    def __init__(self, coco: COCO, image_dir: Path, image_ids: Sequence[int], labels: dict[int, int], train: bool,
                 masks: bool = False, flip_prob: float = 0.5) -> None:  # fmt: skip
        self.coco, self.image_dir, self.image_ids, self.labels = coco, image_dir, list(image_ids), labels
        self.train, self.masks, self.flip_prob = train, masks, flip_prob

    def __len__(self) -> int:
        return len(self.image_ids)

    def _image(self, info: dict[str, Any]) -> torch.Tensor:
        path = self.image_dir / info["file_name"]
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"cannot decode image {path}: {err}; replace this file (`eca data coco` again)") from err
        if pixels.shape[:2] != (info["height"], info["width"]):
            found, listed = f"{pixels.shape[1]}x{pixels.shape[0]}", f"{info['width']}x{info['height']}"
            raise DataError(f"{path} is {found}, its annotation file says {listed}: rebuild the data (eca data coco)")
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.image_ids[i]
        info = self.coco.imgs[image_id]
        image, width, height = self._image(info), info["width"], info["height"]
        anns = [a for a in self.coco.imgToAnns[image_id]
                if not a.get("iscrowd") and _usable(a, width, height, self.labels)]  # fmt: skip
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)  # fmt: skip
        target: dict[str, Any] = {
            "boxes": boxes,
            "labels": torch.tensor([self.labels[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": image_id,
        }
        if self.train and self.masks:
            masks = [self.coco.annToMask(a) for a in anns]
            target["masks"] = torch.from_numpy(np.stack(masks) if masks else np.zeros((0, height, width), np.uint8))
        if self.train and torch.rand(()) < self.flip_prob:  # the worker's torch RNG: seeded per worker by the loader
            image = image.flip(-1)
            target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
        return image, target


class _Batches(Dataset):
    """Indexed by a list of indices (what AspectRatioBatchSampler yields): a whole batch per worker fetch."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> tuple[list, list]:
        return detection_collate([self.dataset[i] for i in indices])


class AspectRatioBatchSampler(DistributedSampler):
    """Training batches of landscape-only or portrait-only images, DDP-aware: MMDetection's DistributedGroupSampler.

    Every rank draws the same order from (seed, epoch): each group shuffled and padded (by repeating its own
    images, as MMDetection does) to whole steps of batch_size x world_size images, the steps shuffled, and rank r
    takes its slice of each step. So all ranks run the same number of steps, and one step's images share a group.
    A DistributedSampler, yielding whole batches (the loader runs with batch_size=None), so Lightning keeps it.
    """

    def __init__(self, groups: Sequence[int], batch_size: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0) -> None:  # fmt: skip
        # Not calling DistributedSampler.__init__: it needs a dataset and a process group.
        self.groups, self.batch_size = np.asarray(groups, dtype=np.int64), batch_size
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.shuffle, self.drop_last = True, False

    def _steps(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        per_step = self.batch_size * self.num_replicas
        steps: list[np.ndarray] = []
        for group in np.unique(self.groups):
            members = rng.permutation(np.flatnonzero(self.groups == group))
            steps += np.resize(members, math.ceil(len(members) / per_step) * per_step).reshape(-1, per_step).tolist()
        return [np.asarray(steps[i]) for i in rng.permutation(len(steps))]

    def __iter__(self) -> Iterator[list[int]]:
        for step in self._steps():
            yield step[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        per_step = self.batch_size * self.num_replicas
        return sum(math.ceil(int(n) / per_step) for n in np.bincount(self.groups) if n)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class CocoDataModule(ClassificationDataModule):
    """COCO 2017 (or a data set in its layout) with MMDetection's default training pipeline; see the module doc.

    Args:
        root: folder with train2017/, val2017/ and annotations/ (only val is needed to evaluate).
        batch_size: the GLOBAL training batch (the paper's 8 = 4 GPUs x 2), split evenly across the ranks.
        masks: give training targets instance masks (Mask R-CNN).
        flip_prob: probability of the horizontal flip in training.
        group_by_aspect: batch landscape and portrait images apart (MMDetection's GroupSampler).
        dataset_name: the fingerprint's dataset (coco2017; the CPU demo's generated set says coco_shapes).
        test_split: the split `eca test` evaluates (test2017 has no public annotations: val).
        See ClassificationDataModule for eval_batch_size (global), num_workers, pin_memory, seed.
    Labels are 1..num_classes in the order of the sorted category ids (`category_ids[label - 1]` is the COCO id).
    """

    dataset_name = "coco2017"

    def __init__(
        self,
        root: str,
        batch_size: PositiveInt = 8,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt | None = None,
        pin_memory: bool | None = None,
        masks: bool = False,
        flip_prob: float = 0.5,
        group_by_aspect: bool = True,
        dataset_name: str = "coco2017",
        test_split: str = "val",
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory, False, seed)
        self.root = Path(root).expanduser()
        self.masks, self.flip_prob, self.group_by_aspect = masks, flip_prob, group_by_aspect
        self.dataset_name, self.test_split = dataset_name, test_split
        self._cocos: dict[str, COCO] = {}

    def source_split(self, split: str) -> str:
        """The folder a split reads: train -> train2017, val and test -> val2017."""
        split = self.test_split if split == "test" else split
        return SPLIT_FOLDERS.get(split, split)

    def annotation_file(self, split: str) -> Path:
        """The instances file of `split` (the ground truth the COCO metric scores against)."""
        return annotation_file(self.root, self.source_split(split))

    def coco(self, split: str) -> COCO:
        folder = self.source_split(split)
        if folder not in self._cocos:
            if not self.root.is_dir():
                raise DataError(f"data root {self.root} does not exist or is not a folder; {LAYOUT_HINT}")
            self._cocos[folder] = load_coco(annotation_file(self.root, folder))
        return self._cocos[folder]

    def setup(self, stage: str) -> None:
        for split in {"fit": ["train", "val"], "test": ["test"]}.get(stage, ["val"]):
            self.coco(split)

    @property
    def category_ids(self) -> list[int]:
        """COCO category id of each label: label l is category_ids[l - 1]."""
        return sorted(self.coco("val").cats)

    @property
    def category_names(self) -> list[str]:
        return [self.coco("val").cats[c]["name"] for c in self.category_ids]

    @property
    def num_classes(self) -> int:
        """Object categories (80 for COCO), background not counted: torchvision's detectors take num_classes + 1."""
        return len(self.category_ids)

    def _labels(self) -> dict[int, int]:
        return {category: label for label, category in enumerate(self.category_ids, start=1)}

    def _train_ids(self, coco: COCO) -> list[int]:
        labels = self._labels()

        def keep(image_id: int) -> bool:
            info = coco.imgs[image_id]
            return min(info["width"], info["height"]) >= MIN_TRAIN_SIDE and any(
                not a.get("iscrowd") and _usable(a, info["width"], info["height"], labels)
                for a in coco.imgToAnns[image_id]
            )

        return [i for i in sorted(coco.imgs) if keep(i)]

    def _dataset(self, split: str) -> CocoDetectionDataset:
        coco, train = self.coco(split), split == "train"
        return CocoDetectionDataset(coco, self.root / self.source_split(split),
                                    self._train_ids(coco) if train else sorted(coco.imgs), self._labels(), train,
                                    masks=self.masks, flip_prob=self.flip_prob)  # fmt: skip

    def _fingerprint(self, folder: str) -> dict[str, Any]:
        coco = self.coco(folder)
        digest = split_hash(coco, annotation_file(self.root, folder), self.root / folder)
        # "split" is the split's role (val), as results and claims name it; "folder" says which COCO folder it was.
        split = {name: role for role, name in SPLIT_FOLDERS.items()}.get(folder, folder)
        fingerprint = {"dataset": self.dataset_name, "split": split, "folder": folder, "num_samples": len(coco.imgs),
                       "num_classes": len(coco.cats), "hash": digest}  # fmt: skip
        source = prepared_from(self.root, folder, digest)
        if source is not None:
            fingerprint["prepared_from"] = source
        return fingerprint

    def _loader(self, split: str, train: bool) -> Iterable:
        dataset = self._dataset(split)
        rank, world, on_gpu = self._world()
        workers = self._workers()
        common = {"num_workers": workers, "pin_memory": on_gpu if self.pin_memory is None else self.pin_memory,
                  "persistent_workers": workers > 0}  # fmt: skip
        if not train:  # the exact evaluation sampler: each image once, in an order sample_order() can tell
            return DataLoader(dataset, batch_size=self._batch_size(False), sampler=self._sampler(len(dataset), False),
                              collate_fn=detection_collate, **common)  # fmt: skip
        infos = [dataset.coco.imgs[i] for i in dataset.image_ids]
        groups = [int(self.group_by_aspect and info["width"] / info["height"] > 1) for info in infos]
        sampler = AspectRatioBatchSampler(groups, self._batch_size(True), world, rank, self.seed)
        return DataLoader(_Batches(dataset), sampler=sampler, batch_size=None, **common)
