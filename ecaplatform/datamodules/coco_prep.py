"""`eca data coco`: build the layout CocoDataModule reads (OUT/train2017/*.jpg, OUT/val2017/*.jpg,
OUT/annotations/instances_{train,val}2017.json) from the official COCO 2017 zips, and write a manifest that the
data module's fingerprint cites.

Order, so that nothing is written from inputs not yet checked: find the archives, check their md5s, open each zip
and check its contents (the instances files parse; every image they list is in the image zip); only then is the
work folder's state written, naming the inputs it was started with (a rerun with other archives is refused rather
than mixed in). Resuming: md5s are cached by path, size and mtime; images are written under a temporary name and
renamed, so a file that exists is complete and is skipped; a split's folder is renamed into OUT only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ecaplatform
from ecaplatform.datamodules.base import DataError
from ecaplatform.datamodules.coco import MANIFEST_NAME, annotation_file, load_coco, split_hash
from ecaplatform.datamodules.imagenet_manifest import HASH_CHUNK, ChecksumCache, Progress, file_md5, file_record

SPLITS = ("train2017", "val2017")
ANNOTATIONS = "annotations_trainval2017.zip"
DOWNLOADS = {
    "train2017.zip": "http://images.cocodataset.org/zips/train2017.zip",
    "val2017.zip": "http://images.cocodataset.org/zips/val2017.zip",
    ANNOTATIONS: "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
}
# cocodataset.org publishes no checksums. These are the md5s that dataset tools carry for the official zips, e.g.
# PaddleDetection's ppdet/utils/download.py (DATASETS["coco"]) and its data reader test (COCO_VAL_MD5SUM,
# COCO_ANNO_MD5SUM); many download scripts check the same three. Tests replace the table with their own archives'.
PUBLISHED_MD5 = {
    "train2017.zip": "cced6f7f71b7629ddf16f17bbcfab6b2",
    "val2017.zip": "442b8da7639aecaf257c1dceb8ba8c80",
    ANNOTATIONS: "f4bbac642086de4f52a3fdda2de5fa2c",
}
FULL_COCO = {"train2017": 118_287, "val2017": 5_000}
WORK_DIR = ".eca_coco_prep"


@dataclass
class CocoJob:
    """One `eca data coco` invocation; `checksums` defaults to PUBLISHED_MD5 as it is when the job is made."""

    archives: Path
    out: Path
    splits: tuple[str, ...] = SPLITS
    verify: bool = True
    checksums: dict[str, str] = field(default_factory=lambda: dict(PUBLISHED_MD5))

    @property
    def work(self) -> Path:
        return self.out / WORK_DIR


def _read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(manifest["splits"], dict) and isinstance(manifest["files"], dict)
        return manifest
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as err:
        raise DataError(f"{path} is not an `eca data coco` manifest ({err!r}); move it away and rerun") from err


def _check_out(job: CocoJob) -> dict[str, Any] | None:
    """Refuse an output folder that holds anything but an earlier run of this command; return its manifest."""
    if job.out.exists() and not job.out.is_dir():
        raise DataError(f"--out {job.out} is a file; give a new or empty folder")
    job.out.mkdir(parents=True, exist_ok=True)
    entries = set(os.listdir(job.out))
    foreign = sorted(entries - {*SPLITS, "annotations", MANIFEST_NAME, MANIFEST_NAME + ".tmp", WORK_DIR})
    if foreign or (entries & {*SPLITS, "annotations"} and not entries & {MANIFEST_NAME, WORK_DIR}):
        shown = ", ".join(sorted(foreign or entries))
        raise DataError(f"--out {job.out} holds things `eca data coco` did not make ({shown}); give a new or empty "
                        "folder, or the folder of an earlier `eca data coco` to finish it")  # fmt: skip
    return _read_manifest(job.out)


def _find_archives(job: CocoJob, todo: tuple[str, ...]) -> dict[str, Path]:
    if not job.archives.is_dir():
        raise DataError(f"--archives {job.archives} is not a folder")
    names = [ANNOTATIONS, *(f"{split}.zip" for split in todo)]
    missing = [n for n in names if not (job.archives / n).is_file()]
    if missing:
        urls = " and ".join(DOWNLOADS[n] for n in missing)
        raise DataError(f"--archives {job.archives} lacks {', '.join(missing)}; download {urls} into that folder "
                        "under exactly that name")  # fmt: skip
    return {n: job.archives / n for n in names}


def _checksums(job: CocoJob, paths: dict[str, Path], cache: ChecksumCache) -> dict[str, dict[str, Any]]:
    records = {}
    for name, path in paths.items():
        published = job.checksums.get(name)
        md5 = cache.get(path)
        if md5 is None and job.verify:
            md5 = file_md5(path)
            cache.put(path, md5)
        if job.verify and md5 != published:
            raise DataError(f"{path} does not match its published md5 (expected {published}, found {md5}): it is "
                            f"damaged, a partial download or another file; download it again from {DOWNLOADS[name]}, "
                            "or rerun with --no-verify to use it anyway (recorded as unverified)")  # fmt: skip
        records[name] = file_record(path, md5, published, verified=job.verify)
    return records


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[zipfile.ZipFile]:
    """Open a zip; a damaged, truncated or partial one (possible under --no-verify) is one line saying so."""
    try:
        with zipfile.ZipFile(path) as archive:
            yield archive
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as err:
        raise DataError(f"{path} is damaged or incomplete ({err}); download it again from {DOWNLOADS[path.name]} "
                        "and rerun (finished work is kept)") from err  # fmt: skip


def _check_contents(paths: dict[str, Path], todo: tuple[str, ...]) -> dict[str, bytes]:
    """{split: its instances file's bytes}, after checking that every image it lists is in the split's zip."""
    instances = {}
    with _reading(paths[ANNOTATIONS]) as archive:
        for split in todo:
            member = f"annotations/instances_{split}.json"
            try:
                instances[split] = archive.read(member)
                listed = {image["file_name"] for image in json.loads(instances[split])["images"]}
            except KeyError as err:
                raise DataError(f"{paths[ANNOTATIONS]} lacks {member} (or it has no images list): is it COCO 2017's "
                                f"annotations_trainval2017.zip? ({err})") from err  # fmt: skip
            except ValueError as err:
                raise DataError(f"{member} in {paths[ANNOTATIONS]} is not valid JSON ({err}); download the "
                                "archive again") from err  # fmt: skip
            with _reading(paths[f"{split}.zip"]) as images:
                held = {Path(n).name for n in images.namelist() if n.startswith(f"{split}/") and not n.endswith("/")}
            absent = sorted(listed - held)
            if absent:
                raise DataError(f"{split}.zip lacks {len(absent)} of the {len(listed)} images {member} lists (e.g. "
                                f"{absent[0]}): is it complete and from COCO 2017?")  # fmt: skip
    return instances


def _check_state(job: CocoJob, inputs: dict[str, Any]) -> None:
    """Written once the inputs are checked: a rerun with other archives is refused instead of mixed in."""
    path = job.work / "state.json"
    earlier: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        earlier = json.loads(path.read_text(encoding="utf-8"))
    changed = sorted(k for k in inputs if k in earlier and earlier[k] != inputs[k])
    if changed:
        raise DataError(f"{job.out} holds an unfinished preparation from other archives ({', '.join(changed)} "
                        f"differ); rerun with those to finish it, or delete {job.work} to start over")  # fmt: skip
    path.write_text(json.dumps({**earlier, **inputs}, indent=1), encoding="utf-8")


def _extract_images(job: CocoJob, zip_path: Path, split: str) -> None:
    """Fill work/partial/<split> (a file that exists there is complete: written under .part, then renamed) and
    rename it into OUT/<split> when every image is in."""
    partial = job.work / "partial" / split
    partial.mkdir(parents=True, exist_ok=True)
    with _reading(zip_path) as archive:
        members = [m for m in archive.infolist() if m.filename.startswith(f"{split}/") and not m.is_dir()]
        with Progress(f"{split}: unpacking {zip_path.name}", sum(m.file_size for m in members)) as progress:
            for member in members:
                dest = partial / Path(member.filename).name
                if not dest.exists():
                    with archive.open(member) as src, open(dest.with_name(dest.name + ".part"), "wb") as f:
                        shutil.copyfileobj(src, f, HASH_CHUNK)  # zipfile checks each member's CRC as it reads
                    os.replace(dest.with_name(dest.name + ".part"), dest)
                progress.update(member.file_size)
    os.rename(partial, job.out / split)


def _write(path: Path, data: bytes) -> None:
    """Temporary name, then rename: a file that exists is complete."""
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def prepare_coco(job: CocoJob) -> dict[str, Any]:
    """Build (or finish building) job.out; returns the manifest. Raises DataError saying what to do."""
    job.out, job.archives = job.out.expanduser(), job.archives.expanduser()
    manifest = _check_out(job) or {}
    todo = tuple(s for s in job.splits if s not in manifest.get("splits", {}) or not (job.out / s).is_dir())
    if not todo:
        print(f"{job.out} already holds {' and '.join(job.splits)} (see {MANIFEST_NAME}); nothing to do", flush=True)
        return manifest
    paths = _find_archives(job, todo)
    job.work.mkdir(exist_ok=True)
    import fcntl  # POSIX only

    with open(job.work / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise DataError(f"another `eca data coco` is writing {job.out} right now; wait for it") from err
        records = _checksums(job, paths, ChecksumCache(job.work / "checksums.json", manifest or None))
        instances = _check_contents(paths, todo)
        _check_state(job, {name: record["md5"] or f"{record['bytes']}:{record['mtime_ns']}"
                           for name, record in records.items()})  # fmt: skip
        splits = {}
        for split in todo:
            if not (job.out / split).is_dir():
                _extract_images(job, paths[f"{split}.zip"], split)
            _write(annotation_file(job.out, split), instances.pop(split))  # the official bytes, unchanged
            coco = load_coco(annotation_file(job.out, split))
            splits[split] = {"built_from": [f"{split}.zip", ANNOTATIONS], "images": len(coco.imgs),
                             "annotations": len(coco.anns), "categories": len(coco.cats),
                             "hash": split_hash(coco, annotation_file(job.out, split), job.out / split)}  # fmt: skip
            if len(coco.imgs) != FULL_COCO[split]:
                print(f"note: {split} has {len(coco.imgs):,} images; COCO 2017's has {FULL_COCO[split]:,}", flush=True)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        files = {**manifest.get("files", {}), **records}
        manifest = {"format": 1, "tool": "eca data coco", "source": "official-archives",
                    "created": manifest.get("created", now), "updated": now,
                    "ecaplatform_version": ecaplatform.__version__,
                    "verified": all(r.get("verified") is True for r in files.values()), "files": files,
                    "splits": {**manifest.get("splits", {}), **splits}}  # fmt: skip
        _write(job.out / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
        shutil.rmtree(job.work)
    return manifest
