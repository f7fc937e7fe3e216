"""COCO-shapes: a small generated data set in COCO 2017's exact layout, for the tests and the CPU demo.

`make_coco_shapes(root)` writes root/train2017/*.jpg, root/val2017/*.jpg and root/annotations/instances_*2017.json:
seeded (the same seed gives the same bytes), real JPEG files of 128-256 px with a few coloured shapes each, and
instance annotations with boxes, polygon or RLE segmentations (as COCO mixes them), areas and iscrowd. The category
ids are not contiguous (as COCO's 1..90 for 80 categories), so a label mapping that ignores that is seen. Some
images hold no object (COCO has such images; training skips them, evaluation counts them). `pack_coco_archives`
zips it under the official archive names, for `eca data coco`'s tests. CocoShapesDataModule is CocoDataModule on
it, written on first use (the CPU demo: nothing to download or prepare).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from jsonargparse.typing import NonNegativeInt, PositiveInt
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ecaplatform.datamodules.base import DataError
from ecaplatform.datamodules.coco import CocoDataModule

# Non-contiguous ids, as in COCO; each category is one shape, drawn in any colour.
CATEGORIES = [
    {"id": 2, "name": "rectangle", "supercategory": "shape"},
    {"id": 5, "name": "ellipse", "supercategory": "shape"},
    {"id": 7, "name": "triangle", "supercategory": "shape"},
    {"id": 11, "name": "diamond", "supercategory": "shape"},
]
ARCHIVES = ("train2017.zip", "val2017.zip", "annotations_trainval2017.zip")


def _place(rng: np.random.Generator, width: int, height: int, placed: list[tuple[int, ...]],
           big: bool) -> tuple[int, ...] | None:  # fmt: skip
    """A box (x0, y0, x1, y1) that keeps a 4 px gap to the boxes already placed, or None after a few tries; a big
    one is COCO-large (>= 96 px a side), the others mostly small and medium."""
    low, high = (96, int(min(width, height) * 0.9)) if big else (12, min(width, height) // 2)
    for _ in range(20):
        w, h = (int(v) for v in rng.integers(low, high, size=2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        box = (x0, y0, x0 + w, y0 + h)
        if all(box[0] >= b[2] + 4 or b[0] >= box[2] + 4 or box[1] >= b[3] + 4 or b[1] >= box[3] + 4 for b in placed):
            return box
    return None


def _polygon(shape: str, box: tuple[int, ...]) -> list[float]:
    x0, y0, x1, y1 = box
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    points = {
        "rectangle": [x0, y0, x1, y0, x1, y1, x0, y1],
        "triangle": [xm, y0, x1, y1, x0, y1],
        "diamond": [xm, y0, x1, ym, xm, y1, x0, ym],
    }[shape]
    return [float(p) for p in points]


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, ...], colour: tuple[int, ...]) -> None:
    if shape == "ellipse":
        draw.ellipse([box[0], box[1], box[2] - 1, box[3] - 1], fill=colour)
    else:
        draw.polygon(_polygon(shape, box), fill=colour)


def _segmentation(shape: str, box: tuple[int, ...], width: int, height: int, crowd: bool) -> tuple[Any, dict]:
    """(COCO segmentation, compressed RLE of it): polygons for the straight shapes, RLE for ellipses, and an
    uncompressed RLE (counts as a list) for crowd regions, as COCO stores them."""
    if shape == "ellipse" or crowd:
        canvas = Image.new("L", (width, height))
        _draw(ImageDraw.Draw(canvas), shape, box, (1,))
        rle = mask_utils.encode(np.asfortranarray(np.asarray(canvas, dtype=np.uint8)))
        if crowd:
            binary = np.asarray(canvas, dtype=np.uint8).flatten(order="F")  # column-major, as RLE runs
            bounds = [0, *(np.flatnonzero(binary[1:] != binary[:-1]) + 1), len(binary)]
            counts = ([0] if binary[0] else []) + np.diff(bounds).tolist()  # runs alternate, zeros first
            return {"size": [height, width], "counts": [int(c) for c in counts]}, rle
        return {"size": [height, width], "counts": rle["counts"].decode("ascii")}, rle
    polygon = _polygon(shape, box)
    return [polygon], mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))


def _split(root: Path, split: str, count: int, rng: np.random.Generator, first_id: int) -> dict[str, Any]:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(first_id, first_id + count):
        width, height = (int(v) for v in rng.integers(128, 257, size=2))
        background = tuple(int(v) for v in rng.integers(0, 90, size=3))
        image = Image.new("RGB", (width, height), background)
        draw = ImageDraw.Draw(image)
        placed: list[tuple[int, ...]] = []
        for k in range(0 if rng.random() < 0.05 else int(rng.integers(1, 5))):
            box = _place(rng, width, height, placed, big=k == 0 and rng.random() < 0.2)
            if box is None:
                continue
            placed.append(box)
            category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            _draw(draw, category["name"], box, tuple(int(v) for v in rng.integers(120, 256, size=3)))
            crowd = rng.random() < 0.03
            segmentation, rle = _segmentation(category["name"], box, width, height, crowd)
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
            annotations.append({
                "id": len(annotations) + first_id * 10, "image_id": image_id, "category_id": category["id"],
                "bbox": [x, y, w, h], "area": float(mask_utils.area(rle)), "segmentation": segmentation,
                "iscrowd": int(crowd),
            })  # fmt: skip
        name = f"{image_id:012d}.jpg"
        image.save(folder / name, format="JPEG", quality=90)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
    return {
        "info": {"description": "COCO-shapes, generated by ecaplatform.datamodules.coco_shapes", "version": "1"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def make_coco_shapes(root: str | Path, train: int = 300, val: int = 60, seed: int = 0) -> Path:
    """Write the data set under `root` (created) in COCO 2017's layout; returns `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, count, first_id in (("train2017", train, 1), ("val2017", val, 100_000)):
        data = _split(root, split, count, rng, first_id)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data), encoding="utf-8")
    return root


def pack_coco_archives(root: str | Path, dest: str | Path) -> dict[str, str]:
    """Zip a COCO-layout folder as the official archives (train2017.zip holds train2017/..., the annotations zip
    holds annotations/instances_*.json); returns their md5s: the checksum table `eca data coco` checks them with."""
    root, dest = Path(root), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    members = {
        "train2017.zip": sorted((root / "train2017").iterdir()),
        "val2017.zip": sorted((root / "val2017").iterdir()),
        "annotations_trainval2017.zip": sorted((root / "annotations").glob("instances_*2017.json")),
    }
    checksums = {}
    for name, files in members.items():
        with zipfile.ZipFile(dest / name, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr(f"{files[0].parent.name}/", b"")  # the official zips list their folder first
            for file in files:
                archive.write(file, f"{file.parent.name}/{file.name}")
        checksums[name] = hashlib.md5((dest / name).read_bytes(), usedforsecurity=False).hexdigest()
    return checksums


class CocoShapesDataModule(CocoDataModule):
    """CocoDataModule on COCO-shapes, generated into `root` on first use (a few seconds) with these arguments.

    Args:
        root: where the set is (or will be) written.
        train_images, val_images, generator_seed: what make_coco_shapes writes.
        See CocoDataModule for the rest (its fingerprint's dataset: coco_shapes).
    """

    def __init__(
        self,
        root: str = "data/coco_shapes",
        train_images: NonNegativeInt = 300,
        val_images: PositiveInt = 60,
        generator_seed: int = 0,
        batch_size: PositiveInt = 8,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt | None = None,
        pin_memory: bool | None = None,
        masks: bool = False,
        flip_prob: float = 0.5,
        group_by_aspect: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(root, batch_size, eval_batch_size, num_workers, pin_memory, masks, flip_prob,
                         group_by_aspect, dataset_name="coco_shapes", seed=seed)  # fmt: skip
        self.made_with = {"train": train_images, "val": val_images, "seed": generator_seed}

    def coco(self, split: str) -> COCO:
        stamp = self.root / "eca_coco_shapes.json"
        if not self.root.exists():  # written aside, then renamed: ranks that race write the same bytes, one wins
            self.root.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".coco_shapes.", dir=self.root.parent))
            make_coco_shapes(tmp, *self.made_with.values())
            (tmp / stamp.name).write_text(json.dumps(self.made_with), encoding="utf-8")
            try:
                os.rename(tmp, self.root)
            except OSError:
                shutil.rmtree(tmp)
        made_with = json.loads(stamp.read_text(encoding="utf-8")) if stamp.is_file() else None
        if made_with != self.made_with:
            held = f"COCO-shapes made with {made_with}" if made_with else "other data"
            raise DataError(f"{self.root} holds {held}, not {self.made_with}: give another root or delete it")
        return super().coco(split)
