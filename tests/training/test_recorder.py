"""The RunRecorder and tracking_for_run on a tiny model: what a run leaves in the store and in W&B."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from sqlalchemy import select

from ecaplatform.store.database import session_scope, writer_engine
from ecaplatform.store.schema import EpochMetric, Result, Run
from ecaplatform.store.writes import upsert_run
from ecaplatform.training.integration import tracking_for_run, wandb_mode
from ecaplatform.training.jobspec import JobSpec
from ecaplatform.training.provenance import file_sha256
from tests.training_helpers import (
    CLASSIFIER_EPOCH_METRICS,
    DEMO,
    TinyClassifier,
    TinyData,
    csv_epoch_metrics,
    store_epoch_metrics,
    tiny_config,
    trainer_for,
)

# The real ImageClassifier on digits at 16 px, a few batches an epoch, no W&B: seconds per fit.
QUICK_FIT = ["--data.init_args.image_size", "16", "--trainer.limit_train_batches", "2",
             "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false",
             "--trainer.enable_model_summary", "false", "--job.wandb_mode", "disabled"]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_inherited_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run inside `eca submit` or a SLURM job must not continue that job's run.
    monkeypatch.delenv("ECA_RUN_ID", raising=False)


def _runs() -> list[Run]:
    with session_scope(writer_engine()) as session:
        return list(session.scalars(select(Run)))


def _metrics(run_id: str) -> dict[tuple[int, str], float]:
    with session_scope(writer_engine()) as session:
        rows = session.scalars(select(EpochMetric).where(EpochMetric.run_id == run_id))
        return {(row.epoch, row.name): row.value for row in rows}


def _results(run_id: str) -> list[Result]:
    with session_scope(writer_engine()) as session:
        return list(session.scalars(select(Result).where(Result.run_id == run_id)))


@pytest.mark.slow  # starting W&B's offline service takes several seconds
def test_fit_records_run_metrics_result_provenance_and_wandb(tmp_path: Path) -> None:
    job = JobSpec(name="tiny-fit")
    callbacks, loggers = tracking_for_run("fit", tiny_config(), job)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_top1", mode="max")
    trainer = trainer_for([*callbacks, checkpoint], loggers, tmp_path)
    trainer.fit(TinyClassifier(), datamodule=TinyData())

    [run] = _runs()
    assert run.status == "succeeded" and run.error is None
    assert run.command == "fit" and run.job_name == "tiny-fit" and run.model_name == "tiny_linear"
    assert run.dataset_name == "synthetic" and run.started_at and run.ended_at
    # provenance
    assert run.git_commit and len(run.git_commit) == 40 and run.git_dirty is not None
    assert run.config["model"]["init_args"]["model_name"] == "tiny_linear" and len(run.config_hash) == 64
    assert {"python", "torch", "lightning"} <= set(run.versions)
    assert run.host and run.accelerator == "cpu" and run.world_size == 1 and run.num_nodes == 1
    assert run.wandb_mode == "offline" and run.wandb_id == run.id
    wandb_run_dir = Path(run.wandb_path)  # what `wandb sync` uploads later
    assert wandb_run_dir.is_dir() and wandb_run_dir.name.startswith("offline-run-")
    assert wandb_run_dir.name.endswith(run.id)
    assert list(wandb_run_dir.glob("*.wandb")), "the offline run has no data file"
    assert run.checkpoint_path == str(Path(checkpoint.best_model_path).resolve())
    assert run.checkpoint_sha256 == file_sha256(checkpoint.best_model_path)
    # metrics per epoch, and best_top1 is the best val_top1 seen
    metrics = _metrics(run.id)
    assert {epoch for epoch, _ in metrics} == {0, 1}
    for epoch in (0, 1):
        assert {(epoch, "train_loss"), (epoch, "val_top1"), (epoch, "val_top5"), (epoch, "val_loss")} <= set(metrics)
    assert run.best_top1 == max(metrics[(0, "val_top1")], metrics[(1, "val_top1")])
    # the final validation as a result, with the whole split counted once
    [result] = _results(run.id)
    assert (result.dataset, result.split, result.samples_evaluated) == ("synthetic", "val", 40)
    assert result.top1 == pytest.approx(metrics[(1, "val_top1")])
    assert result.fingerprint["num_samples"] == 40 and len(result.fingerprint["hash"]) == 64


def test_failure_keeps_finished_epochs_and_records_the_error(tmp_path: Path) -> None:
    callbacks, loggers = tracking_for_run("fit", tiny_config(), JobSpec(name="crash", wandb_mode="disabled"))
    assert [type(logger).__name__ for logger in loggers] == ["StoreLogger"]  # no W&B
    trainer = trainer_for(callbacks, loggers, tmp_path, max_epochs=3)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(TinyClassifier(fail_at_epoch=1), datamodule=TinyData())
    [run] = _runs()
    assert run.status == "failed" and "RuntimeError: boom at epoch 1" in run.error and run.ended_at
    metrics = _metrics(run.id)
    assert (0, "val_top1") in metrics and not any(epoch >= 1 for epoch, _ in metrics)
    assert _results(run.id) == []


def test_keyboard_interrupt_marks_the_run_interrupted(tmp_path: Path) -> None:
    callbacks, loggers = tracking_for_run("fit", tiny_config(), JobSpec(name="ctrl-c", wandb_mode="disabled"))
    trainer = trainer_for(callbacks, loggers, tmp_path, max_epochs=3)
    with pytest.raises(SystemExit):  # Lightning turns ^C into a graceful shutdown and exit(1)
        trainer.fit(TinyClassifier(interrupt_at_epoch=1), datamodule=TinyData())
    [run] = _runs()
    assert run.status == "interrupted" and "KeyboardInterrupt" in run.error


def test_sigterm_marks_the_run_interrupted_and_keeps_its_epochs(tmp_path: Path) -> None:
    callbacks, loggers = tracking_for_run("fit", tiny_config(), JobSpec(name="preempted", wandb_mode="disabled"))
    trainer = trainer_for(callbacks, loggers, tmp_path, max_epochs=3)
    with pytest.raises(SystemExit):  # Lightning raises SIGTERMException after the signal
        trainer.fit(TinyClassifier(sigterm_at_epoch=1), datamodule=TinyData())
    [run] = _runs()
    assert run.status == "interrupted" and "SIGTERMException" in run.error
    assert (0, "val_top1") in _metrics(run.id)


def test_resume_from_checkpoint_continues_the_same_record(tmp_path: Path) -> None:
    job = JobSpec(name="resume", wandb_mode="disabled")
    ckpt_dir = tmp_path / "ckpt"
    callbacks, loggers = tracking_for_run("fit", tiny_config(), job)
    first = trainer_for([*callbacks, ModelCheckpoint(dirpath=ckpt_dir, save_last=True)], loggers, tmp_path, 1)
    first.fit(TinyClassifier(), datamodule=TinyData())

    ckpt_path = str(ckpt_dir / "last.ckpt")  # the CLI makes `--ckpt_path last|best` a file first
    callbacks, loggers = tracking_for_run("fit", tiny_config(ckpt_path=ckpt_path), job)
    second = trainer_for([*callbacks, ModelCheckpoint(dirpath=ckpt_dir, save_last=True)], loggers, tmp_path, 2)
    second.fit(TinyClassifier(), datamodule=TinyData(), ckpt_path=ckpt_path)

    [run] = _runs()
    assert run.status == "succeeded"
    assert {epoch for epoch, _ in _metrics(run.id)} == {0, 1}


def test_eca_run_id_continues_a_queued_submission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upsert_run(writer_engine(), "queued-run-1", job_name="q", command="fit", model_name="tiny_linear",
               status="queued", slurm_job_id="4242")  # fmt: skip
    monkeypatch.setenv("ECA_RUN_ID", "queued-run-1")
    callbacks, loggers = tracking_for_run("fit", tiny_config(), JobSpec(name="q", wandb_mode="disabled"))
    trainer_for(callbacks, loggers, tmp_path, max_epochs=1).fit(TinyClassifier(), datamodule=TinyData())
    [run] = _runs()
    assert (run.id, run.status, run.slurm_job_id, run.job_name) == ("queued-run-1", "succeeded", "4242", "q")


@pytest.mark.parametrize("command", ["validate", "test"])
def test_evaluation_records_a_result_for_its_split(tmp_path: Path, command: str) -> None:
    callbacks, loggers = tracking_for_run(command, tiny_config(), JobSpec(f"eval-{command}", wandb_mode="disabled"))
    trainer = trainer_for(callbacks, loggers, tmp_path)
    getattr(trainer, command)(TinyClassifier(), datamodule=TinyData())
    [run] = _runs()
    assert run.command == command and run.status == "succeeded"
    [result] = _results(run.id)
    split = "val" if command == "validate" else "test"
    assert (result.split, result.samples_evaluated, result.fingerprint["split"]) == (split, 40, split)
    assert 0 <= result.top1 <= 100 and result.top5 >= result.top1


class _DaliData(TinyData):
    def pipeline(self, split: str) -> str:
        return "dali-gpu"


class _BrokenPipelineData(TinyData):
    def pipeline(self, split: str) -> str:
        raise RuntimeError("no DALI here")


@pytest.mark.parametrize(("datamodule", "recorded"), [(_DaliData, "dali-gpu"), (TinyData, None),
                                                      (_BrokenPipelineData, None)])  # fmt: skip
def test_a_result_records_the_data_modules_pipeline_or_none(tmp_path: Path, datamodule: type, recorded: str) -> None:
    callbacks, loggers = tracking_for_run("validate", tiny_config(), JobSpec(name="eval", wandb_mode="disabled"))
    trainer_for(callbacks, loggers, tmp_path).validate(TinyClassifier(), datamodule=datamodule())
    [run] = _runs()
    assert run.status == "succeeded"  # a data module that cannot say its pipeline does not fail the evaluation
    [result] = _results(run.id)
    assert result.pipeline == recorded


def test_a_validate_run_of_the_real_data_module_records_the_torchvision_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecaplatform.training.lightning_cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(DEMO), "--trainer.max_epochs", "1", *QUICK_FIT]) == 0
    assert main(["validate", "--config", str(DEMO), "--ckpt_path", "last", *QUICK_FIT]) == 0
    validate = next(run for run in _runs() if run.command == "validate")
    [result] = _results(validate.id)
    assert (result.split, result.pipeline) == ("val", "torchvision")


def test_wandb_mode_is_offline_without_a_key_and_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode(JobSpec()) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(JobSpec()) == "online"
    assert wandb_mode(JobSpec(wandb_mode="disabled")) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(JobSpec(wandb_mode="online")) == "offline"
    assert os.environ["WANDB_MODE"] == "offline"


def test_per_epoch_metrics_are_what_the_real_classifier_logged_fresh_and_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ImageClassifier logs its train_* metrics in its own on_train_epoch_end, after the callbacks' hook: each
    epoch's values in the store must still be that epoch's, as the CSVLogger wrote them, also across a resume."""
    from ecaplatform.training.lightning_cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(DEMO), "--trainer.max_epochs", "2", *QUICK_FIT]) == 0
    assert main(["fit", "--config", str(DEMO), "--trainer.max_epochs", "4", "--ckpt_path", "last", *QUICK_FIT]) == 0

    [run] = _runs()
    logged = csv_epoch_metrics(sorted((tmp_path / "runs").rglob("metrics.csv")))
    assert {epoch for epoch, _ in logged} == {0, 1, 2, 3}  # the resume logged epochs 2 and 3 only
    assert len(logged) == 4 * len(CLASSIFIER_EPOCH_METRICS)
    assert store_epoch_metrics(run.id) == pytest.approx(logged, rel=0, abs=0)


class _EpochMetricsSeen(pl.Callback):
    """Each epoch's metrics as the classifier computed them. ImageClassifier logs its train_* in its own
    on_train_epoch_end, after every callback's: they are in trainer.callback_metrics from then until the next epoch
    starts (and at the end of training, for the last epoch)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, str], float] = {}
        self.epoch: int | None = None

    def _take(self, trainer: pl.Trainer) -> None:
        if self.epoch is not None:
            for name in CLASSIFIER_EPOCH_METRICS:
                self.seen[(self.epoch, name)] = float(trainer.callback_metrics[name])

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take(trainer)
        self.epoch = trainer.current_epoch

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take(trainer)


def test_the_real_classifiers_train_metrics_are_recorded_for_their_own_epoch(tmp_path: Path) -> None:
    """The recorder on the real ImageClassifier (not a stand-in that logs train_loss in training_step): each epoch's
    train_* (and val_*) in the store are that epoch's, not the previous epoch's, and the last epoch's are there."""
    from ecaplatform.datamodules import DigitsDataModule
    from ecaplatform.training.classifier import SGD, ImageClassifier

    config = {"model": {"init_args": {"model_name": "eca_resnet18"}}, "data": {"init_args": {"image_size": 16}}}
    callbacks, loggers = tracking_for_run("fit", config, JobSpec(name="real-classifier", wandb_mode="disabled"))
    seen = _EpochMetricsSeen()
    trainer = trainer_for([*callbacks, seen], loggers, tmp_path, max_epochs=3, limit_train_batches=1,
                          limit_val_batches=1, enable_checkpointing=False)  # fmt: skip
    torch.manual_seed(0)
    model = ImageClassifier(model_name="eca_resnet18", num_classes=10, optimizer=SGD(lr=0.05))
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=8, image_size=16))

    [run] = _runs()
    assert len(seen.seen) == 3 * len(CLASSIFIER_EPOCH_METRICS)
    train_losses = [seen.seen[(epoch, "train_loss")] for epoch in range(3)]
    assert len(set(train_losses)) == 3  # the epochs differ, so a value recorded one epoch late shows
    assert _metrics(run.id) == seen.seen


class _RequeuedThenLoggerLost(pl.Callback):
    """At epoch 1: SLURM accepted the requeue (ecaplatform.training.slurm_requeue tells the callbacks), then, while
    SLURM stops the job, the W&B service dies first and the next log raises (ConnectionResetError)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            for callback in trainer.callbacks:
                if hasattr(callback, "on_slurm_requeued"):
                    callback.on_slurm_requeued(trainer, 10)
            raise ConnectionResetError("Connection lost")


def test_what_fails_after_a_requeue_leaves_the_run_interrupted_for_its_requeued_job(tmp_path: Path) -> None:
    callbacks, loggers = tracking_for_run("fit", tiny_config(), JobSpec(name="requeued", wandb_mode="disabled"))
    trainer = trainer_for([*callbacks, _RequeuedThenLoggerLost()], loggers, tmp_path, max_epochs=3)
    with pytest.raises(ConnectionResetError):
        trainer.fit(TinyClassifier(), datamodule=TinyData())
    [run] = _runs()
    assert run.status == "interrupted" and "requeued by SLURM (signal 10)" in run.error, run.error
