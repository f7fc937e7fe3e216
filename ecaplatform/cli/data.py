"""`eca data imagenet|coco`: the command line of ecaplatform.datamodules.imagenet_prep and coco_prep."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchvision.datasets import imagenet as tv_imagenet

from ecaplatform.datamodules.base import DataError
from ecaplatform.datamodules.imagenet_prep import (
    DOWNLOAD_PAGE,
    KAGGLE_IMAGES,
    KAGGLE_SYNSETS,
    KAGGLE_VAL_LABELS,
    LINK_MODES,
    MANIFEST_NAME,
    SPLITS,
    Job,
    prepare_imagenet,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eca data", description="Prepare data sets in the layout the data modules read."
    )
    commands = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    imagenet = commands.add_parser(
        "imagenet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="ImageNet-1k (ILSVRC2012) from the official archives or Kaggle's copy",
        description=(
            "Build OUT/train/<wnid>/*.JPEG and OUT/val/<wnid>/*.JPEG (what ImageNetDataModule reads, --data.root OUT)\n"
            "from the official ILSVRC2012 archives (checked against their published md5) or from Kaggle's copy, and\n"
            f"write {MANIFEST_NAME} (source, checksums, counts), which every recorded result's dataset\n"
            "fingerprint then cites. Every val image goes to the class its ground truth names; an image without a\n"
            "label, or a label without an image, is refused. Interrupted? Run the same command again: finished\n"
            "class folders are kept, and no class folder appears in OUT before it is complete."
        ),
        epilog=(
            "examples:\n"
            "  eca data imagenet --archives /downloads --out /data/imagenet\n"
            "      /downloads holds ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz\n"
            "  eca data imagenet --archives /downloads --out /data/imagenet --split val   # enough to verify\n"
            "  eca data imagenet --kaggle /downloads/imagenet-object-localization-challenge --out /data/imagenet\n"
            f"      that folder holds {KAGGLE_IMAGES}/, {KAGGLE_VAL_LABELS} and {KAGGLE_SYNSETS}"
        ),
    )
    source = imagenet.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--archives",
        type=Path,
        metavar="DIR",
        help=f"folder with the official archives ({', '.join(name for name, _ in tv_imagenet.ARCHIVE_META.values())}) "
        f"from {DOWNLOAD_PAGE}",
    )
    source.add_argument(
        "--kaggle",
        type=Path,
        metavar="DIR",
        help="the Kaggle ImageNet download (imagenet-object-localization-challenge), unpacked",
    )
    imagenet.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        required=True,
        help="where to build the layout: a new or empty folder, or an earlier run's to resume it",
    )
    imagenet.add_argument(
        "--split",
        choices=("both", "train", "val"),
        default="both",
        help="which splits to build (default: both; val alone is enough to verify checkpoints; "
        "run again with the other to add it)",
    )
    imagenet.add_argument(
        "--no-verify",
        action="store_true",
        help="--archives only: use archives whose md5 differs from the published one, and skip "
        "hashing them; the manifest records them as unverified",
    )
    imagenet.add_argument(
        "--link",
        choices=LINK_MODES,
        default=None,
        help="--kaggle only: how images get into OUT: hardlink (default; no extra disk, same file "
        "system), copy, or symlink (the Kaggle folder must then stay)",
    )
    _add_coco(commands)
    return parser


def _add_coco(commands: argparse._SubParsersAction) -> None:
    coco = commands.add_parser(
        "coco",
        help="COCO 2017 (detection, instance segmentation) from the official zips",
        description="Build OUT/{train2017,val2017}/*.jpg and OUT/annotations/instances_*2017.json (what "
        "CocoDataModule reads, --data.root OUT) from train2017.zip, val2017.zip and annotations_trainval2017.zip, "
        "checked against their published md5s, and write eca_coco_manifest.json, which results' fingerprints "
        "cite. Interrupted? Run the same command again: finished work is kept.",
    )
    coco.add_argument("--archives", type=Path, metavar="DIR", required=True, help="folder with the three zips")
    coco.add_argument("--out", type=Path, metavar="DIR", required=True, help="a new or empty folder, or an "
                      "earlier run's to finish it or add a split")  # fmt: skip
    coco.add_argument("--split", choices=("both", "train", "val"), default="both",
                      help="which splits to build (val alone is enough to evaluate)")  # fmt: skip
    coco.add_argument("--no-verify", action="store_true", help="use zips whose md5 differs from the published "
                      "one, without hashing them; the manifest records them as unverified")  # fmt: skip


def _prepared(dataset: str, prepare: Callable[[Any], dict[str, Any]], job: Any, kept: str) -> dict[str, Any] | int:
    """prepare(job)'s manifest, or the exit code after one line saying what stopped it (`kept`: what a rerun keeps)."""
    try:
        return prepare(job)
    except DataError as err:
        print(f"eca data {dataset}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"eca data {dataset}: interrupted; run the same command again to finish ({kept} kept)", file=sys.stderr)
        return 130
    except OSError as err:  # e.g. the disk filled up: say so in one line; the work done so far is kept
        print(f"eca data {dataset}: error: {err}; fix that and run the same command again to finish", file=sys.stderr)
        return 1


def _verified(manifest: dict[str, Any]) -> str:
    return "checksums verified" if manifest["verified"] else "NOT verified against published checksums"


def _coco_main(args: argparse.Namespace) -> int:
    from ecaplatform.datamodules.coco_prep import SPLITS as COCO_SPLITS
    from ecaplatform.datamodules.coco_prep import CocoJob, prepare_coco

    splits = COCO_SPLITS if args.split == "both" else (f"{args.split}2017",)
    job = CocoJob(archives=args.archives, out=args.out, splits=splits, verify=not args.no_verify)
    manifest = _prepared("coco", prepare_coco, job, "finished work is")
    if isinstance(manifest, int):
        return manifest
    counts = ", ".join(f"{s} {e['images']:,} images" for s, e in manifest["splits"].items())
    print(f"COCO ready in {job.out} ({_verified(manifest)}): {counts}; use --data.root {job.out}")
    return 0


def data_main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.dataset == "coco":
        return _coco_main(args)
    if args.kaggle is not None and args.no_verify:
        parser.error("--no-verify applies to --archives only (Kaggle's copy has no published checksums)")
    if args.archives is not None and args.link is not None:
        parser.error("--link applies to --kaggle only (the archives are unpacked)")
    job = Job(
        source="official-archives" if args.archives is not None else "kaggle",
        input_dir=args.archives if args.archives is not None else args.kaggle,
        out=args.out,
        splits=SPLITS if args.split == "both" else (args.split,),
        verify=not args.no_verify,
        link=None if args.archives is not None else (args.link or "hardlink"),
    )
    manifest = _prepared("imagenet", prepare_imagenet, job, "finished class folders are")
    if isinstance(manifest, int):
        return manifest
    counts = ", ".join(f"{s} {e['images']:,} images / {e['classes']} classes" for s, e in manifest["splits"].items())
    print(f"ImageNet ready in {job.out} ({manifest['source']}, {_verified(manifest)}): {counts}; use --data.root "
          f"{job.out}")
    return 0
