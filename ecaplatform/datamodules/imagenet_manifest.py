"""The manifest that `eca data imagenet` writes into an ImageNet root, and the summary of it that the dataset
fingerprint carries.

The manifest says where the class folders came from (the official ILSVRC2012 archives or Kaggle's copy), each
input file's md5 and whether it matched the published checksum, and each split's counts and index hash at the time
it was built. ImageNetDataModule adds `prepared_from` (see `prepared_from`) to its fingerprint, so a recorded result
can say its val split was built from the verified official archive and has not changed since. Torch-free and cheap:
the data module reads it on every fingerprint. The md5s it records are computed here too: with progress (the
archives are 145 GB) and cached by path, size and mtime, so a rerun does not hash them again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

MANIFEST_NAME = "eca_imagenet_manifest.json"
MANIFEST_FORMAT = 1
SOURCES = ("official-archives", "kaggle")
HASH_CHUNK = 8 << 20
REPORT_EVERY_PERCENT = 5


class ManifestError(ValueError):
    """The manifest exists but cannot be read as one."""


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest in `root`, or None when there is none."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ManifestError(f"cannot read {path}: {err}") from err
    if not isinstance(data, dict) or data.get("source") not in SOURCES or not isinstance(data.get("splits"), dict):
        raise ManifestError(f"{path} is not an `eca data imagenet` manifest (no source and splits)")
    return data


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Write atomically (temporary name, then rename): a crash never leaves half a manifest."""
    path = Path(root) / MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def prepared_from(root: Path, split: str, split_hash: str) -> dict[str, Any] | None:
    """The fingerprint's `prepared_from` entry for `split`, or None when `root` has no manifest.

    {source, verified: every input file of this split matched its published md5, files: {name: md5},
    unchanged: the split's index hash is still the one recorded when it was built}. Never raises: a
    fingerprint must not fail because of a damaged manifest; that is reported in the entry instead.
    """
    try:
        manifest = read_manifest(root)
    except ManifestError as err:
        return {"source": "unknown", "verified": False, "unchanged": False, "problem": str(err)}
    if manifest is None:
        return None
    entry = manifest["splits"].get(split)
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    if not isinstance(entry, dict):  # e.g. val prepared by the command, train added by hand
        return {"source": manifest["source"], "verified": False, "unchanged": False,
                "problem": f"the manifest does not cover the {split} split"}  # fmt: skip
    built_from = entry.get("built_from")
    names = [str(n) for n in built_from] if isinstance(built_from, list) else []
    records = {n: files.get(n) if isinstance(files.get(n), dict) else {} for n in names}
    return {
        "source": manifest["source"],
        "verified": bool(names) and all(r.get("verified") is True for r in records.values()),
        "files": {n: r.get("md5") for n, r in records.items()},
        "unchanged": entry.get("hash") == split_hash,
    }


# --- checksums, hashed with progress and cached -----------------------------------------------------------------------


class Progress:
    """A tqdm bar when stdout is a terminal; otherwise one line every REPORT_EVERY_PERCENT, so that the log of a
    batch job says how far it got without thousands of carriage returns."""

    def __init__(self, desc: str, total: int, unit: str = "B") -> None:
        self.desc, self.total, self.unit, self.done = desc, max(int(total), 0), unit, 0
        self._next_report = 0
        self._bar = None
        if sys.stdout.isatty():
            self._bar = tqdm(
                total=self.total,
                desc=desc,
                unit=unit,
                unit_scale=unit == "B",
                unit_divisor=1024,
                file=sys.stdout,
            )
        else:
            self.advance_to(0)

    def update(self, n: int) -> None:
        self.advance_to(self.done + n)

    def advance_to(self, done: int) -> None:
        done = min(done, self.total)
        if self._bar is not None:
            self._bar.update(done - self.done)
        self.done = done
        if self._bar is None and self.total and 100 * done // self.total >= self._next_report:
            percent = 100 * done // self.total
            print(
                f"{self.desc}: {percent}% ({_amount(done, self.unit)} of {_amount(self.total, self.unit)})", flush=True
            )
            self._next_report = (percent // REPORT_EVERY_PERCENT + 1) * REPORT_EVERY_PERCENT

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _amount(n: int, unit: str) -> str:
    if unit != "B":
        return f"{n:,} {unit}"
    for scale, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {name}"
    return f"{n} B"


def file_md5(path: Path) -> str:
    """md5 of a file, with progress (the official archives are 145 GB together)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f, Progress(f"md5 {path.name}", path.stat().st_size) as progress:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            progress.update(len(chunk))
    return digest.hexdigest()


class ChecksumCache:
    """md5s computed earlier, by absolute path, size and mtime: a rerun (after a crash, a refused checksum, or to add
    a split) does not hash 140 GB again. Kept in the work folder and, once done, in the manifest's file records."""

    def __init__(self, path: Path, manifest: dict[str, Any] | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        for record in ((manifest or {}).get("files") or {}).values():
            if isinstance(record, dict) and record.get("md5") and record.get("path"):
                self.entries[record["path"]] = record
        with contextlib.suppress(OSError, ValueError):  # no cache yet, or a damaged one: hash again
            self.entries.update(json.loads(path.read_text(encoding="utf-8")))

    def get(self, file: Path) -> str | None:
        stat, entry = file.stat(), self.entries.get(str(file.resolve()))
        if entry and entry.get("bytes") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            return entry.get("md5")
        return None

    def put(self, file: Path, md5: str) -> None:
        stat = file.stat()
        self.entries[str(file.resolve())] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "md5": md5}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)


def file_record(path: Path, md5: str | None, published: str | None, verified: bool) -> dict[str, Any]:
    stat = path.stat()
    return {
        "path": str(path.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "md5": md5,
        "published_md5": published,
        "verified": verified,
    }
