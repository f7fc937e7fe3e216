"""What every data module of the platform shares: global batch size, exact distributed evaluation, loaders.

Exact evaluation: under DDP each rank evaluates the indices rank::world_size, so every sample is seen exactly
once whatever the world size (ranks may get one sample more or less than their neighbours). Lightning's own
DistributedSampler pads the last ranks with duplicates instead, which would count some images twice. Our samplers
subclass DistributedSampler so that Lightning never replaces them, whatever `use_distributed_sampler` says.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

import lightning as L
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler, SequentialSampler

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """The data is missing, malformed or inconsistent; the message says which path or value and what to do."""


class ExactDistributedSampler(DistributedSampler):
    """Rank r gets indices r, r + world, r + 2*world, ...: no padding, no duplicates, lengths may differ."""

    def __init__(self, dataset_size: int, num_replicas: int, rank: int) -> None:
        # Deliberately not calling DistributedSampler.__init__: it needs a dataset and computes padded sizes.
        self.dataset_size = dataset_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.shuffle = False
        self.drop_last = False

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.dataset_size, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.dataset_size, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def sample_order(loader: object) -> list[int] | None:
    """The dataset indices one pass of an evaluation loader yields, in the order it yields them: a DataLoader's
    batch sampler, or the loader's own `sample_order()` (DaliLoader). None when it cannot say: an iterable
    dataset, no automatic batching, or an order that changes between passes (then it is not the pass that ran)."""
    own = getattr(loader, "sample_order", None)
    batches = getattr(loader, "batch_sampler", None)
    if callable(own):
        passes = [own(), own()]
    elif isinstance(loader, DataLoader) and batches is not None and not isinstance(loader.dataset, IterableDataset):
        passes = [[int(i) for batch in batches for i in batch] for _ in range(2)]
    else:
        return None
    return passes[0] if passes[0] == passes[1] else None


def per_device_batch_size(global_batch_size: int, world_size: int, *, strict: bool) -> int:
    """Split a global batch over the ranks. Training must divide evenly (the recipe's batch is a global number)."""
    if global_batch_size < 1:
        raise DataError(f"batch_size must be a positive global batch size, got {global_batch_size}")
    if strict and global_batch_size % world_size:
        raise DataError(
            f"batch_size {global_batch_size} is the GLOBAL batch and must divide evenly over the world size "
            f"{world_size} (devices x nodes); use a multiple of {world_size}, e.g. "
            f"{world_size * max(1, global_batch_size // world_size)}"
        )
    return max(1, math.ceil(global_batch_size / world_size))


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ClassificationDataModule(L.LightningDataModule):
    """Base class: subclasses provide `num_classes`, `_dataset(split)` and `_fingerprint(split)`.

    Args:
        batch_size: the GLOBAL training batch size (the paper's 256), split evenly across all ranks.
        eval_batch_size: the global evaluation batch size (default: batch_size).
        num_workers: loader worker processes per rank; None picks min(8, CPUs per local rank - 1).
        pin_memory: None pins when training on a GPU.
        drop_last: drop the last incomplete training batch.
        seed: seed of the training order (each epoch reshuffles with seed + epoch, on one process too).
    """

    dataset_name: str = ""

    def __init__(
        self,
        batch_size: PositiveInt = 256,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt | None = None,
        pin_memory: bool | None = None,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.seed = seed

    # --- what subclasses provide -------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def _dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def _fingerprint(self, split: str) -> dict[str, Any]:
        raise NotImplementedError

    def source_split(self, split: str) -> str:
        """The split of the underlying data that `split` reads (e.g. test reads ImageNet's val)."""
        return split

    # --- shared behaviour ----------------------------------------------------------------------------------------
    def fingerprint(self, split: str) -> dict[str, Any]:
        """{dataset, split, num_samples, num_classes, hash}: what a recorded result was computed on."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return self._fingerprint(self.source_split(split))

    def pipeline(self, split: str) -> str:
        """The input pipeline that makes `split`'s batches (a name in ecaplatform.store.pipelines), recorded with
        results."""
        return "torchvision"

    def _world(self) -> tuple[int, int, bool]:
        """(rank, world size, on GPU) of the attached trainer; a lone process without one."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1, False
        on_gpu = type(trainer.accelerator).__name__ in ("CUDAAccelerator", "MPSAccelerator")
        return trainer.global_rank, trainer.world_size, on_gpu

    def _workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        devices = self.trainer.num_devices if self.trainer is not None else 1
        return max(0, min(8, available_cpus() // max(1, devices) - 1))

    def _sampler(self, size: int, train: bool) -> Sampler:
        """This rank's order of the split: a seeded shuffle per epoch for training, rank::world for evaluation.

        Training always uses DistributedSampler (with one replica on one process) so that the order depends only
        on (seed, epoch, rank, world size), whichever backend decodes the images.
        """
        rank, world, _ = self._world()
        if train:
            return DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        if world > 1:
            return ExactDistributedSampler(size, num_replicas=world, rank=rank)
        return SequentialSampler(range(size))

    def _batch_size(self, train: bool) -> int:
        _, world, _ = self._world()
        if train:
            return per_device_batch_size(self.batch_size, world, strict=True)
        return per_device_batch_size(self.eval_batch_size or self.batch_size, world, strict=False)

    def _loader(self, split: str, train: bool) -> Iterable:
        dataset = self._dataset(split)
        _, _, on_gpu = self._world()
        workers = self._workers()
        return DataLoader(
            dataset,
            batch_size=self._batch_size(train),
            sampler=self._sampler(len(dataset), train),
            num_workers=workers,
            pin_memory=on_gpu if self.pin_memory is None else self.pin_memory,
            persistent_workers=workers > 0,
            drop_last=train and self.drop_last,
        )

    def train_dataloader(self) -> Iterable:
        return self._loader("train", train=True)

    def val_dataloader(self) -> Iterable:
        return self._loader("val", train=False)

    def test_dataloader(self) -> Iterable:
        return self._loader("test", train=False)
