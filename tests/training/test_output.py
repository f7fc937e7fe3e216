"""What `eca fit` prints into a log file: no third-party noise, one line per epoch, paths that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ecaplatform.training.progress import LogLinesProgressBar
from ecaplatform.training.quiet import srun_hint_helps
from tests.conftest import REPO_ROOT

DEMO = REPO_ROOT / "jobs" / "demo_cpu.yaml"
NOISE = ("LeafSpec", "💡", "litlogger", "anonymous setting", "`srun` command is available", "\r", "wandb:")


@pytest.fixture
def fit_output(tmp_path: Path) -> str:
    """`eca fit` of a short demo run with W&B offline, stdout a pipe, and an `srun` on the PATH (as on a machine with
    SLURM installed, where Lightning hints at srun on every local run)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env.pop("WANDB_SILENT", None)  # the tests' own setting (conftest): here W&B speaks as it would to a user
    args = [sys.executable, "-m", "ecaplatform", "fit", "--config", str(DEMO), "--trainer.max_epochs", "2",
            "--data.init_args.image_size", "16", "--trainer.limit_train_batches", "3",
            "--trainer.limit_val_batches", "2", "--job.wandb_mode", "offline"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    return output


def test_a_piped_fit_prints_no_third_party_noise(fit_output: str) -> None:
    found = [noise for noise in NOISE if noise in fit_output]
    assert not found, f"noise in the output: {found}\n{fit_output}"
    assert max(len(line) for line in fit_output.splitlines()) < 400  # no bar redrawn into one endless line


def test_a_piped_fit_prints_one_line_per_epoch_with_its_metrics(fit_output: str) -> None:
    epochs = [line for line in fit_output.splitlines() if re.match(r"epoch \d+/1 done in \d+:\d\d", line)]
    assert [line.split()[1] for line in epochs] == ["0/1", "1/1"], fit_output
    assert all("val_top1" in line for line in epochs)


def test_the_paths_a_fit_prints_exist(fit_output: str) -> None:
    shown = dict(re.findall(r"^  (run folder|checkpoints|best|last|W&B run):\s+(\S+)", fit_output, re.MULTILINE))
    assert {"run folder", "checkpoints", "best", "W&B run"} <= shown.keys(), fit_output
    for what, path in shown.items():
        assert Path(path).exists(), f"{what}: {path} does not exist"
    assert Path(shown["W&B run"]).name.startswith("offline-run-")  # the run's own folder, not the working directory


def test_the_srun_hint_is_kept_only_inside_an_allocation_not_started_by_srun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert not srun_hint_helps()  # a laptop or a login node
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert srun_hint_helps()  # salloc/sbatch, python started without srun: the hint is advice
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert not srun_hint_helps()  # started by srun
    monkeypatch.delenv("SLURM_STEP_ID")
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # Lightning's own opt-out of SLURM detection
    assert not srun_hint_helps()


def test_a_long_epoch_reports_progress_lines_between_its_epoch_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ecaplatform.training.lightning_cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(LogLinesProgressBar.__init__, "__defaults__", (0.0, None))  # a line after every batch
    args = ["fit", "--config", str(DEMO), "--trainer.max_epochs", "1", "--data.init_args.image_size", "16",
            "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2", "--job.wandb_mode", "disabled",
            "--trainer.enable_model_summary", "false"]  # fmt: skip
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    batches = [line for line in lines if line.startswith("epoch 0/0: batch")]
    assert [line.split()[3] for line in batches] == ["1/3", "2/3", "3/3"], lines
    assert "it/s" in batches[0] and "left" in batches[0]
    assert any(line.startswith("validation: batch 2/2") for line in lines), lines
