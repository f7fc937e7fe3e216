"""RunRecorder: the Lightning callback that writes a run, its per-epoch metrics and its results to the store.

Only global rank 0 writes. Each write is its own committed transaction, so a crash keeps every finished epoch.
The run id is decided before the Trainer exists (see provenance.resolve_run_id) and is saved in the checkpoint,
so `fit --ckpt_path last.ckpt` and a SLURM requeue continue the same record.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from sqlalchemy import Engine

from ecaplatform.jobspec import JobSpec
from ecaplatform.tracking import provenance, store, writes

log = logging.getLogger(__name__)

RESULT_SPLITS = {"fit": "val", "validate": "val", "test": "test"}


def _scalar(value: Any) -> float | None:
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


def _find(config: dict[str, Any], section: str, key: str) -> Any:
    """config[section][key], or config[section]["init_args"][key] for a class_path/init_args section."""
    node = config.get(section)
    if not isinstance(node, dict):
        return None
    if key in node:
        return node[key]
    init_args = node.get("init_args")
    return init_args.get(key) if isinstance(init_args, dict) else None


class RunRecorder(pl.Callback):
    def __init__(
        self,
        run_id: str,
        command: str,
        config: dict[str, Any] | None = None,
        job: JobSpec | None = None,
        db_url: str | None = None,
        wandb_logger: Any = None,
    ) -> None:
        if command not in RESULT_SPLITS:
            raise ValueError(f"command {command!r}: the recorder records one of {sorted(RESULT_SPLITS)}")
        self.run_id = run_id
        self.command = command
        self.config = provenance.jsonable(config or {})
        self.job = job or JobSpec()
        self.db_url = db_url or store.db_url()  # fixed now: the whole run writes to one store
        self.wandb_logger = wandb_logger
        self._engine: Engine | None = None
        self._failed = False
        self._started = False

    # --- identity in checkpoints -------------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        return "RunRecorder"

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        stored = state_dict.get("run_id")
        if stored and stored != self.run_id:
            log.info("checkpoint was written by run %s; recording this resume as run %s", stored, self.run_id)

    # --- helpers -----------------------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = store.writer_engine(self.db_url)
        return self._engine

    def _model_name(self, pl_module: pl.LightningModule) -> str:
        hparams = getattr(pl_module, "hparams", {}) or {}
        name = hparams.get("model_name") or _find(self.config, "model", "model_name")
        return str(name) if name else type(pl_module).__name__

    def _fingerprint(self, trainer: pl.Trainer, split: str) -> dict[str, Any]:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "fingerprint"):
            return {}
        try:
            return dict(datamodule.fingerprint(split))
        except Exception as exc:  # a missing fingerprint must not kill a finished evaluation
            log.warning("could not fingerprint the %s split: %s", split, exc)
            return {"error": str(exc)}

    def _scalars(self, trainer: pl.Trainer) -> dict[str, float]:
        values = {name: _scalar(value) for name, value in trainer.callback_metrics.items()}
        return {name: value for name, value in values.items() if value is not None and len(name) <= 64}

    def _wandb_fields(self) -> dict[str, Any]:
        if self.wandb_logger is None:
            return {}
        try:
            experiment = self.wandb_logger.experiment
            mode = "offline" if getattr(experiment, "offline", False) else "online"
            # Offline: the run's own directory (what `wandb sync` takes); online: entity/project/id.
            path = Path(experiment.dir).parent if mode == "offline" else experiment.path
            return {"wandb_id": experiment.id, "wandb_mode": mode, "wandb_path": str(path)}
        except Exception as exc:
            log.warning("could not read the W&B run: %s", exc)
            return {}

    def _evaluated_checkpoint(self, trainer: pl.Trainer) -> str | None:
        if self.command == "fit":
            callback = trainer.checkpoint_callback
            path = (callback.best_model_path or callback.last_model_path) if callback is not None else None
        else:
            path = trainer.ckpt_path or _find(self.config, "model", "checkpoint")
        return str(path) if path and Path(path).is_file() else None

    def _checkpoint_fields(self, trainer: pl.Trainer) -> dict[str, Any]:
        path = self._evaluated_checkpoint(trainer)
        if path is None:
            return {}
        return {"checkpoint_path": str(Path(path).resolve()), "checkpoint_sha256": provenance.file_sha256(path)}

    # --- run lifecycle -----------------------------------------------------------------------------------------
    def _begin(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self._started:
            return
        self._started = True
        commit, dirty = provenance.git_state()
        datamodule = trainer.datamodule
        device = trainer.strategy.root_device
        accelerator = device.type
        if device.type == "cuda":
            import torch

            accelerator = f"cuda:{torch.cuda.get_device_name(device)}"
        fields = {
            "job_name": self.job.name,
            "claim_id": self.job.claim,
            "command": self.command,
            "model_name": self._model_name(pl_module),
            "dataset_name": getattr(datamodule, "dataset_name", None),
            "git_commit": commit,
            "git_dirty": dirty,
            "config": self.config,
            "config_hash": provenance.config_hash(self.config),
            "versions": provenance.library_versions(),
            "host": provenance.hostname(),
            "accelerator": accelerator[:64],
            "num_nodes": trainer.num_nodes,
            "world_size": trainer.world_size,
            "slurm_job_id": provenance.slurm_job_id(),
            **self._wandb_fields(),
        }
        writes.start_run(self.engine, self.run_id, **fields)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not earlier: Lightning installs its requeue handler after on_fit_start, and only where none exists.
        if trainer.is_global_zero and self._started:
            self._watch_slurm_requeue(trainer)

    def _watch_slurm_requeue(self, trainer: pl.Trainer) -> None:
        """Mark the run interrupted when SLURM's requeue signal arrives (preemption or the time limit).

        Lightning's own handler (already installed) saves a checkpoint and runs `scontrol requeue`; SLURM then
        kills this process without an exception we could see, so we chain a status update after that handler.
        The requeued job has the same ECA_RUN_ID / SLURM job id and marks the same run running again.
        """
        environment = getattr(trainer.strategy, "cluster_environment", None)
        if not isinstance(environment, SLURMEnvironment) or not environment.auto_requeue:
            return
        requeue_signal = environment.requeue_signal
        if requeue_signal is None or threading.current_thread() is not threading.main_thread():
            return
        lightning_handler = signal.getsignal(requeue_signal)

        def on_requeue(signum: int, frame: Any) -> None:
            if callable(lightning_handler):
                lightning_handler(signum, frame)
            self._failed = True  # this process is about to be killed: its teardown must not report success
            try:
                writes.finish_run(self.engine, self.run_id, "interrupted", error=(
                    f"preempted at epoch {trainer.current_epoch}: requeued by SLURM (signal {signum}); "
                    "the requeued job continues this run"))  # fmt: skip
            except Exception as exc:  # never break Lightning's requeue
                log.warning("could not mark run %s interrupted: %s", self.run_id, exc)

        signal.signal(requeue_signal, on_requeue)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._begin(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.command == "validate":
            self._begin(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.command == "test":
            self._begin(trainer, pl_module)

    def _record_epoch(self, trainer: pl.Trainer, epoch: int | None = None) -> None:
        if trainer.is_global_zero and self._started and self.command == "fit":
            epoch = trainer.current_epoch if epoch is None else epoch
            writes.record_epoch_metrics(self.engine, self.run_id, epoch, trainer.global_step, self._scalars(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record_epoch(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.command == "fit":
            self._record_epoch(trainer)
        elif self.command == "validate":
            self._add_result(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.command == "test":
            self._add_result(trainer, pl_module, "test")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Metrics a module logs in its own on_train_epoch_end arrive after our hook; sweep them up once more.
        # By now the loop has counted the last epoch as done, so it is current_epoch - 1.
        self._record_epoch(trainer, epoch=max(trainer.current_epoch - 1, 0))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self._started and "val_top1" in trainer.callback_metrics:
            self._add_result(trainer, pl_module, "val")  # the final validation of the trained model

    def _add_result(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        if not trainer.is_global_zero or not self._started:
            return
        metrics = self._scalars(trainer)
        fingerprint = self._fingerprint(trainer, split)
        samples = metrics.get(f"{split}_samples")
        writes.add_result(
            self.engine,
            self.run_id,
            model_name=self._model_name(pl_module),
            dataset=fingerprint.get("dataset") or getattr(trainer.datamodule, "dataset_name", None) or "unknown",
            split=split,
            top1=metrics.get(f"{split}_top1"),
            top5=metrics.get(f"{split}_top5"),
            loss=metrics.get(f"{split}_loss"),
            samples_evaluated=int(round(samples)) if samples is not None else 0,
            fingerprint=fingerprint,
        )

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._failed = True
        if not trainer.is_global_zero or not self._started:
            return
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            status, error = "interrupted", f"{type(exception).__name__}: stopped by a signal (preemption, scancel, ^C)"
        else:
            status, error = "failed", f"{type(exception).__name__}: {exception}"
        writes.finish_run(self.engine, self.run_id, status, error=error, **self._wandb_fields())
        self._finish_wandb(exit_code=1)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._failed or not trainer.is_global_zero or not self._started:
            return
        if trainer.interrupted:  # stopped without an exception reaching us (e.g. a signal handled by Lightning)
            writes.finish_run(self.engine, self.run_id, "interrupted", error="interrupted", **self._wandb_fields())
        else:
            writes.finish_run(
                self.engine, self.run_id, "succeeded", **self._checkpoint_fields(trainer), **self._wandb_fields()
            )
        self._finish_wandb(exit_code=0)

    def _finish_wandb(self, exit_code: int) -> None:
        if self.wandb_logger is None:
            return
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=exit_code)
