"""Property-based tests (hypothesis) of the exact distributed evaluation sampler, checked against an
expectation computed independently here (integer arithmetic, no call into the code under test)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from torch.utils.data import Dataset

from ecaplatform.datamodules import ExactDistributedSampler
from ecaplatform.datamodules.base import ClassificationDataModule, per_device_batch_size, sample_order

SIZES = st.integers(min_value=1, max_value=5000)
WORLDS = st.integers(min_value=1, max_value=16)
BATCHES = st.integers(min_value=1, max_value=512)


@given(size=SIZES, world=WORLDS)
@example(size=1, world=16)  # more ranks than samples: most ranks get nothing, none gets a padded duplicate
@example(size=5000, world=16)
def test_ranks_split_the_dataset_exactly_once_without_padding(size: int, world: int) -> None:
    shards = [list(ExactDistributedSampler(size, num_replicas=world, rank=rank)) for rank in range(world)]
    every = [i for shard in shards for i in shard]
    assert sorted(every) == list(range(size))  # disjoint, complete, no padding (a duplicate breaks the equality)
    low, extra = divmod(size, world)
    for rank, shard in enumerate(shards):
        # The documented split: rank r gets r, r + world, ...; the first size % world ranks get one more.
        assert len(shard) == (low + 1 if rank < extra else low) == math.ceil((size - rank) / world)
        assert shard == list(range(rank, size, world))
        sampler = ExactDistributedSampler(size, num_replicas=world, rank=rank)
        assert len(sampler) == len(shard)
        sampler.set_epoch(7)  # evaluation order never depends on the epoch
        assert list(sampler) == shard == list(sampler)  # deterministic: the same order on every pass


class _Indices(Dataset):
    """A data set whose item is its own index: what a loader yields names the sample it read."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index


class _IndexModule(ClassificationDataModule):
    dataset_name = "indices"

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = size

    def _dataset(self, split: str) -> Dataset:
        return _Indices(self.size)


@given(size=SIZES, world=WORLDS, batch=BATCHES)
@example(size=5000, world=16, batch=512)
@example(size=1, world=16, batch=1)
@example(size=513, world=1, batch=512)  # one sample past a full batch: the last, short batch must be kept
def test_the_evaluation_loaders_of_all_ranks_read_every_sample_once(size: int, world: int, batch: int) -> None:
    per_rank = per_device_batch_size(batch, world, strict=False)
    assert per_rank == math.ceil(batch / world) and per_rank * world >= batch  # the global batch is covered
    read: list[int] = []
    for rank in range(world):
        dm = _IndexModule(size, batch_size=batch, num_workers=0)
        # Just what the data module reads of a trainer (rank, world size, accelerator, devices).
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=world, accelerator=object(), num_devices=world)
        loader = dm.val_dataloader()
        assert loader.batch_size == per_rank and not loader.drop_last
        order = sample_order(loader)  # the loader's real batch sampler, twice (None if the passes differed)
        assert order == list(range(rank, size, world))
        batches = list(loader.batch_sampler)
        assert len(batches) == math.ceil(len(order) / per_rank)  # no batch dropped, none but the last short
        assert all(len(b) == per_rank for b in batches[:-1])
        read += order
    assert sorted(read) == list(range(size))


