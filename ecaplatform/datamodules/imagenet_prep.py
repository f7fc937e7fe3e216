"""`eca data imagenet`: build the folder layout ImageNetDataModule reads (OUT/train/<wnid>/*.JPEG,
OUT/val/<wnid>/*.JPEG) from the official ILSVRC2012 archives or from Kaggle's copy.

What comes from torchvision: the published archive names and md5s (ARCHIVE_META) and the devkit parsing
(parse_devkit_archive: meta.mat's 1000 leaf synsets and the val ground truth -> meta.bin, read back with
load_meta_file), so the class list and every val label are read exactly as torchvision reads them.
Why not its parse_train_archive / parse_val_archive: they hash the 138 GB archive again without progress, unpack
the whole train tar before its per-class tars (twice the disk), cannot resume (a half-extracted class folder looks
complete, and a rerun trips over the folders already made), and give val images their labels by position in a
sorted listing, which one missing or extra file shifts silently. Here every val image is placed by its own number
(ILSVRC2012_val_00000001.JPEG is the ground truth's first line), and the archive must hold exactly the images the
ground truth labels.

Resuming: class folders are built under OUT/.eca_imagenet_prep/partial/ and renamed into OUT/<split>/ only when
complete, so OUT/<split>/<wnid> existing means that class is done. A class's val images are spread over the whole
val archive, so the val class folders fill side by side (each file written under a temporary name, then renamed)
and move in together at the end. md5s are cached by path, size and mtime. The manifest is written last; the work
folder is then removed.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import re
import shutil
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from torchvision.datasets import imagenet as tv_imagenet

import ecaplatform
from ecaplatform.datamodules.base import DataError
from ecaplatform.datamodules.folder_index import IMAGE_EXTENSIONS, scan_split
from ecaplatform.datamodules.imagenet_manifest import (
    HASH_CHUNK,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    ChecksumCache,
    ManifestError,
    Progress,
    file_md5,
    file_record,
    read_manifest,
    write_manifest,
)

WORK_DIR = ".eca_imagenet_prep"
SPLITS = ("train", "val")
LINK_MODES = ("hardlink", "copy", "symlink")
DOWNLOAD_PAGE = "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php"
KAGGLE_PAGE = "https://www.kaggle.com/c/imagenet-object-localization-challenge/data"
# torchvision's ARCHIVE_META keys, in the order they are needed (the small devkit first: it fails fastest).
ARCHIVE_ROLES = {
    "devkit": "the development kit, 2.5 MB: class list and val labels",
    "val": "the validation images, 6.3 GB",
    "train": "the training images, 138 GB",
}
KAGGLE_IMAGES = Path("ILSVRC/Data/CLS-LOC")
KAGGLE_VAL_LABELS = "LOC_val_solution.csv"
KAGGLE_SYNSETS = "LOC_synset_mapping.txt"
FULL_IMAGENET = {"classes": 1000, "train": 1_281_167, "val": 50_000}
VAL_IMAGE = "ILSVRC2012_val_{:08d}.JPEG"
WNID = re.compile(r"n\d{8}")


# --- the output folder and its work folder -------------------------------------------------------------------------


@dataclass
class Job:
    """One `eca data imagenet` invocation."""

    source: str  # "official-archives" or "kaggle"
    input_dir: Path
    out: Path
    splits: tuple[str, ...]
    verify: bool = True
    link: str | None = None  # kaggle only

    @property
    def work(self) -> Path:
        return self.out / WORK_DIR

    def partial(self, split: str) -> Path:
        return self.work / "partial" / split

    @property
    def incoming(self) -> Path:
        """Single files are written here under a temporary name, then renamed into their class folder."""
        return self.work / "incoming"


def _check_out(job: Job) -> dict[str, Any] | None:
    """Refuse an output folder that holds anything but an earlier run of this command; return its manifest."""
    out = job.out
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    entries = set(os.listdir(out))
    foreign = sorted(entries - {*SPLITS, MANIFEST_NAME, MANIFEST_NAME + ".tmp", WORK_DIR})
    if foreign:
        raise DataError(
            f"--out {out} holds other things ({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); give a "
            "new or empty folder, or the folder of an earlier `eca data imagenet` to finish it or add a split"
        )
    if entries & set(SPLITS) and not entries & {MANIFEST_NAME, WORK_DIR}:
        raise DataError(
            f"--out {out} already has {' and '.join(sorted(entries & set(SPLITS)))}/ that `eca data imagenet` did not "
            f"make (there is no {MANIFEST_NAME}); give a new or empty folder"
        )
    try:
        manifest = read_manifest(out)
    except ManifestError as err:
        raise DataError(f"{err}; move it away (or delete it) and rerun") from err
    if manifest is not None and manifest["source"] != job.source:
        raise DataError(
            f"--out {out} was prepared from {manifest['source']}; adding a split from {job.source} would mix "
            "sources: use another --out"
        )
    return manifest


def _check_unfinished(job: Job, fingerprint: dict[str, Any]) -> None:
    """A preparation left unfinished is resumed only with the same inputs: otherwise its partial class folders
    would be mixed with another source's files."""
    path = job.work / "state.json"
    earlier: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):  # none yet (a fresh start), or unreadable: nothing to compare
        earlier = json.loads(path.read_text(encoding="utf-8"))
    changed = [k for k in fingerprint if k in earlier and earlier[k] != fingerprint[k]]
    if changed:
        raise DataError(
            f"{job.out} holds an unfinished preparation made with other inputs ({', '.join(changed)}: "
            f"{', '.join(str(earlier[k]) for k in changed)}); rerun that command to finish it, or delete "
            f"{job.work} to start over"
        )
    path.write_text(json.dumps(fingerprint, indent=1), encoding="utf-8")


@contextlib.contextmanager
def _exclusive(job: Job) -> Iterator[None]:
    """Two preparations writing one folder would interleave their files: the second one is refused."""
    import fcntl  # POSIX only: imported here, so that the module itself imports anywhere

    with open(job.work / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise DataError(f"another `eca data imagenet` is writing {job.out} right now; wait for it") from err
        yield


def _fresh_dir(path: Path) -> Path:
    """An empty folder at `path`; whatever an interrupted run left there goes."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _write_file(src: IO[bytes], dest: Path, incoming: Path) -> None:
    """Write under a temporary name, then rename: a file that exists is complete."""
    tmp = incoming / (dest.name + ".part")
    with open(tmp, "wb") as f:
        shutil.copyfileobj(src, f, HASH_CHUNK)
    os.replace(tmp, dest)


def _build_class_folder(job: Job, split: str, wnid: str, fill: Callable[[Path], int]) -> None:
    """Fill a fresh folder under the work folder, then rename it into OUT/<split>/<wnid> (done if it exists)."""
    final = job.out / split / wnid
    if final.is_dir():
        return
    folder = _fresh_dir(job.partial(split) / wnid)
    if fill(folder) == 0:
        raise DataError(f"class {wnid} of the {split} split has no images in the input")
    final.parent.mkdir(exist_ok=True)
    os.rename(folder, final)


def _val_destination(job: Job, wnid: str, name: str) -> Path | None:
    """Where a val image goes while the val classes fill side by side; None once its class folder is in place."""
    if (job.out / "val" / wnid).is_dir():
        return None
    folder = job.partial("val") / wnid
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _commit_val(job: Job, wnids: set[str]) -> None:
    """Move the filled val class folders into OUT/val: only after every val image is in its folder."""
    (job.out / "val").mkdir(exist_ok=True)
    for wnid in sorted(wnids):
        final = job.out / "val" / wnid
        if not final.is_dir():
            os.rename(job.partial("val") / wnid, final)


# --- checks shared by both sources ----------------------------------------------------------------------------------


def _examples(names: set[str] | list[str], k: int = 3) -> str:
    shown = sorted(names)[:k]
    return ", ".join(shown) + (", ..." if len(names) > k else "")


def _check_same_classes(found: set[str], expected: set[str], found_in: str, expected_in: str) -> None:
    if found != expected:
        raise DataError(
            f"{found_in} has {len(found)} classes, {expected_in} names {len(expected)}: "
            f"only in {found_in}: [{_examples(found - expected)}], only in {expected_in}: "
            f"[{_examples(expected - found)}]; are both from ILSVRC2012 (ImageNet-1k)?"
        )


def _check_val_names(names: list[str], labels: dict[str, str], found_in: str, labels_from: str) -> None:
    """The val images must be exactly the labelled ones: a missing or extra image is refused, never shifted."""
    repeated = [n for n, count in Counter(names).items() if count > 1]
    extra = set(names) - labels.keys()
    missing = labels.keys() - set(names)
    if repeated or extra or missing:
        raise DataError(
            f"{found_in} holds {len(names)} val images, {labels_from} labels {len(labels)}: "
            f"{len(missing)} labelled but missing [{_examples(missing)}], {len(extra)} without a label "
            f"[{_examples(extra)}], {len(repeated)} twice [{_examples(repeated)}]; every val image must have exactly "
            "one label: is the val input complete and from ILSVRC2012?"
        )


# --- the official archives --------------------------------------------------------------------------------------------


def _find_archives(job: Job) -> dict[str, Path]:
    if not job.input_dir.is_dir():
        raise DataError(f"--archives {job.input_dir} is not a folder")
    needed = ["devkit", *(s for s in ("val", "train") if s in job.splits)]
    paths = {key: job.input_dir / tv_imagenet.ARCHIVE_META[key][0] for key in needed}
    missing = [key for key, path in paths.items() if not path.is_file()]
    if missing:
        listed = "; ".join(f"{tv_imagenet.ARCHIVE_META[k][0]} ({ARCHIVE_ROLES[k]})" for k in missing)
        raise DataError(
            f"--archives {job.input_dir} lacks {listed}; download {'it' if len(missing) == 1 else 'them'} from "
            f"{DOWNLOAD_PAGE} into that folder under exactly {'this name' if len(missing) == 1 else 'these names'}"
        )
    return paths


def _checksums(job: Job, paths: dict[str, Path], cache: ChecksumCache) -> dict[str, dict[str, Any]]:
    """Check each archive against torchvision's published md5; a mismatch is refused unless --no-verify.
    --no-verify skips hashing the big archives (an md5 computed earlier is still recorded); the devkit is always
    hashed: it is small, and torchvision's devkit parsing needs its md5."""
    records = {}
    for key, path in paths.items():
        name, published = tv_imagenet.ARCHIVE_META[key]
        md5 = cache.get(path)
        if md5 is None and (job.verify or key == "devkit"):
            md5 = file_md5(path)
            cache.put(path, md5)
        if job.verify and md5 != published:
            raise DataError(
                f"{path} does not match its published checksum: expected md5 {published} (published for {name}), "
                f"found {md5}. "
                f"The file is damaged, incomplete or another file under this name: download it again from "
                f"{DOWNLOAD_PAGE}, or rerun with --no-verify to use it anyway (the manifest then records it as "
                "unverified, and so does every result evaluated on it)"
            )
        if job.verify:
            print(f"{name}: md5 {md5} matches the published checksum", flush=True)
        records[name] = file_record(path, md5, published, verified=job.verify)
    return records


@contextlib.contextmanager
def _torchvision_accepts(key: str, md5: str) -> Iterator[None]:
    """torchvision's parse_devkit_archive checks the published md5 again itself. Under --no-verify the user has
    accepted this file, so torchvision's table names its md5 for the duration of the call (and then the published
    one again)."""
    name, published = tv_imagenet.ARCHIVE_META[key]
    tv_imagenet.ARCHIVE_META[key] = (name, md5)
    try:
        yield
    finally:
        tv_imagenet.ARCHIVE_META[key] = (name, published)


def _parse_devkit(job: Job, devkit: Path, md5: str) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """torchvision's devkit parsing: ({wnid: class names} of the 1000 leaf synsets, the wnid of each val image in
    image-number order)."""
    meta_dir = _fresh_dir(job.work / "devkit")
    try:
        with _torchvision_accepts("devkit", md5):
            tv_imagenet.parse_devkit_archive(str(meta_dir), file=str(devkit))
        wnid_to_classes, val_wnids = tv_imagenet.load_meta_file(str(meta_dir))
    # EOFError and zlib.error: a .tar.gz cut short; the rest: a tar or meta.mat that is not what torchvision reads.
    except (OSError, EOFError, zlib.error, KeyError, IndexError, ValueError, RuntimeError, tarfile.TarError) as err:
        raise DataError(
            f"{devkit} could not be read as the ILSVRC2012 devkit (ILSVRC2012_devkit_t12/data/meta.mat and "
            f"data/ILSVRC2012_validation_ground_truth.txt inside): {type(err).__name__}: {err}"
        ) from err
    return wnid_to_classes, list(val_wnids)


def _extract_class_tar(outer: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> int:
    """Unpack one per-class tar straight from the train archive (never written to disk); returns its image count."""
    count = 0
    with tarfile.open(fileobj=outer.extractfile(member), mode="r|") as inner:
        for entry in inner:
            if entry.isdir():
                continue
            if not entry.isfile() or "/" in entry.name or not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                raise DataError(f"{member.name} in the train archive holds {entry.name!r}, not a flat image file")
            with inner.extractfile(entry) as src, open(dest / entry.name, "xb") as f:
                shutil.copyfileobj(src, f, HASH_CHUNK)
            count += 1
    return count


@contextlib.contextmanager
def _reading(tar_path: Path) -> Iterator[None]:
    """A truncated or damaged archive (possible under --no-verify) is named, with what to do."""
    try:
        yield
    except tarfile.TarError as err:
        raise DataError(
            f"{tar_path} is damaged or incomplete ({err}); download it again (finished class folders are kept)"
        ) from err


def _train_from_archive(job: Job, tar_path: Path, classes: set[str]) -> None:
    with _reading(tar_path), tarfile.open(tar_path, "r:") as outer:
        members = [m for m in outer.getmembers() if not m.isdir()]  # headers only: tarfile seeks past the data
        by_wnid = {}
        for m in members:
            wnid, ext = os.path.splitext(m.name)
            if not (m.isfile() and ext == ".tar" and WNID.fullmatch(wnid)):
                raise DataError(
                    f"{tar_path.name} should hold one tar per class (n01440764.tar, ...), but holds {m.name!r}: "
                    "is it the ILSVRC2012 training archive?"
                )
            by_wnid[wnid] = m
        _check_same_classes(set(by_wnid), classes, tar_path.name, "the devkit")
        with Progress(f"train: unpacking {tar_path.name}", sum(m.size for m in members)) as progress:
            for m in members:  # archive order: one forward pass over the disk
                _build_class_folder(job, "train", m.name[:-4], lambda folder, m=m: _extract_class_tar(outer, m, folder))
                progress.update(m.size)


def _val_from_archive(job: Job, tar_path: Path, val_wnids: list[str]) -> None:
    labels = {VAL_IMAGE.format(number): wnid for number, wnid in enumerate(val_wnids, start=1)}
    with _reading(tar_path), tarfile.open(tar_path, "r:") as tar:
        members = [m for m in tar.getmembers() if not m.isdir()]
        _check_val_names([m.name for m in members], labels, tar_path.name, "the devkit's ground truth")
        with Progress(f"val: sorting {tar_path.name} into classes", sum(m.size for m in members)) as progress:
            for m in members:
                dest = _val_destination(job, labels[m.name], m.name)
                if dest is not None and not dest.exists():
                    with tar.extractfile(m) as src:
                        _write_file(src, dest, job.incoming)
                progress.update(m.size)
    _commit_val(job, set(labels.values()))


def _prepare_official(job: Job, cache: ChecksumCache) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    paths = _find_archives(job)
    records = _checksums(job, paths, cache)
    devkit_name = tv_imagenet.ARCHIVE_META["devkit"][0]
    devkit_md5 = records[devkit_name]["md5"]
    # Read before the state is written: a damaged devkit must not leave a state that refuses the good one's rerun.
    wnid_to_classes, val_wnids = _parse_devkit(job, paths["devkit"], devkit_md5)
    _check_unfinished(job, {"source": job.source, "input": str(job.input_dir.resolve()), "devkit_md5": devkit_md5})
    splits: dict[str, dict[str, Any]] = {}
    if "train" in job.splits:
        _train_from_archive(job, paths["train"], set(wnid_to_classes))
        splits["train"] = {
            "built_from": [paths["train"].name, devkit_name],
            "labels": "the name of each per-class tar (n01440764.tar -> n01440764)",
        }
    if "val" in job.splits:
        _val_from_archive(job, paths["val"], val_wnids)
        splits["val"] = {
            "built_from": [paths["val"].name, devkit_name],
            "labels": f"ILSVRC2012_validation_ground_truth.txt in {devkit_name}: line N labels "
            "ILSVRC2012_val_N.JPEG with an ILSVRC2012_ID, which data/meta.mat maps to a wnid (torchvision's parser)",
        }
    return records, splits


# --- Kaggle's copy ----------------------------------------------------------------------------------------------------


def _read_synsets(path: Path) -> list[str]:
    wnids = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        wnid = line.split()[0]
        if not WNID.fullmatch(wnid):
            raise DataError(f"{path}:{line_no}: {wnid!r} is not a wnid (lines look like 'n01440764 tench, ...')")
        wnids.append(wnid)
    if len(set(wnids)) != len(wnids):
        raise DataError(
            f"{path} names some classes twice: {_examples([w for w, c in Counter(wnids).items() if c > 1])}"
        )
    return wnids


def _read_val_solution(path: Path, classes: set[str]) -> dict[str, str]:
    """{image file name: wnid}; the first token of PredictionString is the class (the rest are its boxes)."""
    labels: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise DataError(f"{path} should start with the header ImageId,PredictionString, not {header}")
        for line_no, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) < 2 or not row[1].split():
                raise DataError(f"{path}:{line_no}: no PredictionString (its first token is the image's wnid)")
            name, wnid = f"{row[0].strip()}.JPEG", row[1].split()[0]
            if wnid not in classes:
                raise DataError(f"{path}:{line_no}: {row[0]} is labelled {wnid!r}, not a class of {KAGGLE_SYNSETS}")
            if name in labels:
                raise DataError(f"{path}:{line_no}: {row[0]} is listed twice")
            labels[name] = wnid
    return labels


def _place(src: Path, dest: Path, link: str, incoming: Path) -> None:
    """Put one Kaggle image into its class folder as a hard link, a copy or a symlink."""
    try:
        if link == "hardlink":
            os.link(src, dest)
        elif link == "symlink":
            os.symlink(src.resolve(), dest)
        else:
            with open(src, "rb") as f:
                _write_file(f, dest, incoming)
    except OSError as err:
        if link == "hardlink" and err.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise DataError(
                f"cannot hard-link {src} into {dest.parent} ({os.strerror(err.errno)}): --out must be on the same "
                "file system as --kaggle for --link hardlink; use --link copy (a full copy, about 150 GB) or --link "
                "symlink (then the Kaggle folder must stay where it is)"
            ) from err
        raise


def _list_images(folder: Path, what: str) -> list[Path]:
    images = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir() or not entry.name.lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"{what} {folder} holds {entry.name!r}: expected only image files")
        images.append(Path(entry.path))
    return images


def _train_from_kaggle(job: Job, train_dir: Path, classes: set[str]) -> None:
    assert job.link is not None
    found = {e.name for e in os.scandir(train_dir) if e.is_dir()}
    _check_same_classes(found, classes, str(train_dir), KAGGLE_SYNSETS)

    def fill(wnid: str, folder: Path) -> int:
        images = _list_images(train_dir / wnid, "the Kaggle train class folder")
        for src in images:
            _place(src, folder / src.name, job.link, job.incoming)
        return len(images)

    with Progress(f"train: {job.link} from {train_dir}", len(found), unit="classes") as progress:
        for wnid in sorted(found):
            _build_class_folder(job, "train", wnid, lambda folder, wnid=wnid: fill(wnid, folder))
            progress.update(1)


def _val_from_kaggle(job: Job, val_dir: Path, labels: dict[str, str]) -> None:
    assert job.link is not None
    images = _list_images(val_dir, "the Kaggle val folder (flat: the labels are in LOC_val_solution.csv)")
    _check_val_names([p.name for p in images], labels, str(val_dir), KAGGLE_VAL_LABELS)
    with Progress(f"val: sorting {val_dir} into classes", len(images), unit="images") as progress:
        for src in images:
            dest = _val_destination(job, labels[src.name], src.name)
            if dest is not None and not os.path.lexists(dest):
                _place(src, dest, job.link, job.incoming)
            progress.update(1)
    _commit_val(job, set(labels.values()))


def _prepare_kaggle(job: Job, cache: ChecksumCache) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    root, images = job.input_dir, job.input_dir / KAGGLE_IMAGES
    if not root.is_dir():
        raise DataError(f"--kaggle {root} is not a folder")
    needed = [root / KAGGLE_SYNSETS, *(images / s for s in job.splits)]
    if "val" in job.splits:
        needed.append(root / KAGGLE_VAL_LABELS)
    missing = [p for p in needed if not p.exists()]
    if missing:
        hint = ""
        if (root / "train").is_dir() or (root / "val").is_dir():
            hint = f" ({root} looks like the CLS-LOC folder itself: give the folder that holds ILSVRC/ and the CSVs)"
        raise DataError(
            f"--kaggle {root} is not the Kaggle ImageNet download{hint}: it lacks "
            f"{', '.join(str(p.relative_to(root)) for p in missing)}; expected {KAGGLE_IMAGES}/train/<wnid>/*.JPEG, "
            f"{KAGGLE_IMAGES}/val/*.JPEG, {KAGGLE_VAL_LABELS} and {KAGGLE_SYNSETS} ({KAGGLE_PAGE})"
        )
    label_files = [root / KAGGLE_SYNSETS] + ([root / KAGGLE_VAL_LABELS] if "val" in job.splits else [])
    records = {}
    for path in label_files:  # small; no checksums are published for Kaggle's copy, so recorded, not verified
        md5 = cache.get(path) or file_md5(path)
        cache.put(path, md5)
        records[path.name] = file_record(path, md5, None, verified=False)
    _check_unfinished(
        job,
        {
            "source": job.source,
            "input": str(root.resolve()),
            "link": job.link,
            "labels_md5": records.get(KAGGLE_VAL_LABELS, {}).get("md5"),
        },
    )
    classes = set(_read_synsets(root / KAGGLE_SYNSETS))
    splits: dict[str, dict[str, Any]] = {}
    if "train" in job.splits:
        _train_from_kaggle(job, images / "train", classes)
        splits["train"] = {
            "built_from": [KAGGLE_SYNSETS],
            "images_from": str((images / "train").resolve()),
            "labels": "the name of each class folder",
            "link": job.link,
        }
    if "val" in job.splits:
        _val_from_kaggle(job, images / "val", _read_val_solution(root / KAGGLE_VAL_LABELS, classes))
        splits["val"] = {
            "built_from": [KAGGLE_VAL_LABELS, KAGGLE_SYNSETS],
            "images_from": str((images / "val").resolve()),
            "labels": f"{KAGGLE_VAL_LABELS}: the first wnid of each image's PredictionString",
            "link": job.link,
        }
    return records, splits


# --- the whole job ----------------------------------------------------------------------------------------------------


def _splits_to_build(job: Job, manifest: dict[str, Any] | None) -> tuple[str, ...]:
    """The asked splits that the manifest does not cover yet (or whose folder was deleted since: built again).
    A split folder that changed since it was built is refused: building over it could keep stale files."""
    todo = []
    for split in job.splits:
        entry = (manifest or {}).get("splits", {}).get(split)
        if not isinstance(entry, dict) or not (job.out / split).is_dir():
            todo.append(split)
        elif scan_split(job.out / split, show_progress=False).fingerprint_hash() != entry.get("hash"):
            raise DataError(
                f"{job.out / split} has changed since it was prepared (its files differ from {MANIFEST_NAME}); "
                f"delete {job.out / split} and rerun to build it again"
            )
    return tuple(todo)


def _summarise(
    job: Job, manifest: dict[str, Any] | None, records: dict[str, Any], splits: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Count what was built (as ImageNetDataModule will index it) and merge it into the manifest."""
    indices = {
        split: scan_split(job.out / split, show_progress=False) for split in SPLITS if (job.out / split).is_dir()
    }
    if len(indices) == 2 and indices["train"].classes != indices["val"].classes:
        raise DataError(f"{job.out}/train and {job.out}/val have different class folders; both splits need the same")
    for split, entry in splits.items():
        index = indices[split]
        entry.update(images=len(index.labels), classes=len(index.classes), hash=index.fingerprint_hash())
        if (len(index.classes), len(index.labels)) != (FULL_IMAGENET["classes"], FULL_IMAGENET[split]):
            print(
                f"note: {split} has {len(index.labels):,} images in {len(index.classes)} classes; the full "
                f"ImageNet-1k has {FULL_IMAGENET[split]:,} in {FULL_IMAGENET['classes']}",
                flush=True,
            )
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    earlier = manifest or {}
    files = {**(earlier.get("files") or {}), **records}
    return {
        "format": MANIFEST_FORMAT,
        "tool": "eca data imagenet",
        "source": job.source,
        "created": earlier.get("created", now),
        "updated": now,
        "ecaplatform_version": ecaplatform.__version__,
        "verified": all(r.get("verified") is True for r in files.values()),
        "files": files,
        "splits": {**(earlier.get("splits") or {}), **splits},
    }


def prepare_imagenet(job: Job) -> dict[str, Any]:
    """Build (or finish building) job.out; returns the manifest. Raises DataError with what to do."""
    job.out = job.out.expanduser()
    job.input_dir = job.input_dir.expanduser()
    manifest = _check_out(job)
    todo = _splits_to_build(job, manifest)
    if not todo:
        assert manifest is not None
        print(
            f"{job.out} already holds {' and '.join(job.splits)} as prepared on {manifest.get('created')} "
            f"(see {MANIFEST_NAME}); nothing to do",
            flush=True,
        )
        return manifest
    job.splits = todo  # a split built earlier needs neither its input again nor any work
    job.incoming.mkdir(parents=True, exist_ok=True)
    with _exclusive(job):
        cache = ChecksumCache(job.work / "checksums.json", manifest)
        prepare = _prepare_official if job.source == "official-archives" else _prepare_kaggle
        records, splits = prepare(job, cache)
        manifest = _summarise(job, manifest, records, splits)
        write_manifest(job.out, manifest)
        shutil.rmtree(job.work)  # the lock file goes with it; our open handle keeps the lock until the end
    return manifest
