"""NVIDIA DALI input for folder data sets: JPEG decoding and augmentation on the CPU (libjpeg-turbo) or the GPU
(nvJPEG, with the hardware JPEG decoder of A100/H100).

DALI only decodes and augments. What is read, in which order and by which rank stays the platform's own: the
FolderIndex of folder_index.py and the samplers of base.py, so both backends see the same files with the same labels
in the same order. Each epoch builds a fresh DALI pipeline whose random seed is derived from (seed, epoch, rank):
an epoch's batches depend on nothing but those numbers and the world size, so a run resumed at epoch e reads what
an uninterrupted run would have read at epoch e. Batches are uint8 [B, 3, H, W] with int64 labels, like the
torchvision path: the classifier normalises on the device.

Training decodes only the randomly chosen crop window (`decoders.image_random_crop`, the paper's scale and aspect
ratio), then resizes it with an antialiased bilinear filter and flips half the images. On the GPU DALI resizes and
flips; on the CPU torch's uint8 antialiased bilinear kernel does, inside the pipeline (see CropResizer): about 3x
faster per core than DALI's CPU resampler, and the filter torchvision's reference RandomResizedCrop uses. Evaluation
decodes the whole image, resizes the short side to image_size * 256/224 and centre-crops image_size, as the
reference does.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ecaplatform.datamodules.base import DataError
from ecaplatform.datamodules.folder_index import FolderIndex

DALI_INSTALL_HINT = (
    "install it with: pip install -e '.[dali]' (DALI for CUDA 13; with a CUDA 12 build of torch: "
    "pip install nvidia-dali-cuda120), or set data.backend and data.eval_backend to torchvision"
)
# The paper's (torchvision's) RandomResizedCrop aspect-ratio range.
TRAIN_RATIO = (3 / 4, 4 / 3)
# nvJPEG's scratch buffers, preallocated so that the first large images do not reallocate mid-epoch (the sizes
# NVIDIA's ImageNet examples use).
NVJPEG_DEVICE_PADDING = 211_025_920
NVJPEG_HOST_PADDING = 140_544_512


def import_dali() -> Any:
    """The `nvidia.dali` module, or a DataError that says how to install it."""
    try:
        import nvidia.dali as dali
    except ImportError as err:
        message = f"the dali input backend needs NVIDIA DALI, which is not installed; {DALI_INSTALL_HINT}"
        raise DataError(message) from err
    return dali


def dali_available() -> bool:
    try:
        import_dali()
    except DataError:
        return False
    return True


@dataclass(frozen=True)
class Augmentation:
    """What one pipeline does to each image: the training crop or the evaluation resize + centre crop."""

    image_size: int
    train: bool
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = TRAIN_RATIO
    hflip: bool = True
    resize_size: int | None = None  # evaluation: the short side before the centre crop


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A pipeline seed that depends only on (seed, epoch, rank), well mixed and within DALI's int32 range."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0] % (2**31 - 1))


class CropResizer:
    """Training on the CPU: each decoded crop (uint8 HWC) resized to size x size and, where its coin says so, flipped
    left-right, as a uint8 CHW sample. DALI calls it once per batch through fn.python_function.

    Why not fn.resize + crop_mirror_normalize, as on the GPU: on one core DALI's CPU resize and its flip/layout pass
    take about 0.7 and 0.1 ms per ImageNet crop, torch's uint8 SIMD antialiased bilinear kernel 0.2 ms for the same
    resize. It is the kernel of torchvision's RandomResizedCrop(antialias=True) on tensors and, like the reference,
    flips after resizing; the crops and coins are DALI's, drawn as before. torch releases the GIL in the kernel:
    with threads > 1 a pool resizes the samples of a batch in parallel.
    """

    def __init__(self, size: int, threads: int = 1) -> None:
        self.size = size
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="dali-resize") if threads > 1 else None

    def __call__(self, crops: list[np.ndarray], mirrors: list[np.ndarray] | None = None) -> list[np.ndarray]:
        out = np.empty((len(crops), 3, self.size, self.size), dtype=np.uint8)

        def resize(i: int) -> None:
            crop = torch.from_numpy(crops[i]).permute(2, 0, 1).unsqueeze(0)  # HWC as an NCHW (channels_last) view
            image = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True)[0].numpy()
            # numpy, not torch, for the copy: torch would spread it over its intra-op threads from this thread
            out[i] = image[:, :, ::-1] if mirrors is not None and mirrors[i] else image

        if self.pool is None:
            for i in range(len(crops)):
                resize(i)
        else:
            list(self.pool.map(resize, range(len(crops))))
        return list(out)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _build_pipeline(source: Any, aug: Augmentation, *, device: str, batch_size: int, threads: int,
                    device_id: int | None, seed: int, resizer: CropResizer | None = None) -> Any:  # fmt: skip
    """The DALI graph of one epoch. With a `resizer` (CPU training only), torch resizes and flips the decoded crops;
    without one, DALI does (fn.resize + crop_mirror_normalize: what the GPU runs)."""
    if resizer is not None and (device != "cpu" or not aug.train):
        raise ValueError("a CropResizer resizes training crops decoded on the CPU only")
    dali = import_dali()
    fn, types = dali.fn, dali.types
    decode_device = "mixed" if device == "gpu" else "cpu"
    gpu_args = (
        {"device_memory_padding": NVJPEG_DEVICE_PADDING, "host_memory_padding": NVJPEG_HOST_PADDING}
        if device == "gpu"
        else {}
    )

    @dali.pipeline_def(batch_size=batch_size, num_threads=threads, device_id=device_id, seed=seed,
                       prefetch_queue_depth=2, exec_dynamic=True)  # fmt: skip
    def pipeline() -> tuple[Any, Any]:
        jpegs, labels = fn.external_source(
            source=source, num_outputs=2, batch=True, dtype=[types.UINT8, types.INT64]
        )
        if aug.train:
            images = fn.decoders.image_random_crop(
                jpegs, device=decode_device, output_type=types.RGB, random_area=list(aug.scale),
                random_aspect_ratio=list(aug.ratio), num_attempts=10, **gpu_args,
            )  # fmt: skip
            if resizer is not None:  # uint8 CHW out, flipped where the coin says (the same coins as DALI's flip)
                inputs = [images, fn.random.coin_flip(probability=0.5)] if aug.hflip else [images]
                images = fn.python_function(*inputs, function=resizer, batch_processing=True, output_layouts="CHW")
                return images, labels
            images = fn.resize(images, resize_x=aug.image_size, resize_y=aug.image_size,
                               interp_type=types.INTERP_LINEAR, antialias=True)  # fmt: skip
            mirror = fn.random.coin_flip(probability=0.5) if aug.hflip else 0
        else:
            images = fn.decoders.image(jpegs, device=decode_device, output_type=types.RGB, **gpu_args)
            images = fn.resize(images, resize_shorter=aug.resize_size or aug.image_size,
                               interp_type=types.INTERP_LINEAR, antialias=True)  # fmt: skip
            mirror = 0
        # uint8 out, CHW, centre crop for evaluation (a no-op crop for training): normalising happens on the device.
        images = fn.crop_mirror_normalize(
            images, dtype=types.UINT8, output_layout="CHW", crop=(aug.image_size, aug.image_size),
            crop_pos_x=0.5, crop_pos_y=0.5, mirror=mirror,
        )  # fmt: skip
        return images, labels

    return pipeline()


class _BatchSource:
    """Feeds DALI one batch of encoded files per call, in the sampler's order; remembers what is in flight."""

    def __init__(self, index: FolderIndex, batches: Sequence[Sequence[int]]) -> None:
        self.index = index
        self.batches = batches
        self.next = 0
        self.in_flight: deque[Sequence[int]] = deque()

    def __call__(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if self.next >= len(self.batches):
            raise StopIteration
        batch = self.batches[self.next]
        self.next += 1
        self.in_flight.append(batch)
        files = [np.fromfile(self.path(i), dtype=np.uint8) for i in batch]
        labels = [np.array(self.index.labels[i], dtype=np.int64) for i in batch]
        return files, labels

    def path(self, i: int) -> Path:
        return self.index.root / self.index.paths[i].decode()

    def consumed(self) -> None:
        self.in_flight.popleft()

    def undecodable(self) -> Path | None:
        """The first file of the batches in flight that PIL cannot decode either (the one DALI failed on)."""
        for batch in self.in_flight:
            for i in batch:
                try:
                    with Image.open(self.path(i)) as image:
                        image.load()
                except Exception:
                    return self.path(i)
        return None


class DaliLoader:
    """An iterable of (uint8 images [B, 3, H, W], int64 labels [B]) batches decoded by DALI.

    `sampler` decides which indices this rank reads and in which order (Lightning calls its set_epoch each
    epoch, as it does for a DataLoader's sampler); `len()` is the number of batches, the last one partial unless
    drop_last. On the GPU the images arrive on cuda:device_id, the labels on the CPU (Lightning moves them).
    """

    # Lightning inspects evaluation loaders as DataLoaders (`loader.batch_sampler` whenever there is a sampler).
    batch_sampler = None

    def __init__(
        self, index: FolderIndex, sampler: Any, batch_size: int, aug: Augmentation, *, device: str, threads: int,
        device_id: int | None, seed: int, rank: int, drop_last: bool = False,
    ) -> None:  # fmt: skip
        if device not in ("cpu", "gpu"):
            raise DataError(f"DALI device must be cpu or gpu, got {device!r}")
        if device == "gpu" and device_id is None:
            raise DataError("DALI decoding on the GPU needs a CUDA device id; use data.dali_device: cpu without one")
        import_dali()
        self.index = index
        self.sampler = sampler
        self.batch_size = batch_size
        self.aug = aug
        self.device = device
        self.threads = max(1, threads)
        self.device_id = device_id
        self.seed = seed
        self.rank = rank
        self.drop_last = drop_last

    @property
    def pipeline_name(self) -> str:
        return f"dali-{self.device}"

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _batches(self) -> list[list[int]]:
        order = [int(i) for i in self.sampler]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def sample_order(self) -> list[int]:
        """The index-file positions one epoch reads, in order (per-image outcomes are placed by them)."""
        return [i for batch in self._batches() for i in batch]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self._batches()
        if not batches:
            return
        source = _BatchSource(self.index, batches)
        epoch = int(getattr(self.sampler, "epoch", 0))
        resizer = CropResizer(self.aug.image_size, self.threads) if self.aug.train and self.device == "cpu" else None
        pipe = _build_pipeline(source, self.aug, device=self.device, batch_size=self.batch_size,
                               threads=self.threads, device_id=self.device_id,
                               seed=epoch_seed(self.seed, epoch, self.rank), resizer=resizer)  # fmt: skip
        try:
            pipe.build()
            for _ in batches:
                try:
                    images, labels = pipe.run()
                except StopIteration:  # cannot happen before len(batches) runs; guard against a silent short epoch
                    raise DataError("DALI ended the epoch early; this is a bug, please report it") from None
                except RuntimeError as err:
                    bad = source.undecodable()
                    where = f"cannot decode image {bad}" if bad else "DALI failed on a batch"
                    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    raise DataError(f"{where}: {first_line}; replace or delete this file and rerun") from err
                source.consumed()
                yield self._to_torch(images), torch.from_numpy(np.array(labels.as_tensor()).reshape(-1))
        finally:
            del pipe  # frees the pipeline's threads and buffers now, not at garbage collection
            if resizer is not None:
                resizer.close()

    def _to_torch(self, images: Any) -> torch.Tensor:
        tensor = images.as_tensor()
        if self.device == "cpu":
            return torch.from_numpy(np.array(tensor))  # a copy: DALI reuses its output buffers
        from nvidia.dali.plugin.pytorch import feed_ndarray

        out = torch.empty(tensor.shape(), dtype=torch.uint8, device=torch.device("cuda", self.device_id))
        feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(out.device))
        return out
