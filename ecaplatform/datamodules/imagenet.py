"""ImageNet in its folder layout: root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG (val sorted into classes).

Setup lists files with os.scandir (threads over class folders, no image is opened) so that the 1.28M training
files index in seconds on a local disk; the index lives in numpy arrays, which worker processes can share
without the copy-on-write growth that Python lists of strings cause.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from ecaplatform.datamodules.base import ClassificationDataModule, DataError
from ecaplatform.datamodules.transforms import eval_transform, train_transform

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
LAYOUT_HINT = "expected layout: <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG (val sorted into class folders)"
# Show a progress bar when a split has at least this many class folders (the real ImageNet has 1000).
PROGRESS_MIN_CLASSES = 100


@dataclass
class FolderIndex:
    """The files of one split: relative paths (bytes), labels, and the class names in label order."""

    root: Path
    classes: list[str]
    paths: np.ndarray  # dtype S: "wnid/file.JPEG"
    labels: np.ndarray  # int64
    sizes: np.ndarray  # int64, bytes on disk

    def fingerprint_hash(self) -> str:
        """sha256 of the sorted "relative/path<TAB>size" lines: same data anywhere on disk, same hash."""
        digest = hashlib.sha256()
        for i in np.argsort(self.paths, kind="stable"):
            digest.update(self.paths[i] + b"\t" + str(int(self.sizes[i])).encode() + b"\n")
        return digest.hexdigest()


def _list_class_folder(folder: str) -> tuple[list[str], list[int]]:
    names, sizes = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file():
                names.append(entry.name)
                sizes.append(entry.stat().st_size)
    order = sorted(range(len(names)), key=names.__getitem__)
    return [names[i] for i in order], [sizes[i] for i in order]


def scan_split(split_dir: Path, show_progress: bool = True, threads: int = 16) -> FolderIndex:
    """Index root/<split>/<class>/<image>; classes are the sorted folder names (torchvision's ImageFolder order)."""
    if not split_dir.is_dir():
        raise DataError(f"split folder {split_dir} does not exist; {LAYOUT_HINT}")
    with os.scandir(split_dir) as entries:
        children = list(entries)
    classes = sorted(e.name for e in children if e.is_dir())
    loose = [e.name for e in children if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    if not classes:
        hint = (
            f"; it holds {len(loose)} images directly (e.g. {loose[0]}): sort them into class folders"
            if loose
            else ""
        )
        raise DataError(f"{split_dir} has no class folders{hint}; {LAYOUT_HINT}")
    start = time.perf_counter()
    folders = [str(split_dir / c) for c in classes]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        listing = pool.map(_list_class_folder, folders)
        if show_progress and len(classes) >= PROGRESS_MIN_CLASSES:
            listing = tqdm(listing, total=len(classes), desc=f"indexing {split_dir}", unit="class", file=sys.stderr)
        results = list(listing)
    paths: list[bytes] = []
    labels: list[int] = []
    sizes: list[int] = []
    for label, (cls, (names, file_sizes)) in enumerate(zip(classes, results, strict=True)):
        if not names:
            raise DataError(
                f"class folder {split_dir / cls} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "remove the folder or restore its images"
            )
        prefix = cls.encode() + b"/"
        paths.extend(prefix + n.encode() for n in names)
        labels.extend([label] * len(names))
        sizes.extend(file_sizes)
    if show_progress and len(classes) >= PROGRESS_MIN_CLASSES:
        print(
            f"indexed {len(paths):,} images in {len(classes)} classes under {split_dir} "
            f"in {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
        )
    return FolderIndex(
        root=split_dir,
        classes=classes,
        paths=np.array(paths, dtype=np.bytes_),
        labels=np.array(labels, dtype=np.int64),
        sizes=np.array(sizes, dtype=np.int64),
    )


class ImageFolderDataset(Dataset):
    """Decodes one indexed image with PIL (RGB) and applies the transform; a bad file raises naming its path."""

    def __init__(self, index: FolderIndex, transform: Any) -> None:
        self.index = index
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.index.root / self.index.paths[i].decode()
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"cannot decode image {path}: {err}; replace or delete this file and rerun") from err
        return self.transform(image), int(self.index.labels[i])


class ImageNetDataModule(ClassificationDataModule):
    """ImageNet-1k (or any data set in the same layout) with the paper's augmentation.

    Args:
        root: folder with train/ and val/ (only val/ is needed to validate a checkpoint).
        image_size: crop size (224 in the paper); evaluation resizes to image_size * 256/224 first.
        test_split: the folder `eca test` evaluates (ImageNet's test set has no public labels: val).
        show_progress: progress bar while indexing large trees (rank 0 only).
        See ClassificationDataModule for batch_size (global), eval_batch_size, num_workers, pin_memory, seed.
    """

    dataset_name = "imagenet"

    def __init__(
        self,
        root: str,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        image_size: int = 224,
        train_scale: tuple[float, float] = (0.08, 1.0),
        test_split: str = "val",
        show_progress: bool = True,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory, drop_last, seed)
        self.root = Path(root).expanduser()
        self.image_size = image_size
        self.train_scale = tuple(train_scale)
        self.test_split = test_split
        self.show_progress = show_progress
        self._indices: dict[str, FolderIndex] = {}

    def source_split(self, split: str) -> str:
        return self.test_split if split == "test" else split

    def _index(self, split: str) -> FolderIndex:
        if split not in self._indices:
            if not self.root.is_dir():
                raise DataError(f"data root {self.root} does not exist or is not a folder; {LAYOUT_HINT}")
            # Before the Trainer exists (the CLI reads num_classes at instantiation) the launcher's rank is known.
            rank = self.trainer.global_rank if self.trainer is not None else rank_zero_only.rank
            self._indices[split] = scan_split(self.root / split, show_progress=self.show_progress and rank == 0)
            self._check_same_classes()
        return self._indices[split]

    def _check_same_classes(self) -> None:
        indexed = list(self._indices.items())
        first_split, first = indexed[0]
        for split, other in indexed[1:]:
            if other.classes != first.classes:
                only_first = sorted(set(first.classes) - set(other.classes))[:5]
                only_other = sorted(set(other.classes) - set(first.classes))[:5]
                raise DataError(
                    f"{self.root}/{first_split} and {self.root}/{split} have different class folders "
                    f"({len(first.classes)} vs {len(other.classes)}; only in {first_split}: {only_first}, "
                    f"only in {split}: {only_other}); both splits need the same classes"
                )

    def setup(self, stage: str) -> None:
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": [self.test_split]}.get(stage, ["val"])
        for split in splits:
            self._index(split)

    @property
    def num_classes(self) -> int:
        if not self._indices:
            self._index("val")
        return len(next(iter(self._indices.values())).classes)

    @property
    def classes(self) -> list[str]:
        if not self._indices:
            self._index("val")
        return next(iter(self._indices.values())).classes

    def _dataset(self, split: str) -> Dataset:
        split = self.source_split(split)
        if split == "train":
            transform = train_transform(self.image_size, scale=self.train_scale, hflip=True)
        else:
            transform = eval_transform(self.image_size)
        return ImageFolderDataset(self._index(split), transform)

    def _fingerprint(self, split: str) -> dict[str, Any]:
        index = self._index(split)
        return {
            "dataset": self.dataset_name,
            "split": split,
            "num_samples": len(index.labels),
            "num_classes": len(index.classes),
            "hash": index.fingerprint_hash(),
        }
