"""The DALI input backend against the torchvision reference: the same files with the same labels in the same order,
reproducible epochs, the paper's crop statistics, the reference's evaluation window, the same checkpoint's score.

Most tests read coordinate images: red = x and green = y of the source pixel, blue = a level naming the file. The
window a crop was cut from (position, width, height, flip) is read back from the output's gradients, and the file
from its blue level, whatever the crop: the comparisons need no access to either backend's internals.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torch.utils.data import DistributedSampler
from torchvision.transforms.v2 import functional as TF

from ecaplatform.datamodules import ExactDistributedSampler, ImageNetDataModule
from ecaplatform.datamodules import dali as dali_module
from ecaplatform.datamodules.transforms import EVAL_RESIZE_RATIO
from ecaplatform.training.classifier import ImageClassifier

pytest.importorskip("nvidia.dali", reason="the dali backend needs NVIDIA DALI: pip install -e '.[dali]'")

BACKENDS = ("torchvision", "dali")
# Strict: a distribution test that fails at p <= 0.001 is a real difference, not bad luck (the samples are seeded,
# so a given platform gives the same p-values every run).
ALPHA = 1e-3

# --- coordinate images -------------------------------------------------------------------------------------------

TAG_BASE, TAG_STEP = 20, 8  # file k's blue level; JPEG at quality 100 without chroma subsampling keeps it within 2


def write_coordinate_jpeg(path: Path, width: int, height: int, blue: int = 128, step: int = 1) -> None:
    """A width x height JPEG whose pixel (x, y) is (step * x, step * y, blue): step * (size - 1) must fit a byte."""
    assert step * (max(width, height) - 1) <= 255
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    pixels = np.stack([step * x, step * y, np.full_like(x, blue)], axis=-1).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(path, format="JPEG", quality=100, subsampling=0)


def make_tagged_folder(
    root: Path, classes: int = 3, train_per_class: int = 8, size: tuple[int, int] = (96, 80)
) -> Path:
    """train/: classes x train_per_class coordinate images, file k of the index tagged TAG_BASE + k * TAG_STEP;
    val/: one image per class, tagged after the training files (k = classes * train_per_class + class)."""
    for label in range(classes):
        for split, count, first_tag in (("train", train_per_class, label * train_per_class),
                                        ("val", 1, classes * train_per_class + label)):  # fmt: skip
            folder = root / split / f"n{label:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                write_coordinate_jpeg(folder / f"{i:02d}.JPEG", *size, blue=TAG_BASE + (first_tag + i) * TAG_STEP)
    return root


def file_ids(images: torch.Tensor) -> list[int]:
    """The tag of each image of a batch (its file's position in the index)."""
    blue = images[:, 2].double().mean(dim=(1, 2))
    tags = torch.round((blue - TAG_BASE) / TAG_STEP)
    assert (blue - (TAG_BASE + tags * TAG_STEP)).abs().max() < 2.5, f"blue levels {blue.tolist()} name no file"
    return [int(t) for t in tags]


def crop_windows(images: torch.Tensor, step: int = 1) -> dict[str, np.ndarray]:
    """The source window of each output image (of coordinate images with this step): left, top, width, height
    (source pixels) and flipped.

    Away from the borders a linear resize keeps a linear image linear: output column j (centre u = j + 0.5) shows
    red = left + u * width / S - 0.5, or left + width - u * width / S - 0.5 when flipped. A line fitted to the inner
    columns' mean red gives the width (|slope| x S), the flip (slope < 0) and the left edge; rows and green give
    the top and the height. The two columns or rows at each border, where the antialiasing filter is clipped, are
    left out. The outputs' rounding to whole levels limits the read-back to about 0.5 / step source pixels.
    """
    size = images.shape[-1]
    inner = slice(2, size - 2)
    centres = torch.arange(size, dtype=torch.float64)[inner] + 0.5
    offsets = centres - centres.mean()

    def fit(profiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [B, n] -> slope, value at u = 0
        slope = (profiles - profiles.mean(1, keepdim=True)) @ offsets / (offsets @ offsets)
        return slope, profiles.mean(1) - slope * centres.mean()

    x_slope, x_start = fit(images[:, 0].double().mean(1)[:, inner] / step)
    y_slope, y_start = fit(images[:, 1].double().mean(2)[:, inner] / step)
    flipped = x_slope < 0
    width, height = x_slope.abs() * size, y_slope * size
    left = torch.where(flipped, x_start + 0.5 - width, x_start + 0.5)
    windows = {"left": left, "top": y_start + 0.5, "width": width, "height": height, "flipped": flipped}
    return {key: value.numpy() for key, value in windows.items()}


def concat(windows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([w[key] for w in windows]) for key in windows[0]}


class FakeTrainer:
    """What the data module reads of a trainer: rank, world size, devices, accelerator, the strategy's device."""

    accelerator = object()
    strategy = SimpleNamespace(root_device=torch.device("cpu"))

    def __init__(self, rank: int, world: int) -> None:
        self.global_rank, self.world_size, self.num_devices = rank, world, world


def tagged_module(root: Path, backend: str, **kwargs: Any) -> ImageNetDataModule:
    args: dict[str, Any] = {"batch_size": 8, "num_workers": 1, "image_size": 24, "show_progress": False}
    return ImageNetDataModule(str(root), backend=backend, eval_backend=backend, **{**args, **kwargs})


def epoch_batches(loader: Any, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.sampler.set_epoch(epoch)  # what Lightning does at the start of each epoch
    return list(loader)


def windows_in_order(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[int, np.ndarray]]:
    """(file, its crop window: left, top, width, height) of each image, in the order the loader served them."""
    served = []
    for images, _ in batches:
        w = crop_windows(images)
        edges = np.stack([w[key] for key in ("left", "top", "width", "height")], axis=1)
        served.extend(zip(file_ids(images), edges, strict=True))
    return served


def by_file(served: list[tuple[int, np.ndarray]]) -> list[np.ndarray]:
    """The windows in file order."""
    return [window for _, window in sorted(served, key=lambda pair: pair[0])]


def moved(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    """How many windows of a differ from b's by more than the read-back error (half a source pixel)."""
    return sum(np.abs(x - y).max() > 0.5 for x, y in zip(a, b, strict=True))


# --- the same files, labels and order --------------------------------------------------------------------------


class EpochRecorder(L.LightningModule):
    """Trains nothing; records, per epoch, which files arrived in which order with which labels."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[tuple[int, int]]] = {}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 24, 24) and labels.dtype == torch.int64
        self.seen.setdefault(self.current_epoch, []).extend(zip(file_ids(images), labels.tolist(), strict=True))
        return self.weight.sum() * 0.0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_under_fit_dali_reads_the_same_files_with_the_same_labels_in_the_same_order_as_torchvision(
    tmp_path: Path,
) -> None:
    root = make_tagged_folder(tmp_path / "tagged")
    seen = {}
    for backend in BACKENDS:
        recorder = EpochRecorder()
        trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0)  # fmt: skip
        trainer.fit(recorder, datamodule=tagged_module(root, backend))
        seen[backend] = recorder.seen

    assert seen["dali"] == seen["torchvision"]
    epochs = [[file for file, _ in seen["dali"][epoch]] for epoch in range(3)]
    for epoch in range(3):
        assert sorted(epochs[epoch]) == list(range(24))  # every training file once per epoch
        assert all(label == file // 8 for file, label in seen["dali"][epoch])  # the label of the file's folder
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]  # each epoch reshuffles


def test_a_dali_epoch_is_reproducible_and_other_epochs_and_seeds_crop_otherwise(tmp_path: Path) -> None:
    root = make_tagged_folder(tmp_path / "tagged")

    def read(epoch: int, seed: int = 0, loader: Any = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if loader is None:
            dm = tagged_module(root, "dali", seed=seed)
            dm.setup("fit")
            loader = dm.train_dataloader()
        return epoch_batches(loader, epoch)

    dm = tagged_module(root, "dali")
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = read(1, loader=loader)
    for again in (read(1, loader=loader), read(1)):  # the same loader again; a fresh one, as a resumed run builds
        assert len(again) == len(first) == 3
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(again, first, strict=True))

    served = windows_in_order(first)
    for other in (windows_in_order(read(2, loader=loader)), windows_in_order(read(1, seed=1))):
        # New random windows for (nearly) every file, and at (nearly) every position: DALI's random stream itself
        # depends on the epoch and the seed, not just which file comes when.
        assert moved(by_file(other), by_file(served)) >= 20
        assert moved([w for _, w in other], [w for _, w in served]) >= 20


# --- CPU training: torch resizes DALI's crops -----------------------------------------------------------------------


def test_cpu_training_shows_the_all_dali_graphs_crops_and_flips_for_the_same_seed(tmp_path: Path) -> None:
    """On the CPU torch resizes and flips the crops DALI decodes (dali.CropResizer); the all-DALI graph (fn.resize +
    crop_mirror_normalize: what the GPU runs, and the CPU ran before) with the same seed shows the same windows,
    flipped at the same positions, with the same labels; the pixels differ by the two filters' rounding only."""
    root = make_tagged_folder(tmp_path / "tagged")
    dm = tagged_module(root, "dali")
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = epoch_batches(loader, epoch=2)
    pipe = dali_module._build_pipeline(
        dali_module._BatchSource(loader.index, loader._batches()), loader.aug, device="cpu",
        batch_size=loader.batch_size, threads=1, device_id=None,
        seed=dali_module.epoch_seed(loader.seed, 2, loader.rank),
    )  # fmt: skip
    pipe.build()
    flips = []
    for images, labels in batches:
        dali_images, dali_labels = (np.array(out.as_tensor()) for out in pipe.run())
        assert torch.equal(labels, torch.from_numpy(dali_labels.reshape(-1)))
        ours, theirs = crop_windows(images), crop_windows(torch.from_numpy(dali_images))
        assert (ours["flipped"] == theirs["flipped"]).all()
        for key in ("left", "top", "width", "height"):
            assert np.abs(ours[key] - theirs[key]).max() < 0.5, key  # source pixels: the read-back's error
        diff = (images.int() - torch.from_numpy(dali_images).int()).abs()
        assert diff.max() <= 2 and diff.double().mean() < 0.25, (diff.max(), diff.double().mean())
        flips += ours["flipped"].tolist()
    del pipe
    assert 0 < sum(flips) < len(flips)


def test_cpu_training_images_are_the_references_resize_of_dalis_crops_flipped_exactly_when_the_coin_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each image the model gets is torchvision's antialiased resize (the reference RandomResizedCrop's) of the crop
    DALI decoded, flipped if and only if DALI's coin came up, bit for bit; a pool of resize threads changes nothing."""
    recorded: list[tuple[list[torch.Tensor], list[bool]]] = []
    CropResizer = dali_module.CropResizer

    class Recording(CropResizer):
        def __call__(self, crops: list[np.ndarray], mirrors: list[np.ndarray] | None = None) -> list[np.ndarray]:
            assert mirrors is not None
            recorded.append(([torch.from_numpy(c.copy()) for c in crops], [bool(m) for m in mirrors]))
            return super().__call__(crops, mirrors)

    root = make_tagged_folder(tmp_path / "tagged")
    monkeypatch.setattr(dali_module, "CropResizer", Recording)
    dm = tagged_module(root, "dali")
    dm.setup("fit")
    batches = epoch_batches(dm.train_dataloader(), epoch=4)
    assert len(recorded) == len(batches) == 3

    flips: list[bool] = []
    for (images, _), (crops, mirrors) in zip(batches, recorded, strict=True):
        for image, crop, mirror in zip(images, crops, mirrors, strict=True):
            expected = TF.resize(crop.permute(2, 0, 1), [24, 24], antialias=True)  # tagged_module's image_size
            assert torch.equal(image, expected.flip(-1) if mirror else expected)
        assert crop_windows(images)["flipped"].tolist() == mirrors  # the coordinate read-back agrees
        flips += mirrors
    assert 0 < sum(flips) < len(flips)
    unflipped = CropResizer(24)([c.numpy() for c in recorded[0][0]])  # no coins: none flipped
    assert all(torch.equal(torch.from_numpy(a), TF.resize(c.permute(2, 0, 1), [24, 24], antialias=True))
               for a, c in zip(unflipped, recorded[0][0], strict=True))  # fmt: skip

    dm = tagged_module(root, "dali", num_workers=3)  # 3 DALI threads and 3 resize threads
    dm.setup("fit")
    pooled = epoch_batches(dm.train_dataloader(), epoch=4)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(pooled, batches, strict=True))


def test_dali_ranks_read_disjoint_shards_that_cover_the_split_in_torchvisions_order(tmp_path: Path) -> None:
    root = make_tagged_folder(tmp_path / "tagged")
    train: dict[str, list[list[int]]] = {backend: [] for backend in BACKENDS}
    windows: list[list[np.ndarray]] = []
    val: list[list[int]] = []
    for backend in BACKENDS:
        for rank in range(2):
            dm = tagged_module(root, backend)  # the global batch of 8: 4 per rank
            dm.trainer = FakeTrainer(rank, world=2)  # type: ignore[assignment]
            dm.setup("fit")
            loader = dm.train_dataloader()
            assert isinstance(loader.sampler, DistributedSampler) and loader.batch_size == 4
            batches = epoch_batches(loader, epoch=5)
            assert [len(labels) for _, labels in batches] == [4, 4, 4]
            train[backend].append([f for images, _ in batches for f in file_ids(images)])
            if backend == "dali":
                windows.append([window for _, window in windows_in_order(batches)])
                assert dm.pipeline("train") == "dali-cpu"  # auto: the fake trainer's device is the CPU
                loader = dm.val_dataloader()
                assert isinstance(loader.sampler, ExactDistributedSampler)
                val.append([f for images, _ in loader for f in file_ids(images)])

    rank0, rank1 = train["dali"]
    assert not set(rank0) & set(rank1) and sorted(rank0 + rank1) == list(range(24))
    assert train["dali"] == train["torchvision"]
    assert moved(*windows) >= 10  # each rank draws its own random windows (the seed depends on the rank)
    assert val == [[24, 26], [25]]  # evaluation: rank::world, each image once, no padding


# --- training crops: the paper's laws ----------------------------------------------------------------------------

CROP_FRAME = (240, 200)  # source width, height (a landscape frame, like most photos)
CROP_OUT = 24
CROP_FILES, CROP_EPOCHS = 256, 16  # 4096 crops per backend


def paper_crops(n: int, width: int, height: int, *, log_ratio: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """n windows drawn as torchvision's RandomResizedCrop draws them (the paper's augmentation): area ~ U(0.08, 1) of
    the frame, log aspect ratio ~ U(log 3/4, log 4/3), sizes rounded, up to 10 tries, else the whole frame (whose
    6:5 ratio is in range). log_ratio=False draws the ratio itself uniformly: the mistake the test must catch."""
    rng = np.random.default_rng(seed)
    w, h = np.full(n, float(width)), np.full(n, float(height))
    pending = np.ones(n, dtype=bool)
    for _ in range(10):
        area = rng.uniform(0.08, 1.0, n) * width * height
        log_uniform = np.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3), n))
        ratio = log_uniform if log_ratio else rng.uniform(3 / 4, 4 / 3, n)
        cw, ch = np.round(np.sqrt(area * ratio)), np.round(np.sqrt(area / ratio))
        fits = pending & (cw >= 1) & (ch >= 1) & (cw <= width) & (ch <= height)
        w[fits], h[fits] = cw[fits], ch[fits]
        pending &= ~fits
    return {"area": w * h / (width * height), "ratio": w / h}


def training_crops(root: Path, backend: str) -> dict[str, np.ndarray]:
    torch.manual_seed(0)  # torchvision draws from torch's generator; DALI from (seed, epoch, rank)
    dm = ImageNetDataModule(str(root), batch_size=128, num_workers=1, image_size=CROP_OUT, backend=backend,
                            dali_device="cpu", show_progress=False)  # fmt: skip
    dm.setup("fit")
    loader = dm.train_dataloader()
    crops = concat([crop_windows(images) for epoch in range(CROP_EPOCHS) for images, _ in epoch_batches(loader, epoch)])
    crops["area"] = crops["width"] * crops["height"] / (CROP_FRAME[0] * CROP_FRAME[1])
    crops["ratio"] = crops["width"] / crops["height"]
    crops["centre_x"] = crops["left"] + crops["width"] / 2
    crops["centre_y"] = crops["top"] + crops["height"] / 2
    return crops


@pytest.mark.slow
def test_training_crops_follow_the_papers_area_ratio_and_flip_laws_in_both_backends(tmp_path: Path) -> None:
    """4096 crops per backend, read back from coordinate images: area fraction ~ U(0.08, 1), aspect ratio
    log-uniform on [3/4, 4/3], half flipped, inside the frame; the backends' area, ratio and position distributions
    agree (two-sample Kolmogorov-Smirnov, p > 0.001) and each follows the paper's sampler. The sample is large
    enough for the same two-sample test to reject a uniformly drawn ratio (p < 0.001)."""
    width, height = CROP_FRAME
    folder = tmp_path / "coords" / "train" / "n00000000"
    folder.mkdir(parents=True)
    write_coordinate_jpeg(folder / "frame.JPEG", width, height)
    frame = (folder / "frame.JPEG").read_bytes()
    for i in range(1, CROP_FILES):
        (folder / f"frame{i:03d}.JPEG").write_bytes(frame)
    (tmp_path / "coords" / "val" / "n00000000").mkdir(parents=True)
    (tmp_path / "coords" / "val" / "n00000000" / "frame.JPEG").write_bytes(frame)

    crops = {backend: training_crops(tmp_path / "coords", backend) for backend in BACKENDS}
    paper = paper_crops(200_000, width, height)
    uniform_ratio = paper_crops(200_000, width, height, log_ratio=False, seed=1)

    for backend, c in crops.items():
        n = len(c["area"])
        assert n == CROP_FILES * CROP_EPOCHS
        # The paper's ranges, up to the rounding of the crop size and the read-back (3%).
        assert c["area"].min() >= 0.08 * 0.97 and c["area"].max() <= 1.03, backend
        assert c["ratio"].min() >= 0.75 * 0.97 and c["ratio"].max() <= 4 / 3 * 1.03, backend
        # Inside the frame, up to a pixel of read-back error.
        assert c["left"].min() > -1 and (c["left"] + c["width"]).max() < width + 1, backend
        assert c["top"].min() > -1 and (c["top"] + c["height"]).max() < height + 1, backend
        for law in ("area", "ratio"):
            p = stats.ks_2samp(c[law], paper[law]).pvalue
            assert p > ALPHA, f"{backend}'s crop {law} does not follow the paper's law (KS p = {p:.2g})"
        p = stats.binomtest(int(c["flipped"].sum()), n, 0.5).pvalue
        assert p > ALPHA, f"{backend} flips {c['flipped'].mean():.1%} of the crops, not half (p = {p:.2g})"

    for key in ("area", "ratio", "centre_x", "centre_y"):
        p = stats.ks_2samp(crops["torchvision"][key], crops["dali"][key]).pvalue
        assert p > ALPHA, f"the backends' crop {key} distributions differ (two-sample KS p = {p:.2g})"

    # The comparison has the power it claims: a backend drawing the ratio uniformly would fail it.
    for backend, c in crops.items():
        p = stats.ks_2samp(c["ratio"], uniform_ratio["ratio"][: len(c["ratio"])]).pvalue
        assert p < ALPHA, f"{backend}: {len(c['ratio'])} crops cannot tell a uniform ratio from a log-uniform one"


# --- evaluation: the reference's window ----------------------------------------------------------------------------

EVAL_OUT = 28  # resized to round(28 * 256/224) = 32 first: an even margin on the short side, as 224 of 256 has
EVAL_STEP = 2  # two levels per source pixel: a finer read-back
EVAL_FRAMES = [(92, 85), (80, 72), (74, 65), (66, 64), (69, 90), (85, 94), (80, 84), (96, 88),
               (84, 81), (82, 94), (73, 90), (86, 64), (77, 92), (82, 65), (89, 88), (91, 69)]  # fmt: skip


def reference_eval_window(width: int, height: int, size: int) -> dict[str, float]:
    """The window torchvision's Resize(round(size * 256/224)) + CenterCrop(size) keeps, in source pixels: the short
    side to the resize target, the long side to int(target * long / short), the crop's corner at
    int(round(margin / 2)) (Python's round: half to even)."""
    target = round(size * EVAL_RESIZE_RATIO)
    if width <= height:
        new_w, new_h = target, int(target * height / width)
    else:
        new_w, new_h = int(target * width / height), target
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    sx, sy = width / new_w, height / new_h
    return {"left": left * sx, "top": top * sy, "width": size * sx, "height": size * sy, "px_x": sx, "px_y": sy}


@pytest.fixture(scope="module")
def eval_windows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("eval") / "frames"
    for split in ("train", "val"):
        folder = root / split / "n00000000"
        folder.mkdir(parents=True)
        for i, (width, height) in enumerate(EVAL_FRAMES):
            write_coordinate_jpeg(folder / f"{i:02d}.JPEG", width, height, step=EVAL_STEP)
    windows = {}
    for backend in BACKENDS:
        dm = ImageNetDataModule(str(root), batch_size=len(EVAL_FRAMES), num_workers=1, image_size=EVAL_OUT,
                                eval_backend=backend, dali_device="cpu", show_progress=False)  # fmt: skip
        dm.setup("validate")
        [(images, _)] = list(dm.val_dataloader())
        assert images.dtype == torch.uint8 and images.shape == (len(EVAL_FRAMES), 3, EVAL_OUT, EVAL_OUT)
        windows[backend] = crop_windows(images, step=EVAL_STEP)
        assert not windows[backend]["flipped"].any(), f"{backend} flips evaluation images"
    reference = [reference_eval_window(w, h, EVAL_OUT) for w, h in EVAL_FRAMES]
    windows["reference"] = {key: np.array([r[key] for r in reference]) for key in reference[0]}
    return windows


def window_gaps(windows: dict[str, dict[str, np.ndarray]], backend: str) -> np.ndarray:
    """|backend's window - the reference's| per image and edge (left, top, width, height), in resized pixels."""
    ref = windows["reference"]
    pixel = {"left": ref["px_x"], "top": ref["px_y"], "width": ref["px_x"], "height": ref["px_y"]}
    gaps = [np.abs(windows[backend][key] - ref[key]) / pixel[key] for key in ("left", "top", "width", "height")]
    return np.stack(gaps, axis=1)


def test_the_coordinate_read_back_recovers_torchvisions_evaluation_window_exactly(eval_windows: Any) -> None:
    # Within the read-back's rounding error (at most 0.25 source pixels, about 0.1 resized ones), so that the DALI
    # comparisons below measure DALI.
    assert window_gaps(eval_windows, "torchvision").max() < 0.15


def test_dali_evaluation_keeps_the_references_window_within_one_resized_pixel(eval_windows: Any) -> None:
    """Short side resized to 32 and a centre crop of 28, as the reference: no other side, scale or position (one
    resized pixel of rounding, plus the read-back's error)."""
    gaps = window_gaps(eval_windows, "dali")
    assert gaps.max() < 1.3, f"DALI's evaluation windows are {gaps.max():.2f} resized pixels from the reference's"


@pytest.mark.xfail(
    strict=True,
    reason="known: DALI's centre crop rounds an odd margin's half pixel up (torchvision: half to even, so often "
    "down) and its resize keeps the exact scale with a rounded long side (torchvision truncates the long side and "
    "rescales it): the windows are up to one resized pixel apart",
)
def test_dali_evaluation_keeps_exactly_the_references_window(eval_windows: Any) -> None:
    gaps = window_gaps(eval_windows, "dali")
    off = [f"{w}x{h}: {np.round(g, 2).tolist()}" for (w, h), g in zip(EVAL_FRAMES, gaps, strict=True) if g.max() > 0.15]
    assert not off, "DALI's windows differ from the reference's (left, top, width, height in resized pixels): " + (
        "; ".join(off)
    )


# --- the same checkpoint scores the same ------------------------------------------------------------------------

COLOURS = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [200, 60, 200], [60, 200, 200]])
PER_CLASS = 40


def make_colour_texture_folder(root: Path, seed: int = 0) -> Path:
    """Classes by colour, blurred by a per-image colour shift (so that classes overlap), a random stripe texture and
    pixel noise; 64-96 px frames of any shape, saved as ordinary JPEGs (quality 90, 4:2:0 chroma)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for label, colour in enumerate(COLOURS):
            folder = root / split / f"n{label:08d}"
            folder.mkdir(parents=True)
            for i in range(PER_CLASS):
                width, height = rng.integers(64, 97, size=2)
                y, x = np.mgrid[0:height, 0:width]
                angle, period, phase = rng.uniform(0, np.pi), rng.uniform(4, 10), rng.uniform(0, 2 * np.pi)
                stripes = np.sin((x * np.cos(angle) + y * np.sin(angle)) / period + phase)
                pixels = colour + rng.normal(0, 45, 3) + 30 * stripes[..., None] * rng.normal(0, 1, 3)
                pixels = pixels + rng.normal(0, 8, pixels.shape)
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(folder / f"{i:03d}.JPEG", quality=90)
    return root


def fitted_checkpoint(root: Path, path: Path) -> Path:
    """ECA-ResNet-18 with seeded random convolutions and a classifier fitted to them on the training images (a
    logistic regression on the pooled features, read by the reference pipeline), saved as a state_dict."""
    torch.manual_seed(0)
    classifier = ImageClassifier("eca_resnet18", num_classes=len(COLOURS)).eval()
    net = classifier.model
    body = torch.nn.Sequential(*list(net.children())[:-1])  # all but the final fully connected layer
    dm = ImageNetDataModule(str(root), batch_size=80, num_workers=0, image_size=EVAL_OUT, test_split="train",
                            show_progress=False)  # fmt: skip
    with torch.no_grad():
        pairs = [(body(classifier.normalize(images)).flatten(1), labels) for images, labels in dm.test_dataloader()]
    features, labels = torch.cat([f for f, _ in pairs]), torch.cat([y for _, y in pairs])
    mean, std = features.mean(0), features.std(0) + 1e-6
    head = torch.nn.Linear(features.shape[1], len(COLOURS))
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(200):
        loss = torch.nn.functional.cross_entropy(head((features - mean) / std), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():  # fold the standardisation into the network's own classifier
        net.fc.weight.copy_(head.weight / std)
        net.fc.bias.copy_(head.bias - (head.weight * mean / std).sum(1))
    torch.save(net.state_dict(), path)
    return path


class ScoredPredictions(L.Callback):
    """What validate scored: each image's predicted class and label, in the order the loader served them."""

    def __init__(self) -> None:
        self.predictions: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.hook = pl_module.register_forward_hook(lambda _m, _i, logits: self.predictions.append(logits.argmax(1)))

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.labels.append(batch[1])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.hook.remove()


@pytest.mark.slow
def test_the_same_checkpoint_scores_within_2_top1_points_and_95pc_agreement_under_both_eval_backends(
    tmp_path: Path,
) -> None:
    """One checkpoint, validated with eval_backend torchvision (the reference) and dali: top-1 within 2 points
    (about 5 of the 240 images) and the same prediction for at least 95% of the images, on a set the model gets
    neither trivially right nor at chance."""
    root = make_colour_texture_folder(tmp_path / "colours")
    checkpoint = fitted_checkpoint(root, tmp_path / "eca_resnet18_probe.pth")
    model = ImageClassifier("eca_resnet18", num_classes=len(COLOURS), checkpoint=str(checkpoint))

    top1, predictions, labels = {}, {}, {}
    for backend in BACKENDS:
        dm = ImageNetDataModule(str(root), batch_size=80, num_workers=1, image_size=EVAL_OUT, eval_backend=backend,
                                dali_device="cpu", show_progress=False)  # fmt: skip
        assert dm.pipeline("val") == ("dali-cpu" if backend == "dali" else "torchvision")
        scored = ScoredPredictions()
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[scored])  # fmt: skip
        [metrics] = trainer.validate(model, datamodule=dm, verbose=False)
        assert metrics["val_samples"] == len(COLOURS) * PER_CLASS
        top1[backend] = metrics["val_top1"]
        predictions[backend], labels[backend] = torch.cat(scored.predictions), torch.cat(scored.labels)
        own_top1 = (predictions[backend] == labels[backend]).double().mean().item() * 100
        assert own_top1 == pytest.approx(top1[backend], abs=1e-3)  # these are the predictions validate scored

    assert torch.equal(labels["dali"], labels["torchvision"])
    assert 50.0 < top1["torchvision"] < 98.0, "the set must leave room for the backends to differ"
    assert abs(top1["dali"] - top1["torchvision"]) <= 2.0, top1
    agreement = (predictions["dali"] == predictions["torchvision"]).double().mean().item()
    assert agreement >= 0.95, f"the backends agree on {agreement:.1%} of the predictions"
