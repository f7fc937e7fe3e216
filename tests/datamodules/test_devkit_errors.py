"""A damaged devkit answers in one line before any state is written, so the rerun with a good one just works."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.datamodules.test_imagenet_prep import Images, assert_layout, expected_images, make_official_archives, run

DAMAGES = {
    "truncated": lambda data: data[: len(data) // 2],  # an interrupted download
    "not gzip at all": lambda data: os.urandom(len(data)),
    "gzip of something else": lambda data: __import__("gzip").compress(b"not a tar archive"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_devkit_is_one_line_and_a_rerun_with_a_good_one_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    images: Images = expected_images()
    archives = make_official_archives(tmp_path / "downloads", images)
    good = archives["devkit"].read_bytes()
    archives["devkit"].write_bytes(DAMAGES[damage](good))
    args = ("--archives", tmp_path / "downloads", "--out", tmp_path / "imagenet", "--no-verify")
    assert run(*args) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{archives['devkit']} could not be read as the ILSVRC2012 devkit" in lines[0], lines
    archives["devkit"].write_bytes(good)  # the download done again
    assert run(*args) == 0, capsys.readouterr().err
    assert_layout(tmp_path / "imagenet", images)
