"""Input pipeline throughput: the platform's DALI backend against a plain torchvision pipeline, on the same JPEGs.

The data is generated once (deterministic, cached): ImageNet-sized JPEGs (about 500x375, quality 90, ~110 KB each,
like ImageNet's files) in the ImageNet folder layout. Each pipeline is built once and iterated over whole epochs of
the training split, round-robin (one pass of each pipeline per round, the order rotated every round); reported is
the median images/s over rounds, end to end (a pass starts at iter() and ends when the last batch is in hand), and
its ratio to the plain pipeline's:

- plain torchvision: ImageFolder + PIL + RandomResizedCrop(224) / RandomHorizontalFlip / ToTensor / Normalize in a
  DataLoader, written here (not the platform's loader): what a reference ImageNet script does.
- platform torchvision: ImageNetDataModule(backend="torchvision"), for information (uint8 out, torchvision v2).
- DALI: ImageNetDataModule(backend="dali"), cpu (libjpeg-turbo; training crops resized by torch inside the DALI
  pipeline, see dali.py's CropResizer) or gpu (nvJPEG, "mixed").

CPU mode pins the whole process to ONE core (workers and DALI threads inherit it) with 1 DataLoader worker and 1
DALI thread, so the figure is work per core. GPU mode pins nothing and gives every pipeline --threads threads.

    python benchmarks/bench_input_pipeline.py                  # CPU, one core; exits 1 if DALI < 1.7x plain
    python benchmarks/bench_input_pipeline.py --device gpu     # DALI on the GPU, 8 threads vs 8 workers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

DATA_VERSION = 1  # bump when the generator changes, so that stale caches are not reused
# Sizes (width, height) with weights: ImageNet's files are mostly 500 on the long side, 4:3 or 3:2, both ways.
SIZES = [((500, 375), 6), ((375, 500), 3), ((500, 333), 2), ((333, 500), 1), ((500, 400), 1), ((400, 300), 1),
         ((500, 500), 1), ((640, 480), 1), ((450, 350), 1)]  # fmt: skip
CLASSES = 8
VAL_PER_CLASS = 2  # ImageNetDataModule.setup("fit") indexes val too; it is never read here
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PLAIN, PLATFORM_TV, DALI_CPU, DALI_GPU = "plain torchvision", "platform torchvision", "dali-cpu", "dali-gpu"


# --- data ------------------------------------------------------------------------------------------------------
def _smooth(rng: np.random.Generator, w: int, h: int, cells: int, scale: float) -> np.ndarray:
    """Noise on a coarse grid, upsampled bicubically: smooth colour fields like skies and walls."""
    from PIL import Image

    grid = rng.standard_normal((max(2, h // cells), max(2, w // cells), 3), dtype=np.float32)
    small = Image.fromarray(np.clip(grid * 40 + 128, 0, 255).astype(np.uint8))
    return (np.asarray(small.resize((w, h), Image.BICUBIC), np.float32) - 128) / 40 * scale


def _write_image(task: tuple[str, int, int, int]) -> int:
    """One JPEG: smooth colour fields + grain whose strength varies over the image + a few sharp edges, tuned so
    that quality 90 gives ImageNet-like file sizes (so libjpeg's entropy decoding does realistic work)."""
    from PIL import Image, ImageDraw

    path, w, h, seed = task
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(40, 215, 3).astype(np.float32) + _smooth(rng, w, h, 96, 45) + _smooth(rng, w, h, 12, 18)
    mask = np.clip(_smooth(rng, w, h, 64, 0.5)[..., :1] + 0.5, 0, 1)  # where the texture is, like a photo's detail
    grain = rng.standard_normal((h, w, 1), dtype=np.float32) * 0.6 + rng.standard_normal((h, w, 3), np.float32) * 0.4
    pixels += grain * 50 * (0.25 + 1.5 * mask**2)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = [x0, y0, x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape(box, outline=colour, width=int(rng.integers(1, 5)))
    image.save(path, format="JPEG", quality=90)
    return os.path.getsize(path)


def make_dataset(root: Path, train_images: int, seed: int = 0) -> dict[str, Any]:
    """ImageNet layout under root (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG), made once: a marker file with the
    parameters says the folder is complete, so an interrupted generation is redone rather than half reused."""
    marker = root / "complete.json"
    params = {"version": DATA_VERSION, "train_images": train_images, "classes": CLASSES, "seed": seed}
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("params") == params:
            return info
    rng = np.random.default_rng(seed)
    sizes, weights = zip(*SIZES, strict=True)
    probabilities = np.array(weights, float) / sum(weights)
    tasks = []
    for split, count in (("train", train_images), ("val", CLASSES * VAL_PER_CLASS)):
        for i in range(count):
            folder = root / split / f"n{i % CLASSES:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            w, h = sizes[int(rng.choice(len(sizes), p=probabilities))]
            tasks.append((str(folder / f"{split}_{i:06d}.JPEG"), w, h, seed * 1_000_003 + len(tasks)))
    started = time.perf_counter()
    workers = max(1, len(os.sched_getaffinity(0)))
    # Forked workers find _write_image through sys.modules, where run_all.py (which loads this file by path) has
    # not put this module: register it. Fork, not spawn: a spawned child could not import this file by name.
    if __name__ not in sys.modules:
        module = types.ModuleType(__name__)
        module.__dict__.update(globals())
        sys.modules[__name__] = module
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        nbytes = list(pool.map(_write_image, tasks, chunksize=16))
    train = tasks[:train_images]
    info = {
        "params": params,
        "mean_kb": sum(nbytes[:train_images]) / train_images / 1000,
        "mean_size": [round(statistics.fmean(t[1] for t in train)), round(statistics.fmean(t[2] for t in train))],
    }
    marker.write_text(json.dumps(info))
    print(f"  generated {len(tasks)} JPEGs in {root} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return info


def default_data_dir(train_images: int) -> Path:
    base = os.environ.get("ECA_BENCH_DATA") or os.path.join(tempfile.gettempdir(), "ecaplatform-bench-jpegs")
    return Path(base) / f"v{DATA_VERSION}-{train_images}"


# --- pinning ---------------------------------------------------------------------------------------------------
def set_affinity(cores: set[int]) -> None:
    """Pin every thread of this process to `cores`; threads and processes started later inherit the mask.

    os.sched_setaffinity(0, ...) sets only the calling thread's mask, so each existing thread is set as well.
    """
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cores)
    os.sched_setaffinity(0, cores)


# --- pipelines -------------------------------------------------------------------------------------------------
class Pipeline:
    """A loader under test and its timings. (Not a dataclass: run_all.py loads this file without registering it in
    sys.modules, where dataclasses look up string annotations.)"""

    def __init__(self, name: str, loader: Iterable, set_epoch: Callable[[int], None]) -> None:
        self.name = name
        self.loader = loader
        self.set_epoch = set_epoch
        self.seconds: list[float] = []
        self.first_batch: list[float] = []
        self.images = 0
        self.error: str | None = None


def plain_torchvision(root: Path, batch_size: int, workers: int, gpu: bool) -> Pipeline:
    """The reference recipe, as written in torchvision's ImageNet example: float32 normalised CHW out."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])  # fmt: skip
    dataset = datasets.ImageFolder(str(root / "train"), transform)
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, generator=generator,
                        persistent_workers=workers > 0, pin_memory=gpu)  # fmt: skip
    return Pipeline(PLAIN, loader, lambda epoch: None)


def platform_loader(root: Path, batch_size: int, workers: int, backend: str, dali_device: str) -> Pipeline:
    from ecaplatform.datamodules import ImageNetDataModule

    dm = ImageNetDataModule(str(root), batch_size=batch_size, num_workers=workers, backend=backend,
                            dali_device=dali_device, show_progress=False)  # type: ignore[arg-type]  # fmt: skip
    dm.setup("fit")
    loader: Any = dm.train_dataloader()
    name = PLATFORM_TV if backend == "torchvision" else f"dali-{dali_device}"
    return Pipeline(name, loader, loader.sampler.set_epoch)


def one_pass(pipe: Pipeline, epoch: int, gpu: bool) -> tuple[int, float, float]:
    """(images, seconds, seconds to the first batch) of one epoch; on the GPU every batch ends up on cuda:0."""
    import torch

    pipe.set_epoch(epoch)
    images = 0
    first = 0.0
    start = time.perf_counter()
    for batch, _labels in pipe.loader:
        if gpu:
            batch = batch.to("cuda", non_blocking=True)
        images += int(batch.shape[0])
        if not first:
            first = time.perf_counter() - start
    if gpu:
        torch.cuda.synchronize()
    return images, time.perf_counter() - start, first


def measure(pipes: list[Pipeline], rounds: int, gpu: bool) -> None:
    """One warm-up pass of each (starts persistent workers, warms allocators), then `rounds` rounds, one pass of
    each pipeline per round, in an order rotated every round so no pipeline always follows the same one."""
    for epoch in range(rounds + 1):
        shift = epoch % len(pipes)
        for pipe in pipes[shift:] + pipes[:shift]:
            if pipe.error:
                continue
            try:
                images, seconds, first = one_pass(pipe, epoch, gpu)
            except Exception as err:  # one broken pipeline must not cost the others' figures
                pipe.error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                print(f"  {pipe.name} failed: {pipe.error}", file=sys.stderr, flush=True)
                continue
            if epoch > 0:
                pipe.images = images
                pipe.seconds.append(seconds)
                pipe.first_batch.append(first)
        print(f"  {'warm-up' if epoch == 0 else f'round {epoch}/{rounds}'} done", file=sys.stderr, flush=True)


# --- where the time goes --------------------------------------------------------------------------------------
def breakdown(root: Path, batch_size: int, max_images: int = 512, reps: int = 3) -> list[tuple[str, float]]:
    """ms per image of each stage, on this (pinned) core, median of `reps` passes over the same files.

    DALI stages are graphs fed from memory (1 thread): decode the random crop; dali.py's own graph (_build_pipeline:
    + torch's antialiased resize, flip and CHW in fn.python_function); the all-DALI graph it replaced on the CPU
    (+ fn.resize, linear, antialiased; + flip and HWC->CHW in crop_mirror_normalize, as on the GPU) and that graph's
    resize without antialiasing. Then what dali.py does around the graph (reading each file with np.fromfile in
    Python, copying each batch out) and the PIL path's stages.
    """
    import nvidia.dali as dali
    import torch
    from nvidia.dali import fn, types
    from PIL import Image
    from torchvision import transforms

    from ecaplatform.datamodules.dali import Augmentation, CropResizer, _build_pipeline
    from ecaplatform.datamodules.transforms import train_transform

    files = sorted((root / "train").glob("*/*.JPEG"))[:max_images]
    files = files[: len(files) // batch_size * batch_size]
    blobs = [np.fromfile(f, dtype=np.uint8) for f in files]
    batches = [blobs[i : i + batch_size] for i in range(0, len(blobs), batch_size)]
    aug = Augmentation(image_size=224, train=True)

    class Source:  # dali.py's external_source contract: (files, labels) per call, StopIteration at the end
        def __init__(self, labels: bool = True) -> None:
            self.i = 0
            self.labels = labels

        def __call__(self) -> Any:
            if self.i >= len(batches):
                raise StopIteration
            self.i += 1
            files = batches[self.i - 1]
            return (files, [np.array(0, dtype=np.int64)] * batch_size) if self.labels else files

    def graph(stage: str) -> Any:
        @dali.pipeline_def(batch_size=batch_size, num_threads=1, device_id=None, seed=1, exec_dynamic=True)
        def pipeline() -> Any:
            jpegs = fn.external_source(source=Source(labels=False), batch=True, dtype=types.UINT8)
            images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB, random_area=[0.08, 1.0],
                                                   random_aspect_ratio=list(aug.ratio), num_attempts=10)  # fmt: skip
            if stage == "decode":
                return images
            images = fn.resize(images, resize_x=224, resize_y=224, interp_type=types.INTERP_LINEAR,
                               antialias=stage != "no-antialias")  # fmt: skip
            if stage == "resize":
                return images
            return fn.crop_mirror_normalize(images, dtype=types.UINT8, output_layout="CHW",
                                            mirror=fn.random.coin_flip(probability=0.5))  # fmt: skip

        return pipeline()

    def dali_ms(make: Callable[[], Any]) -> float:
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            pipe = make()
            pipe.build()
            for _ in batches:
                pipe.run()
            times.append(time.perf_counter() - start)
            del pipe
        return statistics.median(times) / len(files) * 1e3

    def ms(work: Callable[[], Any]) -> float:
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        return statistics.median(times) / len(files) * 1e3

    def own_graph() -> Any:
        return _build_pipeline(Source(), aug, device="cpu", batch_size=batch_size, threads=1, device_id=None, seed=1,
                               resizer=CropResizer(224))  # what DaliLoader builds for CPU training  # fmt: skip

    pipe = own_graph()
    pipe.build()
    out = pipe.run()[0].as_tensor()
    del pipe

    def decode_all() -> list[Any]:
        images = []
        for f in files:
            with Image.open(f) as image:
                images.append(image.convert("RGB"))
        return images

    decoded = decode_all()
    plain = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                transforms.ToTensor(), transforms.Normalize(MEAN, STD)])  # fmt: skip
    platform = train_transform(224)
    return [
        ("DALI: decode the random crop (libjpeg-turbo, ROI)", dali_ms(lambda: graph("decode"))),
        ("dali.py's graph: + torch antialiased resize 224x224, flip, CHW", dali_ms(own_graph)),
        ("all-DALI instead: + fn.resize 224x224, linear, antialias", dali_ms(lambda: graph("resize"))),
        ("all-DALI instead: + flip, HWC->CHW in crop_mirror_normalize", dali_ms(lambda: graph("cmn"))),
        ("all-DALI instead, resize without antialias (not the reference)", dali_ms(lambda: graph("no-antialias"))),
        ("dali.py: np.fromfile per file (Python thread)", ms(lambda: [np.fromfile(f, np.uint8) for f in files])),
        ("dali.py: _to_torch's copy of each batch", ms(lambda: [torch.from_numpy(np.array(out)) for _ in batches])),
        ("PIL: open + decode the whole image", ms(decode_all)),
        ("PIL: plain RandomResizedCrop/Flip/ToTensor/Normalize", ms(lambda: [plain(i) for i in decoded])),
        ("PIL: platform v2 RandomResizedCrop/Flip, uint8", ms(lambda: [platform(i) for i in decoded])),
    ]


# --- main ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--images", type=int, help="training JPEGs (default: cpu 768, gpu 8192)")
    parser.add_argument("--batch-size", type=int, help="default: cpu 64, gpu 256")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="gpu mode: DALI threads = DataLoader workers (default 8)")
    parser.add_argument("--core", type=int, help="cpu mode: the core to pin to (default: the last one allowed)")
    parser.add_argument("--data-dir", type=Path, help="where the JPEGs are cached (default: a temp folder)")
    parser.add_argument("--target", type=float, default=1.7, help="exit 1 if DALI's ratio to plain is below")
    parser.add_argument("--no-platform-torchvision", action="store_true", help="skip the information-only row")
    parser.add_argument("--breakdown", action="store_true", help="cpu: also time each stage, ms per image")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    gpu = args.device == "gpu"
    n_images = args.images or (8192 if gpu else 768)
    batch_size = args.batch_size or (256 if gpu else 64)
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        print("unmeasured: DALI not installed (pip install -e '.[dali]')")
        _write_json(args.json, {"unmeasured": "DALI not installed"})
        return 0
    import torch

    if gpu and not torch.cuda.is_available():
        print("unmeasured: --device gpu needs CUDA, which this machine does not have")
        _write_json(args.json, {"unmeasured": "no CUDA"})
        return 0

    root = args.data_dir or default_data_dir(n_images)
    info = make_dataset(root, n_images)  # before pinning: the generator may use every core
    # run_all.py runs the next benchmark in this same process: give it back every core and its torch threads.
    saved_mask, saved_threads = os.sched_getaffinity(0), torch.get_num_threads()
    try:
        return _measure_and_report(args, root, info, gpu, n_images, batch_size)
    finally:
        set_affinity(saved_mask)
        torch.set_num_threads(saved_threads)


def _measure_and_report(args: argparse.Namespace, root: Path, info: dict[str, Any], gpu: bool, n_images: int,
                        batch_size: int) -> int:  # fmt: skip
    import torch

    if gpu:
        threads = args.threads or min(8, len(os.sched_getaffinity(0)))
        where = f"no pinning, {threads} DALI threads / {threads} DataLoader workers, batches moved to cuda:0"
    else:
        threads = 1
        core = args.core if args.core is not None else max(os.sched_getaffinity(0))
        set_affinity({core})  # before any loader exists: workers and DALI threads inherit the mask
        torch.set_num_threads(1)
        where = f"pinned to core {core}: 1 DALI thread / 1 DataLoader worker, torch 1 thread"

    builders: list[tuple[str, Callable[[], Pipeline]]] = [
        (PLAIN, lambda: plain_torchvision(root, batch_size, threads, gpu)),
        (PLATFORM_TV, lambda: platform_loader(root, batch_size, threads, "torchvision", "cpu")),
        (DALI_GPU if gpu else DALI_CPU, lambda: platform_loader(root, batch_size, threads, "dali", args.device)),
    ]
    pipes = []
    for name, build in builders:
        if name == PLATFORM_TV and args.no_platform_torchvision:
            continue
        try:
            pipes.append(build())
        except Exception as err:  # reported as that row's failure; the other rows are still measured
            pipes.append(Pipeline(name, [], lambda epoch: None))
            pipes[-1].error = f"{type(err).__name__}: {err}".splitlines()[0]

    print(
        f"input pipeline on {args.device} ({where}), batch {batch_size}, {n_images} JPEGs "
        f"(mean {info['mean_size'][0]}x{info['mean_size'][1]}, {info['mean_kb']:.0f} KB), median of {args.rounds} "
        f"rounds, one epoch per pipeline per round",
        flush=True,
    )
    measure(pipes, args.rounds, gpu)

    plain = pipes[0]
    rates = {p.name: p.images / statistics.median(p.seconds) for p in pipes if p.seconds}
    print("| pipeline | img/s | ratio vs plain | first batch (s) | passes |")
    print("|---|---:|---:|---:|---:|")
    for p in pipes:
        if p.name not in rates:
            print(f"| {p.name} | failed: {p.error or 'no pass'} | | | 0 |")
            continue
        ratio = f"{rates[p.name] / rates[plain.name]:.2f}" if plain.name in rates else "n/a"
        print(f"| {p.name} | {rates[p.name]:.1f} | {ratio} | {statistics.median(p.first_batch):.3f} "
              f"| {len(p.seconds)} |")  # fmt: skip
    dali_name = DALI_GPU if gpu else DALI_CPU
    ratio = rates[dali_name] / rates[plain.name] if dali_name in rates and plain.name in rates else math.nan
    met = ratio >= args.target
    hint = "" if met or gpu or args.breakdown else " (--breakdown shows where the time goes)"
    print(f"DALI ({dali_name}) / plain torchvision = {ratio:.2f}x, target >= {args.target}x: "
          f"{'met' if met else 'MISSED'}{hint}")  # fmt: skip
    stages = breakdown(root, batch_size) if args.breakdown and not gpu else []
    if stages:
        print("\n| stage (1 thread, files in memory unless said) | ms/image |\n|---|---:|")
        for stage, value in stages:
            print(f"| {stage} | {value:.2f} |")
    _write_json(args.json, {
        "device": args.device, "threads": threads, "batch_size": batch_size, "images": n_images, "data": info,
        "rounds": args.rounds, "images_per_s": rates, "ratio": ratio, "target": args.target, "met": met,
        "first_batch_s": {p.name: statistics.median(p.first_batch) for p in pipes if p.first_batch},
        "errors": {p.name: p.error for p in pipes if p.error}, "breakdown_ms": dict(stages),
    })  # fmt: skip
    return 0 if met else 1


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, default=float))


if __name__ == "__main__":
    sys.exit(main())
