"""A small REAL data set for the CPU: scikit-learn's bundled handwritten digits (1797 8x8 images, 10 classes).

It ships inside the scikit-learn wheel, so nothing downloads at run time. The 8x8 grey images become uint8
RGB tensors and go through the same transform code as ImageNet, upscaled to `image_size`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt
from torch.utils.data import Dataset

from ecaplatform.datamodules.base import ClassificationDataModule
from ecaplatform.datamodules.transforms import eval_transform, train_transform

NUM_DIGIT_CLASSES = 10


class TensorImageDataset(Dataset):
    """uint8 images [N, 3, H, W] in memory with integer labels; the transform crops/resizes each one."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


def load_digits_uint8() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as uint8 RGB [N, 3, 8, 8] (grey levels 0..16 scaled to 0..255) and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grey = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = torch.from_numpy(grey)[:, None].expand(-1, 3, -1, -1).contiguous()
    return images, torch.from_numpy(bunch.target.astype(np.int64))


def split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """A fixed, class-stratified train/val split of the sample indices (sorted within each split)."""
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(
        np.arange(len(labels)), test_size=val_fraction, random_state=seed, stratify=labels
    )
    return {"train": np.sort(train), "val": np.sort(val)}


class DigitsDataModule(ClassificationDataModule):
    """Digits upscaled to `image_size` px, 3 channels, with a seeded stratified train/val split.

    Args:
        image_size: side of the images the model sees (the 8x8 originals are upscaled).
        val_fraction: share of the 1797 images held out for validation (and `eca test`).
        split_seed: seed of the train/val split (fixed, so runs compare on the same val images).
        train_scale: RandomResizedCrop scale range; digits keep most of their area.
        hflip: horizontal flips (off: a mirrored digit is a different glyph).
        See ClassificationDataModule for batch_size (global), eval_batch_size, num_workers, pin_memory, seed.
    """

    dataset_name = "digits"

    def __init__(
        self,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt | None = 0,
        pin_memory: bool | None = None,
        image_size: PositiveInt = 32,
        val_fraction: OpenUnitInterval = 0.2,
        split_seed: int = 0,
        train_scale: tuple[float, float] = (0.6, 1.0),
        hflip: bool = False,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory, drop_last, seed)
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.train_scale = tuple(train_scale)
        self.hflip = hflip
        self._data: tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]] | None = None

    def source_split(self, split: str) -> str:
        return "val" if split == "test" else split

    def _load(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
        if self._data is None:
            images, labels = load_digits_uint8()
            self._data = (images, labels, split_indices(labels.numpy(), self.val_fraction, self.split_seed))
        return self._data

    def setup(self, stage: str) -> None:
        self._load()

    @property
    def num_classes(self) -> int:
        return NUM_DIGIT_CLASSES

    def _dataset(self, split: str) -> Dataset:
        split = self.source_split(split)
        images, labels, indices = self._load()
        chosen = torch.from_numpy(indices[split])
        if split == "train":
            transform = train_transform(self.image_size, scale=self.train_scale, hflip=self.hflip)
        else:
            # No crop margin: the digits fill the 8x8 frame, so resize straight to the model's size.
            transform = eval_transform(self.image_size, resize_size=self.image_size)
        return TensorImageDataset(images[chosen], labels[chosen], transform)

    def _fingerprint(self, split: str) -> dict[str, Any]:
        images, labels, indices = self._load()
        chosen = indices[split]
        digest = hashlib.sha256()
        digest.update(chosen.astype(np.int64).tobytes())
        digest.update(images[torch.from_numpy(chosen)].numpy().tobytes())
        digest.update(labels[torch.from_numpy(chosen)].numpy().tobytes())
        return {
            "dataset": self.dataset_name,
            "split": split,
            "num_samples": len(chosen),
            "num_classes": NUM_DIGIT_CLASSES,
            "hash": digest.hexdigest(),
        }
