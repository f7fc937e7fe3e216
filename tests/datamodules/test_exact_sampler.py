"""The exact evaluation sampler and loaders: what Lightning reads of them, and that no evaluation loader ever drops
or reorders a sample, whatever the training settings. Mutation testing (`make mutation`) found these unchecked."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, SequentialSampler

from ecaplatform.datamodules import DataError, ExactDistributedSampler
from ecaplatform.datamodules.base import ClassificationDataModule, sample_order


def test_the_sampler_says_what_lightning_reads_of_a_distributed_sampler() -> None:
    sampler = ExactDistributedSampler(10, num_replicas=3, rank=1)
    assert isinstance(sampler, DistributedSampler)  # so Lightning never replaces it
    # Lightning reads `shuffle` to warn about a shuffled evaluation loader; `drop_last` and `epoch` are what a
    # DistributedSampler has: none of them may say the order changes or a sample is dropped.
    assert (sampler.shuffle, sampler.drop_last, sampler.epoch) == (False, False, 0)
    assert (sampler.dataset_size, sampler.num_replicas, sampler.rank) == (10, 3, 1)
    sampler.set_epoch(4)
    assert sampler.epoch == 4 and list(sampler) == [1, 4, 7]


class _Indices(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> int:
        return index


class _Module(ClassificationDataModule):
    dataset_name = "indices"

    def _dataset(self, split: str) -> Dataset:
        return _Indices()


def _trainer(rank: int, world: int, accelerator: object = None) -> Any:
    return SimpleNamespace(global_rank=rank, world_size=world, accelerator=accelerator or object(),
                           num_devices=world)  # fmt: skip


@pytest.mark.parametrize("world", [1, 3])
@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluation_loaders_never_drop_or_shuffle_even_when_training_does(world: int, split: str) -> None:
    # drop_last and a batch that does not divide the split are training settings: evaluation ignores both.
    dm = _Module(batch_size=3 * world, eval_batch_size=4 * world, num_workers=0, drop_last=True, seed=5)
    read = []
    for rank in range(world):
        dm.trainer = _trainer(rank, world)
        loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
        assert (loader.batch_size, loader.drop_last) == (4, False)
        expected = SequentialSampler if world == 1 else ExactDistributedSampler
        assert type(loader.sampler) is expected
        order = sample_order(loader)
        assert order == list(range(rank, 10, world))
        read += order
    assert sorted(read) == list(range(10))


def test_the_training_loader_is_the_seeded_shuffle_with_its_own_batch_and_drop_last() -> None:
    dm = _Module(batch_size=4, eval_batch_size=2, num_workers=0, drop_last=True, seed=5)
    dm.trainer = _trainer(0, 1)
    loader = dm.train_dataloader()
    assert (loader.batch_size, loader.drop_last) == (4, True)
    assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.shuffle
    assert (loader.sampler.seed, loader.sampler.num_replicas, loader.sampler.rank) == (5, 1, 0)


def test_a_training_batch_must_divide_over_the_ranks_an_evaluation_batch_need_not() -> None:
    dm = _Module(batch_size=10, num_workers=0)
    dm.trainer = _trainer(0, 3)
    with pytest.raises(DataError, match="batch_size 10 is the GLOBAL batch"):
        dm.train_dataloader()
    assert dm.val_dataloader().batch_size == 4  # ceil(10 / 3): every rank's share of the global batch


class CUDAAccelerator:  # named as Lightning's: the data module knows a GPU by the accelerator's class name
    pass


class MPSAccelerator:
    pass


@pytest.mark.parametrize(("accelerator", "pinned"),
                         [(None, False), (CUDAAccelerator(), True), (MPSAccelerator(), True)])
def test_loader_settings_follow_the_module_and_the_accelerator(accelerator: object, pinned: bool) -> None:
    dm = _Module(batch_size=2, num_workers=1)  # one worker is already worth keeping between passes
    dm.trainer = _trainer(0, 1, accelerator)
    loader = dm.val_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.pin_memory) == (1, True, pinned)
    dm = _Module(batch_size=2, num_workers=0, pin_memory=not pinned)  # an explicit setting wins
    dm.trainer = _trainer(0, 1, accelerator)
    loader = dm.val_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.pin_memory) == (0, False, not pinned)
    assert _Module()._world() == (0, 1, False)  # no trainer: one process on the CPU


class _Stream(IterableDataset):
    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(range(4))


def test_sample_order_is_unknown_without_a_batch_sampler_or_for_a_stream() -> None:
    assert sample_order(DataLoader(_Indices(), batch_size=None)) is None  # no automatic batching
    assert sample_order(DataLoader(_Stream(), batch_size=2)) is None
    assert sample_order(SimpleNamespace(batch_sampler=[[0, 1]])) is None  # not a DataLoader
    assert sample_order(DataLoader(_Indices(), batch_size=4)) == list(range(10))


def test_a_batch_that_cannot_be_split_is_refused_with_a_batch_that_can() -> None:
    from ecaplatform.datamodules import per_device_batch_size

    with pytest.raises(DataError) as nothing:
        per_device_batch_size(0, 2, strict=False)
    assert str(nothing.value) == "batch_size must be a positive global batch size, got 0"
    for batch, world, suggested in [(256, 3, 255), (2, 3, 3)]:  # the nearest multiple below, at least one a rank
        with pytest.raises(DataError) as uneven:
            per_device_batch_size(batch, world, strict=True)
        assert str(uneven.value) == (
            f"batch_size {batch} is the GLOBAL batch and must divide evenly over the world size {world} (devices x "
            f"nodes); use a multiple of {world}, e.g. {suggested}")
