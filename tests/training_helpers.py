"""Helpers of the training tests: a tiny LightningModule and DataModule that log the classifier's contract metrics,
released-style checkpoints, and `eca validate` in a subprocess."""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ecaplatform.models import create_model

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO = REPO_ROOT / "jobs" / "demo_cpu.yaml"
VERIFY_JOB = REPO_ROOT / "jobs" / "verify_eca_resnet18.yaml"
# The demo job at its smallest: 16 px, two batches of each split, no W&B.
QUICK = ["--data.init_args.image_size", "16", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--job.wandb_mode", "disabled"]  # fmt: skip

NUM_CLASSES = 4


class TinyData(pl.LightningDataModule):
    dataset_name = "synthetic"

    def __init__(self, train_size: int = 64, val_size: int = 40, batch_size: int = 16) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.sizes = {"train": train_size, "val": val_size, "test": val_size}
        self.data = {
            split: TensorDataset(torch.randn(n, 8, generator=generator), torch.randint(0, NUM_CLASSES, (n,)))
            for split, n in self.sizes.items()
        }
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.data["test"], batch_size=self.batch_size)

    def fingerprint(self, split: str) -> dict[str, Any]:
        digest = hashlib.sha256(self.data[split].tensors[0].numpy().tobytes()).hexdigest()
        return {"dataset": "synthetic", "split": split, "num_samples": self.sizes[split],
                "num_classes": NUM_CLASSES, "hash": digest}  # fmt: skip


class TinyClassifier(pl.LightningModule):
    def __init__(self, model_name: str = "tiny_linear", fail_at_epoch: int | None = None,
                 interrupt_at_epoch: int | None = None, sigterm_at_epoch: int | None = None) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(8, NUM_CLASSES)
        self._val_counts: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.hparams.fail_at_epoch == self.current_epoch:
            raise RuntimeError(f"boom at epoch {self.current_epoch}")
        if self.hparams.interrupt_at_epoch == self.current_epoch:
            raise KeyboardInterrupt
        if self.hparams.sigterm_at_epoch == self.current_epoch and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # what SLURM sends at preemption / scancel / time limit
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: Any, prefix: str) -> None:
        x, y = batch
        logits = self.net(x)
        top1 = (logits.argmax(1) == y).float().mean() * 100
        top5 = (logits.topk(min(5, NUM_CLASSES), 1).indices == y[:, None]).any(1).float().mean() * 100
        self.log(f"{prefix}_loss", nn.functional.cross_entropy(logits, y), batch_size=len(y))
        self.log(f"{prefix}_top1", top1, batch_size=len(y))
        self.log(f"{prefix}_top5", top5, batch_size=len(y))
        self.log(f"{prefix}_samples", float(len(y)), reduce_fx="sum", batch_size=len(y))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def tiny_config(model_name: str = "tiny_linear", **extra: Any) -> dict[str, Any]:
    """What the CLI would pass to tracking_for_run: a resolved config as a plain dict."""
    model = {"class_path": "TinyClassifier", "init_args": {"model_name": model_name}}
    data = {"class_path": "TinyData"}
    return {"model": model, "data": data, "trainer": {"max_epochs": 2}, "seed_everything": 0, **extra}


def trainer_for(callbacks: list[Any], logger: Any, root: Any, max_epochs: int = 2, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=logger if logger else False,
        default_root_dir=str(root), enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, **kwargs,
    )  # fmt: skip


# --- what Lightning logged per epoch, read back from the CSVLogger's files ------------------------------------------

# What ImageClassifier logs once per epoch (its step-level train_loss_step and the throughput are not per-epoch).
CLASSIFIER_EPOCH_METRICS = ("train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5", "val_samples")


def csv_epoch_metrics(
    files: list[Any], names: tuple[str, ...] = CLASSIFIER_EPOCH_METRICS
) -> dict[tuple[int, str], float]:
    """{(epoch, name): value} from the CSVLogger's metrics.csv files of one run (a resume adds a version_N); a
    value logged twice for one epoch fails, so the caller sees doubled epochs."""
    import csv

    logged: dict[tuple[int, str], float] = {}
    for path in files:
        with open(path) as handle:
            for row in csv.DictReader(handle):
                for name in names:
                    if row.get(name):
                        key = (int(row["epoch"]), name)
                        assert key not in logged, f"{key} logged twice in {files}"
                        logged[key] = float(row[name])
    return logged


def store_epoch_metrics(run_id: str) -> dict[tuple[int, str], float]:
    from sqlalchemy import select

    from ecaplatform.store.database import session_scope, writer_engine
    from ecaplatform.store.schema import EpochMetric

    with session_scope(writer_engine()) as session:
        rows = session.scalars(select(EpochMetric).where(EpochMetric.run_id == run_id))
        return {(row.epoch, row.name): row.value for row in rows}


def released_style_checkpoint(path: Path, model_name: str, num_classes: int) -> Path:
    """A file shaped like the official releases: {epoch, arch, state_dict (module. prefix), ...}."""
    torch.manual_seed(0)
    state = create_model(model_name, num_classes=num_classes).state_dict()
    torch.save({"epoch": 100, "arch": model_name, "state_dict": {f"module.{k}": v for k, v in state.items()},
                "best_prec1": 0.0, "optimizer": {}}, path)  # fmt: skip
    return path


VAL_PER_CLASS = [2, 1, 2, 1, 2, 1, 2]  # 11 images: 6 on rank 0, 5 on rank 1; a padding sampler would score 12


def validate(
    tmp_path: Path, name: str, root: Path, weights: Path, devices: int, eval_backend: str = "torchvision"
) -> tuple[dict[str, float], str]:
    """`eca validate` in a subprocess (Lightning's ddp launcher re-runs it per rank); its metrics and output."""
    run_dir = tmp_path / name
    args = [sys.executable, "-m", "ecaplatform", "validate", "--config", str(VERIFY_JOB),
            "--model.checkpoint", str(weights),
            "--data.root", str(root), "--data.init_args.image_size", "16", "--data.init_args.num_workers", "0",
            # a global eval batch of 2 = 1 image per rank: the ranks run 6 and 5 batches
            "--data.init_args.batch_size", "2", "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
            "--trainer.strategy", "ddp" if devices > 1 else "auto", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(run_dir), "--job.wandb_mode", "disabled",
            "--data.init_args.eval_backend", eval_backend, "--data.init_args.dali_device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [metrics_file] = run_dir.glob("*/csv/version_0/metrics.csv")  # run_dir holds this one run's folder
    with metrics_file.open() as handle:
        (row,) = [r for r in csv.DictReader(handle) if r.get("val_top1")]
    return {key: float(value) for key, value in row.items() if key.startswith("val_")}, proc.stdout + proc.stderr
