"""A recipe for GPUs started where there are none (or fewer) ends in one line naming what it asks for and the
overrides that run it here; those overrides do run it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ecaplatform.cli.main import main as eca
from tests.cli.test_faults import QUIET, _in_tmp, assert_one_line_refusal  # noqa: F401  (_in_tmp: autouse)
from tests.conftest import REPO_ROOT
from tests.image_folders import make_imagenet_folder

RECIPE = REPO_ROOT / "jobs" / "eca_resnet50.yaml"  # 4 GPUs, DDP, 16-mixed, DALI decoding on the GPU


@pytest.fixture
def job(tmp_path: Path) -> list[str]:
    root = make_imagenet_folder(tmp_path / "imagenet", classes=2, train_per_class=2, val_per_class=2, size=32)
    return ["fit", "--config", str(RECIPE), "--data.init_args.root", str(root), *QUIET]


def test_a_gpu_recipe_on_a_machine_without_one_names_the_overrides_that_run_it(
    job: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    line = assert_one_line_refusal(capsys, eca(job), "fit", "trainer.accelerator: gpu (4 device(s))",
                                   "data backend dali with dali_device: gpu", "no CUDA GPU")
    overrides = re.search(r"to run it on the CPU add (.*), or `eca submit` it to a GPU node$", line)
    assert overrides and overrides.group(1).split() == [
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
        "--trainer.precision", "32-true", "--data.init_args.backend", "torchvision"]  # fmt: skip


def test_more_devices_than_the_machine_has_names_how_many_there_are(
    job: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert_one_line_refusal(capsys, eca(job), "fit", "trainer.devices is 4 but this machine has 1 GPU(s): pass "
                                                     "--trainer.devices 1")


@pytest.mark.slow  # one training step of ResNet-50 at 32 px and its validation on the CPU
def test_the_overrides_it_names_run_the_recipe_without_a_gpu(
    job: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert eca(job) == 1
    hint = re.search(r"to run it on the CPU add (.*), or `eca submit`", capsys.readouterr().err)
    assert hint
    small = ["--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0", "--data.init_args.image_size",
             "32", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
             "--trainer.limit_val_batches", "1"]  # fmt: skip
    assert eca([*job, *hint.group(1).split(), *small]) == 0, capsys.readouterr().err[-2000:]
