"""Data modules: the ImageNet folder layout on real JPEGs (both input backends), the digits set, synthetic data, exact
DDP sharding."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

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
from ecaplatform.datamodules.base import SPLITS
from ecaplatform.store.pipelines import PIPELINES
from tests.image_folders import make_imagenet_folder

NEEDS_DALI = "the dali backend needs NVIDIA DALI: pip install -e '.[dali]'"


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    return make_imagenet_folder(tmp_path / "imagenet", classes=3, train_per_class=4, val_per_class=[3, 4, 4], size=40)


@pytest.fixture(params=["torchvision", "dali"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each loading test runs on both input backends (training and evaluation alike)."""
    if request.param == "dali":
        pytest.importorskip("nvidia.dali", reason=NEEDS_DALI)
    return request.param


class FakeTrainer:
    """Just what the data module reads of a trainer: rank, world size, devices, accelerator, the strategy's device."""

    accelerator = object()

    def __init__(self, rank: int, world: int, device: str = "cpu") -> None:
        self.global_rank, self.world_size, self.num_devices = rank, world, world
        self.strategy = SimpleNamespace(root_device=torch.device(device))


# --- ImageNet layout ---------------------------------------------------------------------------------------------


def test_imagenet_indexes_layout_and_serves_uint8_crops(imagenet_root: Path, backend: str) -> None:
    dm = ImageNetDataModule(str(imagenet_root), batch_size=4, num_workers=0, image_size=32, backend=backend,
                            eval_backend=backend)  # fmt: skip
    dm.setup("fit")
    assert dm.num_classes == 3
    assert dm.classes == ["n00000000", "n00000001", "n00000002"]
    train = list(dm.train_dataloader())
    assert [labels.numel() for _, labels in train] == [4, 4, 4]
    assert all(images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32) for images, _ in train)
    # Every training file once per epoch, with its folder's label.
    assert sorted(torch.cat([labels for _, labels in train]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    val = [batch for batch in dm.val_dataloader()]
    val_labels = torch.cat([labels for _, labels in val]).tolist()
    # Validation is sequential and complete: every file once, in sorted class order, the last batch partial.
    assert val_labels == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert [labels.numel() for _, labels in val] == [4, 4, 3]
    assert all(images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32) for images, _ in val)
    assert all(labels.dtype == torch.int64 for _, labels in train + val)


def test_imagenet_eval_transform_is_deterministic(imagenet_root: Path, backend: str) -> None:
    dm = ImageNetDataModule(str(imagenet_root), batch_size=11, num_workers=0, image_size=32, eval_backend=backend)
    dm.setup("validate")
    first = next(iter(dm.val_dataloader()))[0]
    second = next(iter(dm.val_dataloader()))[0]
    assert torch.equal(first, second)
    assert first.float().std() > 5  # real pixels, not a blank batch


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


def test_corrupt_image_error_names_the_file(imagenet_root: Path, backend: str) -> None:
    bad = sorted((imagenet_root / "val" / "n00000001").iterdir())[1]
    bad.write_bytes(b"this is not a JPEG")
    dm = ImageNetDataModule(str(imagenet_root), batch_size=4, num_workers=0, image_size=32, eval_backend=backend)
    dm.setup("validate")
    with pytest.raises(DataError, match=rf"cannot decode image .*{bad.name}.*replace or delete"):
        list(dm.val_dataloader())


def test_truncated_image_error_names_the_file(imagenet_root: Path, backend: str) -> None:
    bad = sorted((imagenet_root / "train" / "n00000000").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:200])
    dm = ImageNetDataModule(str(imagenet_root), batch_size=16, num_workers=0, image_size=32, backend=backend)
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


def test_loaders_use_the_exact_sampler_under_ddp(imagenet_root: Path, backend: str) -> None:
    dm = ImageNetDataModule(str(imagenet_root), batch_size=4, num_workers=0, image_size=32, backend=backend,
                            eval_backend=backend)  # fmt: skip
    dm.trainer = FakeTrainer(rank=1, world=2)  # type: ignore[assignment]
    dm.setup("fit")
    loader = dm.val_dataloader()
    assert isinstance(loader.sampler, ExactDistributedSampler)
    assert list(loader.sampler) == [1, 3, 5, 7, 9] and loader.batch_size == 2
    # Rank 1 of 2 scores images 1, 3, 5, 7, 9 (labels 0, 1, 1, 2, 2), the last batch partial, nothing padded.
    assert [labels.tolist() for _, labels in loader] == [[0, 1], [1, 2], [2]]
    train = dm.train_dataloader()
    assert isinstance(train.sampler, torch.utils.data.DistributedSampler) and train.batch_size == 2
    assert sum(labels.numel() for _, labels in train) == 6  # half of the 12 training images


def test_fingerprints_do_not_depend_on_the_backend(imagenet_root: Path) -> None:
    pytest.importorskip("nvidia.dali", reason=NEEDS_DALI)
    reference = ImageNetDataModule(str(imagenet_root))
    dali = ImageNetDataModule(str(imagenet_root), backend="dali", eval_backend="dali")
    for split in SPLITS:
        assert dali.fingerprint(split) == reference.fingerprint(split)


def test_dali_threads_are_num_workers(imagenet_root: Path) -> None:
    pytest.importorskip("nvidia.dali", reason=NEEDS_DALI)
    dm = ImageNetDataModule(str(imagenet_root), batch_size=4, num_workers=3, backend="dali", eval_backend="dali")
    dm.setup("fit")
    assert dm.train_dataloader().threads == dm.val_dataloader().threads == 3


@pytest.mark.parametrize("setting", ["backend", "eval_backend"])
def test_missing_dali_fails_at_construction_in_one_line_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # `import nvidia.dali` now fails as if not installed
    # Before the data is even looked at: this root does not exist.
    with pytest.raises(DataError, match=r"needs NVIDIA DALI.*pip install -e '\.\[dali\]'") as raised:
        ImageNetDataModule(str(tmp_path / "nowhere"), **{setting: "dali"})
    assert "\n" not in str(raised.value)
    ImageNetDataModule(str(tmp_path / "nowhere"))  # the torchvision backends need no DALI


def test_pipeline_names_what_makes_each_splits_batches(imagenet_root: Path) -> None:
    def names(dm: ImageNetDataModule) -> list[str]:
        return [dm.pipeline(split) for split in SPLITS]

    assert names(ImageNetDataModule(str(imagenet_root))) == ["torchvision"] * 3
    pytest.importorskip("nvidia.dali", reason=NEEDS_DALI)
    root = str(imagenet_root)
    assert names(ImageNetDataModule(root, backend="dali")) == ["dali-cpu", "torchvision", "torchvision"]
    assert names(ImageNetDataModule(root, eval_backend="dali", dali_device="gpu")) == ["torchvision", *["dali-gpu"] * 2]
    both = ImageNetDataModule(root, backend="dali", eval_backend="dali")  # auto: the CPU without a trainer
    assert names(both) == ["dali-cpu"] * 3
    both.trainer = FakeTrainer(rank=0, world=1, device="cuda")  # type: ignore[assignment]
    assert names(both) == ["dali-gpu"] * 3  # auto: the GPU when training on CUDA
    assert set(names(both)) | set(names(ImageNetDataModule(root, backend="dali"))) <= set(PIPELINES)


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
