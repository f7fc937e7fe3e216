"""Exact evaluation under DDP: 2 CPU processes (gloo) score an odd number of images exactly like 1 process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ecaplatform.models import create_model
from tests.conftest import REPO_ROOT
from tests.image_folders import make_imagenet_folder

VERIFY_JOB = REPO_ROOT / "jobs" / "verify_eca_resnet18.yaml"
VAL_PER_CLASS = [2, 1, 2, 1, 2, 1, 2]  # 11 images: 6 on rank 0, 5 on rank 1; a padding sampler would score 12


def validate(tmp_path: Path, name: str, root: Path, weights: Path, devices: int) -> tuple[dict[str, float], str]:
    """`eca validate` in a subprocess (Lightning's ddp launcher re-runs it per rank); its metrics and output."""
    run_dir = tmp_path / name
    args = [sys.executable, "-m", "ecaplatform", "validate", "--config", str(VERIFY_JOB),
            "--model.checkpoint", str(weights),
            "--data.root", str(root), "--data.init_args.image_size", "16", "--data.init_args.num_workers", "0",
            # a global eval batch of 2 = 1 image per rank: the ranks run 6 and 5 batches
            "--data.init_args.batch_size", "2", "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
            "--trainer.strategy", "ddp" if devices > 1 else "auto", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(run_dir), "--job.wandb_mode", "disabled"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (run_dir / "csv" / "version_0" / "metrics.csv").open() as handle:
        (row,) = [r for r in csv.DictReader(handle) if r.get("val_top1")]
    return {key: float(value) for key, value in row.items() if key.startswith("val_")}, proc.stdout + proc.stderr


@pytest.mark.slow
def test_two_rank_validation_counts_every_image_once_and_matches_one_rank(tmp_path: Path) -> None:
    root = make_imagenet_folder(tmp_path / "imagenet", classes=len(VAL_PER_CLASS), train_per_class=1,
                                val_per_class=VAL_PER_CLASS, size=24)  # fmt: skip
    torch.manual_seed(3)
    model = create_model("eca_resnet18", num_classes=len(VAL_PER_CLASS))
    weights = tmp_path / "eca_resnet18_k3577.pth.tar"
    torch.save({"epoch": 1, "arch": "eca_resnet18", "best_prec1": 0.0,
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, weights)  # fmt: skip

    single, _ = validate(tmp_path, "single", root, weights, devices=1)
    ddp, output = validate(tmp_path, "ddp", root, weights, devices=2)

    assert "MEMBER: 2/2" in output  # two ranks really ran

    assert single["val_samples"] == ddp["val_samples"] == 11
    assert ddp["val_top1"] == single["val_top1"]
    assert ddp["val_top5"] == single["val_top5"]
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
    assert 0.0 < single["val_top5"] < 100.0  # the weights discriminate: the comparison is not vacuous
