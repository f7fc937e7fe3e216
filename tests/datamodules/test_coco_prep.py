"""`eca data coco` on generated archives named and laid out as the official ones, with their own checksum table."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from ecaplatform.cli.main import main as eca_main
from ecaplatform.datamodules import coco_prep as prep
from ecaplatform.datamodules.coco import MANIFEST_NAME, CocoDataModule
from ecaplatform.datamodules.coco_shapes import make_coco_shapes, pack_coco_archives


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_coco_shapes(tmp_path_factory.mktemp("shapes"), train=12, val=5, seed=4)


@pytest.fixture
def archives(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The three zips in tmp_path/archives; the published-md5 table replaced by theirs."""
    for name, md5 in pack_coco_archives(source, tmp_path / "archives").items():
        monkeypatch.setitem(prep.PUBLISHED_MD5, name, md5)
    return tmp_path / "archives"


def run(archives: Path, out: Path, *extra: str) -> int:
    return eca_main(["data", "coco", "--archives", str(archives), "--out", str(out), *extra])


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("eca data coco: error: "), err
    return err


def test_builds_the_layout_with_a_manifest_that_the_fingerprint_cites(archives: Path, source: Path,
                                                                      tmp_path: Path, capsys) -> None:  # fmt: skip
    out = tmp_path / "coco"
    assert run(archives, out) == 0
    assert "COCO ready in" in capsys.readouterr().out
    for split in prep.SPLITS:
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(p.name for p in (source / split).iterdir())
        assert (out / "annotations" / f"instances_{split}.json").read_bytes() == (
            source / "annotations" / f"instances_{split}.json").read_bytes()  # fmt: skip
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["verified"] and manifest["splits"]["val2017"]["images"] == 5
    assert sorted(p.name for p in out.iterdir()) == ["annotations", MANIFEST_NAME, "train2017", "val2017"]
    fingerprint = CocoDataModule(str(out)).fingerprint("val")
    assert fingerprint["prepared_from"] == {
        "source": "official-archives", "verified": True, "unchanged": True,
        "files": {n: prep.PUBLISHED_MD5[n] for n in ("val2017.zip", prep.ANNOTATIONS)}}  # fmt: skip
    assert fingerprint["hash"] == CocoDataModule(str(source)).fingerprint("val")["hash"]  # the same data
    assert run(archives, out) == 0 and "nothing to do" in capsys.readouterr().out
    image = next((out / "val2017").iterdir())
    image.write_bytes(b"changed")
    assert CocoDataModule(str(out)).fingerprint("val")["prepared_from"]["unchanged"] is False


def test_val_alone_then_train_added(archives: Path, tmp_path: Path) -> None:
    out = tmp_path / "coco"
    (archives / "train2017.zip").rename(tmp_path / "train2017.zip")  # not needed for val
    assert run(archives, out, "--split", "val") == 0 and not (out / "train2017").exists()
    (tmp_path / "train2017.zip").rename(archives / "train2017.zip")
    assert run(archives, out, "--split", "train") == 0
    assert set(json.loads((out / MANIFEST_NAME).read_text())["splits"]) == {"train2017", "val2017"}


def test_a_missing_archive_is_named_with_where_to_get_it(archives: Path, tmp_path: Path, capsys) -> None:
    (archives / "val2017.zip").unlink()
    assert run(archives, tmp_path / "coco") == 1
    assert "lacks val2017.zip; download http://images.cocodataset.org/zips/val2017.zip into" in error_line(capsys)
    assert not (tmp_path / "coco" / prep.WORK_DIR / "state.json").exists()


def test_a_corrupt_archive_fails_its_checksum_and_writes_no_state(archives: Path, tmp_path: Path, capsys) -> None:
    data = bytearray((archives / "train2017.zip").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (archives / "train2017.zip").write_bytes(bytes(data))
    assert run(archives, tmp_path / "coco") == 1
    line = error_line(capsys)
    assert "train2017.zip does not match its published md5" in line and "download it again" in line
    assert not (tmp_path / "coco" / prep.WORK_DIR / "state.json").exists() and not (tmp_path / "coco/val2017").exists()


def test_a_partial_download_is_one_line_even_unverified(archives: Path, tmp_path: Path, capsys) -> None:
    data = (archives / "val2017.zip").read_bytes()
    (archives / "val2017.zip").write_bytes(data[: len(data) // 2])  # no central directory: cut short
    assert run(archives, tmp_path / "coco") == 1
    assert "val2017.zip does not match its published md5" in error_line(capsys)
    assert run(archives, tmp_path / "coco", "--no-verify") == 1
    line = error_line(capsys)
    assert "val2017.zip is damaged or incomplete" in line and "download it again" in line
    assert not (tmp_path / "coco" / prep.WORK_DIR / "state.json").exists()  # inputs unread: nothing recorded


def test_annotations_naming_images_the_zip_lacks_are_refused(
    archives: Path, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(source, partial)
    next((partial / "val2017").iterdir()).unlink()
    sums = pack_coco_archives(partial, tmp_path / "partial_archives")
    monkeypatch.setitem(prep.PUBLISHED_MD5, "val2017.zip", sums["val2017.zip"])
    shutil.copy(tmp_path / "partial_archives" / "val2017.zip", archives / "val2017.zip")
    assert run(archives, tmp_path / "coco", "--split", "val") == 1
    assert "val2017.zip lacks 1 of the 5 images annotations/instances_val2017.json lists" in error_line(capsys)


def test_an_interrupted_run_resumes_and_other_archives_are_refused(
    archives: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out, originals = tmp_path / "coco", tmp_path / "originals"
    shutil.copytree(archives, originals)
    real = prep._extract_images
    written: list[Path] = []

    def crash_in_val(job: prep.CocoJob, zip_path: Path, split: str) -> None:
        if split != "val2017":
            return real(job, zip_path, split)
        with zipfile.ZipFile(zip_path) as archive:  # two images in, then the power goes
            for name in archive.namelist()[1:3]:
                written.append(job.work / "partial" / split / Path(name).name)
                written[-1].parent.mkdir(parents=True, exist_ok=True)
                written[-1].write_bytes(archive.read(name))
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "_extract_images", crash_in_val)
    assert run(archives, out) == 130 and "run the same command again" in capsys.readouterr().err
    assert (out / "train2017").is_dir() and not (out / "val2017").exists() and not (out / MANIFEST_NAME).exists()
    assert (out / prep.WORK_DIR / "state.json").is_file()  # written: the inputs had been checked
    monkeypatch.setattr(prep, "_extract_images", real)
    kept = {p: p.stat().st_mtime_ns for p in written}
    train_inode = (out / "train2017").stat().st_ino

    other = make_coco_shapes(tmp_path / "other", train=12, val=5, seed=99)  # same names, other contents
    for name, md5 in pack_coco_archives(other, archives).items():
        monkeypatch.setitem(prep.PUBLISHED_MD5, name, md5)
    assert run(archives, out) == 1
    assert "holds an unfinished preparation from other archives" in error_line(capsys)

    for name in prep.PUBLISHED_MD5:
        shutil.copy(originals / name, archives / name)
        monkeypatch.setitem(prep.PUBLISHED_MD5, name, prep.file_md5(originals / name))
    assert run(archives, out) == 0
    assert (out / "train2017").stat().st_ino == train_inode  # done work is kept, not redone
    assert {p.name: m for p, m in kept.items()} == {
        p.name: p.stat().st_mtime_ns for p in (out / "val2017").iterdir() if p.name in {w.name for w in written}}
    assert len(list((out / "val2017").iterdir())) == 5 and not (out / prep.WORK_DIR).exists()
