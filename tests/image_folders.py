"""Test helper: a small ImageNet-layout folder of real JPEG files, made with PIL.

    from tests.image_folders import make_imagenet_folder
    root = make_imagenet_folder(tmp_path / "imagenet", classes=3, train_per_class=4, val_per_class=2, size=32)

Each class has its own base colour plus per-image noise, so a model can learn the classes and no two files
are identical. Class folders are named like ImageNet wnids (n00000000, n00000001, ...) unless names are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def class_names(classes: int | Sequence[str]) -> list[str]:
    return [f"n{i:08d}" for i in range(classes)] if isinstance(classes, int) else list(classes)


def write_jpeg(path: Path, colour: Sequence[int], size: tuple[int, int], rng: np.random.Generator) -> None:
    height, width = size[1], size[0]
    pixels = np.empty((height, width, 3), dtype=np.float64)
    pixels[:] = colour
    pixels += rng.normal(0.0, 12.0, pixels.shape)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(path, format="JPEG", quality=90)


def make_imagenet_folder(
    root: str | Path,
    classes: int | Sequence[str] = 3,
    train_per_class: int | Sequence[int] = 4,
    val_per_class: int | Sequence[int] = 2,
    size: int | tuple[int, int] = 32,
    seed: int = 0,
) -> Path:
    """Write root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG; per-class counts may be lists. Returns root."""
    root = Path(root)
    names = class_names(classes)
    size = (size, size) if isinstance(size, int) else tuple(size)
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(len(names), 3))
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        counts = [per_class] * len(names) if isinstance(per_class, int) else list(per_class)
        if len(counts) != len(names):
            raise ValueError(f"{split}: {len(counts)} per-class counts for {len(names)} classes")
        for label, (name, count) in enumerate(zip(names, counts, strict=True)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                stem = f"ILSVRC2012_val_{label:04d}{i:04d}" if split == "val" else f"{name}_{i}"
                write_jpeg(folder / f"{stem}.JPEG", colours[label], size, rng)
    return root
