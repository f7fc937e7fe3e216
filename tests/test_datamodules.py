"""Data modules: the ImageNet folder layout on real JPEGs, the digits set, synthetic data, exact DDP sharding."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ecaplatform.datamodules import (
    DataError,
    DigitsDataModule,
    ExactDistributedSampler,
    ImageNetDataModule,
    SyntheticDataModule,
    per_device_batch_size,
)
from tests.image_folders import make_imagenet_folder


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    return make_imagenet_folder(tmp_path / "imagenet", classes=3, train_per_class=4, val_per_class=[3, 4, 4], size=40)


# --- ImageNet layout ---------------------------------------------------------------------------------------------


def test_imagenet_indexes_layout_and_serves_uint8_crops(imagenet_root: Path) -> None:
    dm = ImageNetDataModule(str(imagenet_root), batch_size=4, num_workers=0, image_size=32)
    dm.setup("fit")
    assert dm.num_classes == 3
    assert dm.classes == ["n00000000", "n00000001", "n00000002"]
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    val = [batch for batch in dm.val_dataloader()]
    val_labels = torch.cat([labels for _, labels in val]).tolist()
    # Validation is sequential and complete: every file once, in sorted class order.
    assert val_labels == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert all(images.shape[1:] == (3, 32, 32) for images, _ in val)


def test_imagenet_eval_transform_is_deterministic(imagenet_root: Path) -> None:
    dm = ImageNetDataModule(str(imagenet_root), batch_size=11, num_workers=0, image_size=32)
    dm.setup("validate")
    first = next(iter(dm.val_dataloader()))[0]
    second = next(iter(dm.val_dataloader()))[0]
    assert torch.equal(first, second)


def test_imagenet_fingerprint_names_split_counts_and_hashes_paths_and_sizes(
    imagenet_root: Path, tmp_path: Path
) -> None:
    fp = ImageNetDataModule(str(imagenet_root)).fingerprint("val")
    assert fp["dataset"] == "imagenet" and fp["split"] == "val"
    assert fp["num_samples"] == 11 and fp["num_classes"] == 3
    assert len(fp["hash"]) == 64
    # The same files elsewhere on disk: the same fingerprint (paths are relative).
    copy = tmp_path / "elsewhere"
    shutil.copytree(imagenet_root, copy)
    assert ImageNetDataModule(str(copy)).fingerprint("val") == fp
    # `eca test` reads ImageNet's labelled val split, and says so.
    assert ImageNetDataModule(str(copy)).fingerprint("test") == fp
    # A changed file (size) or a removed one changes the hash.
    victim = sorted((copy / "val" / "n00000001").iterdir())[0]
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert ImageNetDataModule(str(copy)).fingerprint("val")["hash"] != fp["hash"]
    victim.unlink()
    changed = ImageNetDataModule(str(copy)).fingerprint("val")
    assert changed["num_samples"] == 10 and changed["hash"] != fp["hash"]


def test_missing_root_names_the_path_and_the_layout(tmp_path: Path) -> None:
    dm = ImageNetDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"nowhere.*does not exist.*train/<wnid>/\*\.JPEG.*val/<wnid>"):
        dm.setup("fit")


def test_missing_split_folder_names_it(imagenet_root: Path) -> None:
    shutil.rmtree(imagenet_root / "train")
    dm = ImageNetDataModule(str(imagenet_root))
    dm.setup("validate")  # validating needs only val/
    with pytest.raises(DataError, match=r"imagenet/train does not exist"):
        dm.setup("fit")


def test_empty_class_folder_is_named(imagenet_root: Path) -> None:
    for image in (imagenet_root / "val" / "n00000002").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"class folder .*val/n00000002 has no images"):
        ImageNetDataModule(str(imagenet_root)).setup("validate")


def test_unsorted_val_folder_gets_a_hint(imagenet_root: Path) -> None:
    val = imagenet_root / "val"
    for image in list(val.rglob("*.JPEG")):
        image.rename(val / image.name)
    for folder in [p for p in val.iterdir() if p.is_dir()]:
        folder.rmdir()
    with pytest.raises(DataError, match=r"no class folders; it holds 11 images directly.*sort them"):
        ImageNetDataModule(str(imagenet_root)).setup("validate")


def test_train_and_val_must_have_the_same_classes(imagenet_root: Path) -> None:
    shutil.copytree(imagenet_root / "val" / "n00000002", imagenet_root / "val" / "n99999999")
    with pytest.raises(DataError, match=r"different class folders.*only in val: \['n99999999'\]"):
        ImageNetDataModule(str(imagenet_root)).setup("fit")


def test_corrupt_image_error_names_the_file(imagenet_root: Path) -> None:
    bad = sorted((imagenet_root / "val" / "n00000001").iterdir())[1]
    bad.write_bytes(b"this is not a JPEG")
    dm = ImageNetDataModule(str(imagenet_root), batch_size=4, num_workers=0, image_size=32)
    dm.setup("validate")
    with pytest.raises(DataError, match=rf"cannot decode image .*{bad.name}.*replace or delete"):
        list(dm.val_dataloader())


def test_truncated_image_error_names_the_file(imagenet_root: Path) -> None:
    bad = sorted((imagenet_root / "train" / "n00000000").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:200])
    dm = ImageNetDataModule(str(imagenet_root), batch_size=16, num_workers=0, image_size=32)
    dm.setup("fit")
    with pytest.raises(DataError, match=rf"cannot decode image .*{bad.name}"):
        list(dm.train_dataloader())


# --- batch sizes and exact sharding ------------------------------------------------------------------------------


def test_global_batch_is_split_across_ranks() -> None:
    assert per_device_batch_size(256, 4, strict=True) == 64
    assert per_device_batch_size(96, 4, strict=True) == 24
    assert per_device_batch_size(256, 3, strict=False) == 86  # evaluation: any split is exact
    with pytest.raises(DataError, match=r"batch_size 256 .*GLOBAL.*world size 3.*multiple of 3"):
        per_device_batch_size(256, 3, strict=True)


@pytest.mark.parametrize("size", [1, 7, 11, 50_000])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_exact_sampler_covers_every_index_exactly_once(size: int, world: int) -> None:
    shards = [list(ExactDistributedSampler(size, world, rank)) for rank in range(world)]
    assert [len(s) for s in shards] == [len(ExactDistributedSampler(size, world, r)) for r in range(world)]
    merged = sorted(i for shard in shards for i in shard)
    assert merged == list(range(size))


def test_loaders_use_the_exact_sampler_under_ddp(imagenet_root: Path) -> None:
    class FakeTrainer:  # just what the data module reads: rank, world size, accelerator, devices
        global_rank, world_size, num_devices = 1, 2, 2
        accelerator = object()

    dm = ImageNetDataModule(str(imagenet_root), batch_size=4, num_workers=0, image_size=32)
    dm.trainer = FakeTrainer()  # type: ignore[assignment]
    dm.setup("fit")
    loader = dm.val_dataloader()
    assert isinstance(loader.sampler, ExactDistributedSampler)
    assert list(loader.sampler) == [1, 3, 5, 7, 9] and loader.batch_size == 2
    train = dm.train_dataloader()
    assert isinstance(train.sampler, torch.utils.data.DistributedSampler) and train.batch_size == 2


# --- digits and synthetic ----------------------------------------------------------------------------------------


def test_digits_split_is_fixed_stratified_and_disjoint() -> None:
    dm = DigitsDataModule()
    dm.setup("fit")
    _, labels, indices = dm._load()
    train, val = indices["train"], indices["val"]
    assert len(train) + len(val) == 1797 and not set(train) & set(val)
    assert len(val) == 360
    counts = np.bincount(labels.numpy()[val], minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # stratified: ~36 per class
    again = DigitsDataModule()
    assert again.fingerprint("val") == dm.fingerprint("val")
    assert DigitsDataModule(split_seed=1).fingerprint("val")["hash"] != dm.fingerprint("val")["hash"]
    fp = dm.fingerprint("train")
    assert (fp["dataset"], fp["split"], fp["num_samples"], fp["num_classes"]) == ("digits", "train", 1437, 10)


def test_digits_images_are_uint8_rgb_at_the_requested_size() -> None:
    dm = DigitsDataModule(batch_size=32, image_size=24)
    dm.setup("fit")
    images, labels = next(iter(dm.val_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (32, 3, 24, 24)
    assert torch.equal(images[:, 0], images[:, 1]) and images.max() > 200  # grey, full range
    assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() <= 9


def test_synthetic_data_has_fixed_lengths_and_labels() -> None:
    dm = SyntheticDataModule(batch_size=8, num_classes=5, image_size=16, train_samples=20, val_samples=9)
    batches = list(dm.val_dataloader())
    assert sum(len(labels) for _, labels in batches) == 9
    assert batches[0][0].dtype == torch.uint8 and batches[0][0].shape == (8, 3, 16, 16)
    assert batches[0][1].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert dm.fingerprint("train")["num_samples"] == 20 and dm.fingerprint("val")["dataset"] == "synthetic"
