"""The file index of a folder data set: root/<split>/<class>/<image>, listed without opening any image.

Setup lists files with os.scandir (threads over class folders) so that ImageNet's 1.28M training files index in
seconds on a local disk; the index lives in numpy arrays, which worker processes can share without the
copy-on-write growth that Python lists of strings cause. Both input backends (torchvision, DALI) read this index.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ecaplatform.datamodules.base import DataError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
LAYOUT_HINT = "expected layout: <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG (val sorted into class folders)"
BACKENDS = ("torchvision", "dali")
# Show a progress bar when a split has at least this many class folders (the real ImageNet has 1000).
PROGRESS_MIN_CLASSES = 100


@dataclass
class FolderIndex:
    """The files of one split: relative paths (bytes), labels, and the class names in label order."""

    root: Path
    classes: list[str]
    paths: np.ndarray  # dtype S: "wnid/file.JPEG"
    labels: np.ndarray  # int64
    sizes: np.ndarray  # int64, bytes on disk

    def fingerprint_hash(self) -> str:
        """sha256 of the sorted "relative/path<TAB>size" lines: same data anywhere on disk, same hash."""
        digest = hashlib.sha256()
        for i in np.argsort(self.paths, kind="stable"):
            digest.update(self.paths[i] + b"\t" + str(int(self.sizes[i])).encode() + b"\n")
        return digest.hexdigest()


def _list_class_folder(folder: str) -> tuple[list[str], list[int]]:
    names, sizes = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file():
                names.append(entry.name)
                sizes.append(entry.stat().st_size)
    order = sorted(range(len(names)), key=names.__getitem__)
    return [names[i] for i in order], [sizes[i] for i in order]


def scan_split(split_dir: Path, show_progress: bool = True, threads: int = 16) -> FolderIndex:
    """Index root/<split>/<class>/<image>; classes are the sorted folder names (torchvision's ImageFolder order)."""
    if not split_dir.is_dir():
        raise DataError(f"split folder {split_dir} does not exist; {LAYOUT_HINT}")
    with os.scandir(split_dir) as entries:
        children = list(entries)
    classes = sorted(e.name for e in children if e.is_dir())
    loose = [e.name for e in children if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    if not classes:
        hint = (
            f"; it holds {len(loose)} images directly (e.g. {loose[0]}): sort them into class folders"
            if loose
            else ""
        )
        raise DataError(f"{split_dir} has no class folders{hint}; {LAYOUT_HINT}")
    start = time.perf_counter()
    folders = [str(split_dir / c) for c in classes]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        listing = pool.map(_list_class_folder, folders)
        if show_progress and len(classes) >= PROGRESS_MIN_CLASSES:
            listing = tqdm(listing, total=len(classes), desc=f"indexing {split_dir}", unit="class", file=sys.stderr)
        results = list(listing)
    paths: list[bytes] = []
    labels: list[int] = []
    sizes: list[int] = []
    for label, (cls, (names, file_sizes)) in enumerate(zip(classes, results, strict=True)):
        if not names:
            raise DataError(
                f"class folder {split_dir / cls} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "remove the folder or restore its images"
            )
        prefix = cls.encode() + b"/"
        paths.extend(prefix + n.encode() for n in names)
        labels.extend([label] * len(names))
        sizes.extend(file_sizes)
    if show_progress and len(classes) >= PROGRESS_MIN_CLASSES:
        print(
            f"indexed {len(paths):,} images in {len(classes)} classes under {split_dir} "
            f"in {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
        )
    return FolderIndex(
        root=split_dir,
        classes=classes,
        paths=np.array(paths, dtype=np.bytes_),
        labels=np.array(labels, dtype=np.int64),
        sizes=np.array(sizes, dtype=np.int64),
    )
