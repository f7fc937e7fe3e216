"""`eca data imagenet`: small archives in the exact official formats (a train tar of per-class tars, a flat val tar,
a devkit .tar.gz whose meta.mat scipy writes in the structure torchvision parses) and a small Kaggle-format folder.

The ILSVRC2012_IDs are deliberately not in wnid order (ID 1 is the largest wnid), so a val image labelled by its
ground-truth ID's position instead of through meta.mat lands in the wrong class and the tests see it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from torchvision.datasets import imagenet as tv_imagenet

from ecaplatform.cli.main import main as eca_main
from ecaplatform.datamodules import ImageNetDataModule
from ecaplatform.datamodules import imagenet_prep as prep
from ecaplatform.datamodules.imagenet_manifest import MANIFEST_NAME, Progress

# ILSVRC2012_ID -> wnid of the leaf synsets; ID 4 is an inner synset (num_children > 0) that torchvision drops.
LEAVES = {1: "n03000003", 2: "n01000001", 3: "n02000002"}
WNIDS = sorted(LEAVES.values())
# The ground truth: line N is the ILSVRC2012_ID of ILSVRC2012_val_0000000N.JPEG.
VAL_IDS = [2, 1, 3, 3, 1, 2, 2]
TRAIN_PER_CLASS = 3
CLS_LOC = Path("ILSVRC/Data/CLS-LOC")


def jpeg(seed: int) -> bytes:
    """A real, distinct JPEG: its pixels come from the seed, so every file's bytes are unique."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@dataclass
class Images:
    """What the output must hold: split -> wnid -> {file name: bytes}."""

    train: dict[str, dict[str, bytes]] = field(default_factory=dict)
    val: dict[str, dict[str, bytes]] = field(default_factory=dict)


def expected_images() -> Images:
    images = Images()
    for c, wnid in enumerate(WNIDS):
        images.train[wnid] = {f"{wnid}_{i}.JPEG": jpeg(100 * c + i) for i in range(TRAIN_PER_CLASS)}
    for number, ilsvrc_id in enumerate(VAL_IDS, start=1):
        images.val.setdefault(LEAVES[ilsvrc_id], {})[f"ILSVRC2012_val_{number:08d}.JPEG"] = jpeg(10_000 + number)
    return images


def make_official_archives(folder: Path, images: Images, skip_val: tuple[str, ...] = ()) -> dict[str, Path]:
    """ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz as the official ones are."""
    folder.mkdir(parents=True, exist_ok=True)
    train = folder / "ILSVRC2012_img_train.tar"
    with tarfile.open(train, "w") as outer:
        for wnid in [WNIDS[2], WNIDS[0], WNIDS[1]]:  # not sorted, like the real archive's order need not be
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for name, data in images.train[wnid].items():
                    add_bytes(tar, name, data)
            add_bytes(outer, f"{wnid}.tar", inner.getvalue())
    val = folder / "ILSVRC2012_img_val.tar"
    flat = {name: data for per_class in images.val.values() for name, data in per_class.items()}
    with tarfile.open(val, "w") as tar:
        for name in sorted(flat):
            if name not in skip_val:
                add_bytes(tar, name, flat[name])
    # meta.mat: the `synsets` struct array torchvision's parse_meta_mat reads (field 4 is num_children).
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]  # fmt: skip
    synsets = np.empty((len(LEAVES) + 1, 1), dtype=[(f, "O") for f in fields])
    for row, (ilsvrc_id, wnid) in enumerate(sorted(LEAVES.items())):
        synsets[row, 0] = (ilsvrc_id, wnid, f"class {wnid}, thing", "gloss", 0, np.zeros(0), 0, TRAIN_PER_CLASS)
    synsets[len(LEAVES), 0] = (4, "n09999999", "animal", "gloss", 3, np.array([1, 2, 3]), 1, 0)
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"synsets": synsets})
    devkit = folder / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(devkit, "w:gz") as tar:
        add_bytes(tar, "ILSVRC2012_devkit_t12/data/meta.mat", mat.getvalue())
        truth = "".join(f"{i}\n" for i in VAL_IDS).encode()
        add_bytes(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)
    return {"train": train, "val": val, "devkit": devkit}


def publish(monkeypatch: pytest.MonkeyPatch, archives: dict[str, Path], wrong: tuple[str, ...] = ()) -> None:
    """Make torchvision's published-checksum table name the small archives' md5s (or a wrong one for `wrong`)."""
    for key, path in archives.items():
        monkeypatch.setitem(tv_imagenet.ARCHIVE_META, key, (path.name, "0" * 32 if key in wrong else md5(path)))


def make_kaggle(folder: Path, images: Images, unlabelled: str | None = None) -> Path:
    """The Kaggle download: ILSVRC/Data/CLS-LOC/{train/<wnid>,val}, LOC_val_solution.csv, LOC_synset_mapping.txt."""
    for wnid, files in images.train.items():
        (folder / CLS_LOC / "train" / wnid).mkdir(parents=True)
        for name, data in files.items():
            (folder / CLS_LOC / "train" / wnid / name).write_bytes(data)
    (folder / CLS_LOC / "val").mkdir(parents=True)
    rows = []
    for wnid, files in images.val.items():
        for name, data in files.items():
            (folder / CLS_LOC / "val" / name).write_bytes(data)
            if name != unlabelled:  # several boxes per image: only the first token is the class
                rows.append(f"{name[:-5]},{wnid} 10 20 30 40 {wnid} 1 2 3 4 \n")
    rows.sort(reverse=True)  # not in image order
    (folder / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(rows))
    mapping = "".join(f"{wnid} class {wnid}, thing\n" for wnid in WNIDS)
    (folder / "LOC_synset_mapping.txt").write_text(mapping)
    return folder


def assert_layout(out: Path, images: Images, splits: tuple[str, ...] = ("train", "val")) -> None:
    """Exactly the expected files, byte for byte, in the expected class folders; and the data module agrees."""
    for split in splits:
        expected = getattr(images, split)
        found = {p.name: {f.name: f.read_bytes() for f in p.iterdir()} for p in (out / split).iterdir()}
        assert found == expected, f"{split}: wrong files or classes"
    dm = ImageNetDataModule(str(out), show_progress=False)
    for split in splits:
        index = dm._index(split)  # what setup() indexes (and checks: both splits have the same classes)
        assert dm.num_classes == 3 and dm.classes == WNIDS
        labelled = {
            p.decode().split("/")[1]: dm.classes[int(y)] for p, y in zip(index.paths, index.labels, strict=True)
        }
        assert labelled == {name: wnid for wnid, files in getattr(images, split).items() for name in files}


def run(*args: str | Path) -> int:
    return eca_main(["data", "imagenet", *map(str, args)])


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST_NAME).read_text())


@pytest.fixture
def images() -> Images:
    return expected_images()


@pytest.fixture
def archives(tmp_path: Path, images: Images, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    made = make_official_archives(tmp_path / "downloads", images)
    publish(monkeypatch, made)
    return made


# --- the official archives --------------------------------------------------------------------------------------------


def test_official_archives_give_the_layout_the_data_module_reads(
    archives: dict[str, Path], images: Images, tmp_path: Path
) -> None:
    out = tmp_path / "imagenet"
    assert run("--archives", tmp_path / "downloads", "--out", out) == 0
    assert_layout(out, images)  # every val image in its ground-truth class (ID -> wnid through meta.mat)
    assert sorted(os.listdir(out)) == sorted([MANIFEST_NAME, "train", "val"])  # no work folder left behind
    m = manifest(out)
    assert m["source"] == "official-archives" and m["verified"] is True
    assert m["ecaplatform_version"] and m["created"]
    for path in archives.values():
        assert m["files"][path.name] == {**m["files"][path.name], "md5": md5(path), "verified": True}
    assert m["splits"]["train"]["images"] == 9 and m["splits"]["train"]["classes"] == 3
    assert m["splits"]["val"]["images"] == len(VAL_IDS) and m["splits"]["val"]["classes"] == 3
    assert m["splits"]["val"]["built_from"] == ["ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"]


def test_fingerprint_carries_the_manifest_source_and_is_unchanged_without_it(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "imagenet"
    assert run("--archives", tmp_path / "downloads", "--out", out) == 0
    fp = ImageNetDataModule(str(out), show_progress=False).fingerprint("val")
    assert fp["prepared_from"] == {
        "source": "official-archives",
        "verified": True,
        "files": {"ILSVRC2012_img_val.tar": md5(archives["val"]),
                  "ILSVRC2012_devkit_t12.tar.gz": md5(archives["devkit"])},
        "unchanged": True,
    }  # fmt: skip
    # Without the manifest, the fingerprint is exactly the plain one (the same hash).
    kept = (out / MANIFEST_NAME).read_bytes()
    (out / MANIFEST_NAME).unlink()
    plain = ImageNetDataModule(str(out), show_progress=False).fingerprint("val")
    assert plain == {k: v for k, v in fp.items() if k != "prepared_from"}
    # A val file changed after preparation: the fingerprint says the split no longer matches what was built.
    (out / MANIFEST_NAME).write_bytes(kept)
    victim = next((out / "val" / WNIDS[0]).iterdir())
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert ImageNetDataModule(str(out), show_progress=False).fingerprint("val")["prepared_from"]["unchanged"] is False
    # A damaged manifest does not break the fingerprint (a finished evaluation must be recordable); it says so.
    (out / MANIFEST_NAME).write_text("{not json")
    damaged = ImageNetDataModule(str(out), show_progress=False).fingerprint("val")["prepared_from"]
    assert damaged["verified"] is False and "cannot read" in damaged["problem"]


def test_a_wrong_checksum_is_refused_naming_file_expected_and_found(
    tmp_path: Path, images: Images, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    archives = make_official_archives(tmp_path / "downloads", images)
    publish(monkeypatch, archives, wrong=("val",))
    out = tmp_path / "imagenet"
    assert run("--archives", tmp_path / "downloads", "--out", out) == 1
    err = capsys.readouterr().err
    assert str(archives["val"]) in err and "0" * 32 in err and md5(archives["val"]) in err
    assert "download it again" in err and "--no-verify" in err
    assert not (out / "train").exists() and not (out / "val").exists() and not (out / MANIFEST_NAME).exists()


def test_no_verify_proceeds_and_the_manifest_says_unverified(
    tmp_path: Path, images: Images, monkeypatch: pytest.MonkeyPatch
) -> None:
    archives = make_official_archives(tmp_path / "downloads", images)
    publish(monkeypatch, archives, wrong=("train", "val", "devkit"))
    out = tmp_path / "imagenet"
    assert run("--archives", tmp_path / "downloads", "--out", out, "--no-verify") == 0
    assert_layout(out, images)  # the devkit was parsed by torchvision although its md5 is not the published one
    assert tv_imagenet.ARCHIVE_META["devkit"][1] == "0" * 32  # and torchvision's table is as it was
    m = manifest(out)
    assert m["verified"] is False and all(f["verified"] is False for f in m["files"].values())
    assert m["files"]["ILSVRC2012_devkit_t12.tar.gz"]["published_md5"] == "0" * 32
    fp = ImageNetDataModule(str(out), show_progress=False).fingerprint("val")["prepared_from"]
    assert fp["source"] == "official-archives" and fp["verified"] is False


def test_missing_archive_is_named_with_its_file_name(
    archives: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    archives["val"].unlink()
    assert run("--archives", tmp_path / "downloads", "--out", tmp_path / "imagenet") == 1
    err = capsys.readouterr().err
    assert "lacks ILSVRC2012_img_val.tar" in err and "image-net.org" in err
    # Only the val split asked for: the train archive is not needed, the devkit is.
    archives["devkit"].unlink()
    assert run("--archives", tmp_path / "downloads", "--out", tmp_path / "imagenet", "--split", "train") == 1
    err = capsys.readouterr().err
    assert "ILSVRC2012_devkit_t12.tar.gz" in err and "ILSVRC2012_img_train.tar" not in err


def test_a_val_archive_missing_an_image_is_refused_not_shifted(
    tmp_path: Path, images: Images, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # torchvision's parse_val_archive would zip the 6 images with the first 6 labels: from image 4 on, all wrong.
    made = make_official_archives(tmp_path / "downloads", images, skip_val=("ILSVRC2012_val_00000004.JPEG",))
    publish(monkeypatch, made)
    out = tmp_path / "imagenet"
    assert run("--archives", tmp_path / "downloads", "--out", out, "--split", "val") == 1
    err = capsys.readouterr().err
    assert "1 labelled but missing [ILSVRC2012_val_00000004.JPEG]" in err
    assert not (out / "val").exists()


def test_a_truncated_archive_is_named_under_no_verify(
    tmp_path: Path, images: Images, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    archives = make_official_archives(tmp_path / "downloads", images)
    data = archives["val"].read_bytes()
    archives["val"].write_bytes(data[: len(data) // 2])  # an interrupted download
    assert run("--archives", tmp_path / "downloads", "--out", tmp_path / "imagenet", "--no-verify") == 1
    assert f"{archives['val']} is damaged or incomplete" in capsys.readouterr().err


def test_a_train_archive_without_per_class_tars_is_refused(
    tmp_path: Path, images: Images, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    archives = make_official_archives(tmp_path / "downloads", images)
    with tarfile.open(archives["train"], "w") as tar:  # JPEGs directly, as if already unpacked once
        add_bytes(tar, "n01000001_0.JPEG", jpeg(0))
    publish(monkeypatch, archives)
    assert run("--archives", tmp_path / "downloads", "--out", tmp_path / "imagenet", "--split", "train") == 1
    assert "should hold one tar per class" in capsys.readouterr().err


# --- resuming ---------------------------------------------------------------------------------------------------------


def test_interrupted_train_resumes_without_redoing_finished_classes(
    archives: dict[str, Path], images: Images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, real = tmp_path / "imagenet", prep._extract_class_tar
    calls: list[str] = []

    def crash_in_second_class(outer: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> int:
        calls.append(member.name)
        if len(calls) == 2:  # half a class written, then ^C
            (dest / "n00000000_half.JPEG").write_bytes(b"\xff\xd8")
            raise KeyboardInterrupt
        return real(outer, member, dest)

    monkeypatch.setattr(prep, "_extract_class_tar", crash_in_second_class)
    assert run("--archives", tmp_path / "downloads", "--out", out, "--split", "train") == 130
    first = calls[0][:-4]
    assert os.listdir(out / "train") == [first]  # only the finished class is in place: nothing half-written
    assert not (out / MANIFEST_NAME).exists()
    inodes = {f.name: f.stat().st_ino for f in (out / "train" / first).iterdir()}

    hashed: list[Path] = []
    monkeypatch.setattr(prep, "file_md5", lambda path: hashed.append(path) or md5(path))
    calls.clear()
    monkeypatch.setattr(prep, "_extract_class_tar", lambda *a: calls.append(a[1].name) or real(*a))
    assert run("--archives", tmp_path / "downloads", "--out", out, "--split", "train") == 0
    assert sorted(calls) == sorted(f"{w}.tar" for w in WNIDS if w != first)  # the finished class was not redone
    assert hashed == []  # nor were the checksums
    assert {f.name: f.stat().st_ino for f in (out / "train" / first).iterdir()} == inodes
    assert_layout(out, images, splits=("train",))
    assert manifest(out)["splits"]["train"]["images"] == 9


def test_interrupted_val_resumes_and_no_val_class_appears_before_all_are_complete(
    archives: dict[str, Path], images: Images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, real = tmp_path / "imagenet", prep._write_file
    written: list[str] = []

    def crash_after_three(src: io.BufferedReader, dest: Path, incoming: Path) -> None:
        if len(written) == 3:
            (incoming / (dest.name + ".part")).write_bytes(b"\xff\xd8")  # a half-written file
            raise KeyboardInterrupt
        written.append(dest.name)
        real(src, dest, incoming)

    monkeypatch.setattr(prep, "_write_file", crash_after_three)
    assert run("--archives", tmp_path / "downloads", "--out", out, "--split", "val") == 130
    assert not (out / "val").exists()  # a val class is complete only once the whole archive is read

    rerun: list[str] = []
    monkeypatch.setattr(prep, "_write_file", lambda src, dest, inc: rerun.append(dest.name) or real(src, dest, inc))
    assert run("--archives", tmp_path / "downloads", "--out", out, "--split", "val") == 0
    assert len(rerun) == len(VAL_IDS) - 3 and not set(rerun) & set(written)
    assert_layout(out, images, splits=("val",))


def test_interrupted_while_moving_val_classes_in_resumes(
    archives: dict[str, Path], images: Images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, real_rename = tmp_path / "imagenet", os.rename
    moved: list[str] = []

    def crash_on_second_move(src: Path, dst: Path) -> None:
        if Path(dst).parent == out / "val" and moved:
            raise KeyboardInterrupt
        moved.append(str(dst))
        real_rename(src, dst)

    monkeypatch.setattr(prep.os, "rename", crash_on_second_move)
    assert run("--archives", tmp_path / "downloads", "--out", out, "--split", "val") == 130
    assert len(os.listdir(out / "val")) == 1
    monkeypatch.setattr(prep.os, "rename", real_rename)
    written: list[str] = []
    real_write = prep._write_file
    monkeypatch.setattr(
        prep, "_write_file", lambda src, dest, inc: written.append(dest.name) or real_write(src, dest, inc)
    )
    assert run("--archives", tmp_path / "downloads", "--out", out, "--split", "val") == 0
    assert written == []  # every val image was already in its class folder: only the moves were left
    assert_layout(out, images, splits=("val",))


def test_adding_a_split_later_and_rerunning_a_finished_job(
    archives: dict[str, Path], images: Images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    out = tmp_path / "imagenet"
    assert run("--archives", tmp_path / "downloads", "--out", out, "--split", "val") == 0
    first = manifest(out)
    assert set(first["splits"]) == {"val"} and "ILSVRC2012_img_train.tar" not in first["files"]
    hashed: list[str] = []
    monkeypatch.setattr(prep, "file_md5", lambda path: hashed.append(path.name) or md5(path))
    archives["val"].unlink()  # the val split is built: its archive is not needed again
    assert run("--archives", tmp_path / "downloads", "--out", out) == 0
    assert hashed == ["ILSVRC2012_img_train.tar"]  # the others' md5s came from the manifest
    both = manifest(out)
    assert set(both["splits"]) == {"train", "val"} and both["created"] == first["created"] and both["verified"]
    assert_layout(out, images)
    capsys.readouterr()
    assert run("--archives", tmp_path / "downloads", "--out", out) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_output_folder_that_holds_something_else_is_refused(
    archives: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "imagenet"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run("--archives", tmp_path / "downloads", "--out", out) == 1
    assert "holds other things (notes.txt)" in capsys.readouterr().err
    (out / "notes.txt").unlink()
    (out / "val" / "n01000001").mkdir(parents=True)  # someone's own ImageNet, not made by this command
    assert run("--archives", tmp_path / "downloads", "--out", out) == 1
    assert "did not make" in capsys.readouterr().err
    assert os.listdir(out / "val") == ["n01000001"]


# --- Kaggle's copy ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["hardlink", "copy", "symlink"])
def test_kaggle_copy_gives_the_same_layout(tmp_path: Path, images: Images, link: str) -> None:
    kaggle, out = make_kaggle(tmp_path / "kaggle", images), tmp_path / "imagenet"
    assert run("--kaggle", kaggle, "--out", out, "--link", link) == 0
    assert_layout(out, images)
    placed = out / "val" / WNIDS[0] / next(iter(images.val[WNIDS[0]]))
    source = kaggle / CLS_LOC / "val" / placed.name
    assert placed.is_symlink() == (link == "symlink")
    assert (placed.stat().st_ino == source.stat().st_ino) == (link != "copy")
    m = manifest(out)
    assert m["source"] == "kaggle" and m["verified"] is False
    assert m["files"]["LOC_val_solution.csv"]["md5"] == md5(kaggle / "LOC_val_solution.csv")
    assert m["files"]["LOC_val_solution.csv"]["published_md5"] is None
    assert m["splits"]["val"]["link"] == link and m["splits"]["val"]["images"] == len(VAL_IDS)
    fp = ImageNetDataModule(str(out), show_progress=False).fingerprint("val")["prepared_from"]
    assert fp["source"] == "kaggle" and fp["verified"] is False and fp["unchanged"] is True


def test_kaggle_interrupted_train_resumes_with_the_same_options_only(
    tmp_path: Path, images: Images, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    kaggle, out, real = make_kaggle(tmp_path / "kaggle", images), tmp_path / "imagenet", prep._place
    placed: list[str] = []

    def crash_in_second_class(src: Path, dest: Path, link: str, incoming: Path) -> None:
        if dest.parent.name == WNIDS[1]:
            raise KeyboardInterrupt
        placed.append(dest.name)
        real(src, dest, link, incoming)

    monkeypatch.setattr(prep, "_place", crash_in_second_class)
    assert run("--kaggle", kaggle, "--out", out, "--split", "train", "--link", "copy") == 130
    assert os.listdir(out / "train") == [WNIDS[0]]
    # Finishing it with other options would mix hard links into a copy: refused, saying which option differs.
    assert run("--kaggle", kaggle, "--out", out, "--split", "train", "--link", "hardlink") == 1
    assert "unfinished preparation made with other inputs (link: copy)" in capsys.readouterr().err
    again: list[str] = []
    monkeypatch.setattr(prep, "_place", lambda *a: again.append(a[1].name) or real(*a))
    assert run("--kaggle", kaggle, "--out", out, "--split", "train", "--link", "copy") == 0
    assert not set(again) & set(placed) and len(again) == 2 * TRAIN_PER_CLASS
    assert_layout(out, images, splits=("train",))


def test_kaggle_wrong_folder_and_unlabelled_images_are_named(
    tmp_path: Path, images: Images, capsys: pytest.CaptureFixture
) -> None:
    kaggle = make_kaggle(tmp_path / "kaggle", images, unlabelled="ILSVRC2012_val_00000005.JPEG")
    assert run("--kaggle", kaggle / CLS_LOC, "--out", tmp_path / "a") == 1
    assert "looks like the CLS-LOC folder itself" in capsys.readouterr().err
    assert run("--kaggle", kaggle, "--out", tmp_path / "b") == 1
    assert "1 without a label [ILSVRC2012_val_00000005.JPEG]" in capsys.readouterr().err
    assert not (tmp_path / "b" / "val").exists()


# --- the command line and its output ----------------------------------------------------------------------------------


def test_eca_data_is_registered_and_refuses_options_of_the_other_source(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as done:
        eca_main(["data", "imagenet", "--help"])
    assert done.value.code == 0 and "--archives DIR | --kaggle DIR" in capsys.readouterr().out
    for args in (["--kaggle", str(tmp_path), "--no-verify"], ["--archives", str(tmp_path), "--link", "copy"]):
        with pytest.raises(SystemExit) as done:
            eca_main(["data", "imagenet", *args, "--out", str(tmp_path / "out")])
        assert done.value.code == 2 and "only" in capsys.readouterr().err


def test_progress_prints_a_line_every_five_percent_when_not_on_a_terminal(capsys: pytest.CaptureFixture) -> None:
    with Progress("md5 x.tar", 1000, unit="items") as progress:
        for _ in range(1000):
            progress.update(1)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 21 and lines[0].startswith("md5 x.tar: 0%") and lines[-1].startswith("md5 x.tar: 100%")
