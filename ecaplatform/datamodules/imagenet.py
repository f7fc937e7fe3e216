"""ImageNet in its folder layout: root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG (val sorted into classes).

The files are indexed by folder_index.scan_split; the images are decoded by PIL in DataLoader workers
(backend torchvision, the reference) or by NVIDIA DALI (backend dali, see dali.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch.utils.data import Dataset

from ecaplatform.datamodules.base import ClassificationDataModule, DataError, available_cpus
from ecaplatform.datamodules.dali import Augmentation, DaliLoader, import_dali
from ecaplatform.datamodules.folder_index import LAYOUT_HINT, FolderIndex, scan_split
from ecaplatform.datamodules.imagenet_manifest import prepared_from
from ecaplatform.datamodules.transforms import EVAL_RESIZE_RATIO, eval_transform, train_transform


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
        backend: what decodes and augments the training images: torchvision (PIL in DataLoader workers, the
            paper's preprocessing) or dali (NVIDIA DALI, `pip install -e '.[dali]'`); in the dali backend
            num_workers is the number of DALI CPU threads per rank.
        eval_backend: the same choice for validation and test. The default, torchvision, is the reference
            evaluation: only results evaluated with it verify a paper claim.
        dali_device: where DALI decodes: gpu (nvJPEG), cpu, or auto (gpu when training on CUDA).
        See ClassificationDataModule for batch_size (global), eval_batch_size, num_workers, pin_memory, seed.
    """

    dataset_name = "imagenet"

    def __init__(
        self,
        root: str,
        batch_size: PositiveInt = 256,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt | None = None,
        pin_memory: bool | None = None,
        image_size: PositiveInt = 224,
        train_scale: tuple[float, float] = (0.08, 1.0),
        test_split: str = "val",
        show_progress: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        backend: Literal["torchvision", "dali"] = "torchvision",
        eval_backend: Literal["torchvision", "dali"] = "torchvision",
        dali_device: Literal["auto", "cpu", "gpu"] = "auto",
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory, drop_last, seed)
        if "dali" in (backend, eval_backend):
            import_dali()  # fails now, in one line, rather than after indexing the data
        self.backend = backend
        self.eval_backend = eval_backend
        self.dali_device = dali_device
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

    def _backend(self, split: str) -> str:
        return self.backend if split == "train" else self.eval_backend

    def _dali_device(self) -> str:
        if self.dali_device != "auto":
            return self.dali_device
        trainer = self.trainer
        return "gpu" if trainer is not None and trainer.strategy.root_device.type == "cuda" else "cpu"

    def pipeline(self, split: str) -> str:
        return f"dali-{self._dali_device()}" if self._backend(self.source_split(split)) == "dali" else "torchvision"

    def _loader(self, split: str, train: bool) -> Iterable:
        if self._backend(self.source_split(split)) != "dali":
            return super()._loader(split, train)
        index = self._index(self.source_split(split))
        rank, _, _ = self._world()
        device = self._dali_device()
        device_id = None
        if device == "gpu":
            root = self.trainer.strategy.root_device if self.trainer is not None else None
            device_id = root.index if root is not None and root.type == "cuda" else torch.cuda.current_device()
        devices = self.trainer.num_devices if self.trainer is not None else 1
        threads = self.num_workers if self.num_workers else max(1, min(16, available_cpus() // max(1, devices)))
        aug = Augmentation(
            image_size=self.image_size,
            train=train,
            scale=self.train_scale,
            resize_size=None if train else round(self.image_size * EVAL_RESIZE_RATIO),
        )
        return DaliLoader(
            index, self._sampler(len(index.labels), train), self._batch_size(train), aug, device=device,
            threads=threads, device_id=device_id, seed=self.seed, rank=rank, drop_last=train and self.drop_last,
        )  # fmt: skip

    def _fingerprint(self, split: str) -> dict[str, Any]:
        index = self._index(split)
        fingerprint = {
            "dataset": self.dataset_name,
            "split": split,
            "num_samples": len(index.labels),
            "num_classes": len(index.classes),
            "hash": index.fingerprint_hash(),
        }
        # A root built by `eca data imagenet` says what it was built from (e.g. the verified official val archive)
        # and whether the split is unchanged since; without its manifest the fingerprint is as it always was.
        source = prepared_from(self.root, split, fingerprint["hash"])
        if source is not None:
            fingerprint["prepared_from"] = source
        return fingerprint
