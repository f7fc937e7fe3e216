"""Synthetic images for throughput work: no disk, no decoding, the same uint8 path to the device as ImageNet."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import Dataset

from ecaplatform.datamodules.base import ClassificationDataModule


class SyntheticImageDataset(Dataset):
    """`num_samples` items cycling through a small pool of random uint8 images; label = index % num_classes."""

    def __init__(self, pool: torch.Tensor, num_samples: int, num_classes: int) -> None:
        self.pool = pool
        self.num_samples = num_samples
        self.num_classes = num_classes

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.pool[i % len(self.pool)], i % self.num_classes


class SyntheticDataModule(ClassificationDataModule):
    """Random images of `image_size` px: measures the model and the device, not the disk or the JPEG decoder.

    Args:
        num_classes: label range (1000 like ImageNet).
        train_samples / val_samples: epoch lengths.
        pool_size: distinct random images kept in memory and cycled through.
    """

    dataset_name = "synthetic"

    def __init__(
        self,
        batch_size: PositiveInt = 256,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt | None = 0,
        pin_memory: bool | None = None,
        num_classes: PositiveInt = 1000,
        image_size: PositiveInt = 224,
        train_samples: NonNegativeInt = 2560,
        val_samples: NonNegativeInt = 1280,
        pool_size: PositiveInt = 64,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory, drop_last, seed)
        self._num_classes = num_classes
        self.image_size = image_size
        self.sizes = {"train": train_samples, "val": val_samples}
        self.pool_size = pool_size
        self._pool: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def source_split(self, split: str) -> str:
        return "val" if split == "test" else split

    def _images(self) -> torch.Tensor:
        if self._pool is None:
            generator = torch.Generator().manual_seed(self.seed)
            shape = (self.pool_size, 3, self.image_size, self.image_size)
            self._pool = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        return self._pool

    def _dataset(self, split: str) -> Dataset:
        return SyntheticImageDataset(self._images(), self.sizes[self.source_split(split)], self._num_classes)

    def _fingerprint(self, split: str) -> dict[str, Any]:
        digest = hashlib.sha256(self._images().numpy().tobytes())
        digest.update(f"{split}:{self.sizes[split]}:{self._num_classes}".encode())
        return {
            "dataset": self.dataset_name,
            "split": split,
            "num_samples": self.sizes[split],
            "num_classes": self._num_classes,
            "hash": digest.hexdigest(),
        }
