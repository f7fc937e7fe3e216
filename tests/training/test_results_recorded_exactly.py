"""What `eca validate` records, through the real recorder: exact counts (a partial evaluation too, which `eca compare`
names as such) and an image folder's class names, by which `eca compare` lists classes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import undefer

from ecaplatform.cli.main import main as eca
from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.schema import Result
from ecaplatform.training.lightning_cli import main
from tests.image_folders import make_imagenet_folder
from tests.training_helpers import DEMO, VERIFY_JOB, released_style_checkpoint

pytestmark = pytest.mark.usefixtures("in_tmp_dir")  # runs/<job>/ folders land in the test's own directory

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--job.wandb_mode", "disabled"]  # fmt: skip


def results() -> list[Result]:
    with session_scope(writer_engine()) as session:
        return list(session.scalars(select(Result).options(undefer(Result.class_names)).order_by(Result.id)))


def test_a_partial_evaluation_keeps_exact_counts_and_compare_says_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = released_style_checkpoint(tmp_path / "eca_resnet18_k3577.pth.tar", "eca_resnet18", num_classes=10)
    demo = ["validate", "--config", str(DEMO), "--model.checkpoint", str(weights), "--data.init_args.image_size", "16",
            *QUIET]  # fmt: skip
    assert main([*demo, "--trainer.default_root_dir", str(tmp_path / "whole")]) == 0
    assert main([*demo, "--trainer.limit_val_batches", "2", "--trainer.default_root_dir", str(tmp_path / "part")]) == 0
    whole, partial = results()
    for result in (whole, partial):
        n = result.samples_evaluated
        for name in ("top1", "top5"):
            count = result.counts[name]
            assert count["evaluated"] == n and isinstance(count["correct"], int)
            assert result.metric_values[name] == 100 * count["correct"] / n == result.metrics[name]
    assert (partial.samples_evaluated, partial.fingerprint["num_samples"]) == (128, 360)

    capsys.readouterr()
    assert eca(["compare", whole.run_id, partial.run_id]) == 1
    err = capsys.readouterr().err
    assert f"result {partial.id} of run {partial.run_id} is a partial evaluation (128 of 360 images)" in err


def test_an_image_folder_result_keeps_its_class_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = ["n02084071-dog", "n02121808-cat", "n02129165-lion"]
    root = make_imagenet_folder(tmp_path / "imagenet", classes=names, train_per_class=1, val_per_class=2, size=24)
    weights = released_style_checkpoint(tmp_path / "eca_resnet18_k3577.pth.tar", "eca_resnet18", num_classes=3)
    args = ["validate", "--config", str(VERIFY_JOB), "--model.checkpoint", str(weights), "--data.root", str(root),
            "--data.init_args.image_size", "16", "--data.init_args.num_workers", "0", "--trainer.accelerator", "cpu",
            "--trainer.devices", "1", *QUIET]  # fmt: skip
    assert main(args) == 0
    [result] = results()
    assert result.class_names == names and result.counts["top1"]["evaluated"] == 6
