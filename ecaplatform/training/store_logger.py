"""StoreLogger: a run's per-epoch metrics and its end, written to the store through Lightning's Logger API (the seam
MLFlowLogger and WandbLogger use); the RunRecorder callback adds what only hooks see (ecaplatform/training/recorder.py).

The store holds, epoch by epoch, exactly what the CSV log and W&B hold at epoch ends: the logs Lightning sends for an
epoch carry its number (`epoch`, which Lightning adds to each log it sends without a step of its own); of those, what
a training step logs is left out by name: `*_step` (Lightning's name for the step half of a metric logged on step
and epoch, and what ImageClassifier calls its on_step-only `train_loss_step`) and a per-step monitor's grouped names
(ThroughputMonitor's `train/device/samples_per_sec`). Each (epoch, name) is an upsert: a log sent again rewrites it.

Lightning calls `finalize("success")` once a fit, validation or test ran to its end (after the recorder stored its
result): the run succeeded, with the checkpoint it leaves or evaluated. A failure was recorded by the recorder's
on_exception, with its error; "finished" (a flush before a SLURM requeue) writes nothing: every write is committed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ecaplatform.store import writes
from ecaplatform.training import provenance
from ecaplatform.training.run import RunStatus

log = logging.getLogger(__name__)


def _scalar(value: Any) -> float | None:
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


def finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite scalars among `metrics` whose names fit the store (64 characters)."""
    values = {name: _scalar(value) for name, value in metrics.items()}
    return {name: value for name, value in values.items() if value is not None and len(name) <= 64}


class StoreLogger(Logger):
    """`status`: the run's; `command`: fit | validate | test (only a fit has per-epoch metrics); `evaluated`: the
    checkpoint a validation or test scores; `save_dir`: the run folder (Lightning's log_dir when no other logger)."""

    def __init__(self, status: RunStatus, command: str, evaluated: str | None = None, wandb_logger: Any = None,
                 save_dir: str | None = None) -> None:  # fmt: skip
        super().__init__()
        self.status, self.command, self.evaluated = status, command, evaluated
        self.wandb_logger = wandb_logger
        self.wandb_location: tuple[str, str] | None = None  # (mode, run folder or entity/project/id), once known
        self._save_dir = save_dir
        self._checkpoint: ModelCheckpoint | None = None

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return self.status.run_id

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the run's resolved config is recorded when it starts

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if self.command != "fit" or "epoch" not in metrics or not self.status.started:
            return  # not a fit's epoch, or not rank 0's run (only global rank 0 starts one)
        values = finite({name: value for name, value in metrics.items()
                         if name != "epoch" and not name.endswith("_step") and "/" not in name})  # fmt: skip
        writes.record_epoch_metrics(self.status.engine, self.status.run_id, int(metrics["epoch"]), int(step or 0),
                                    values)  # fmt: skip

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        if self._checkpoint is None:  # the first to save: the job's own (best.ckpt), not the every-epoch last.ckpt
            self._checkpoint = checkpoint_callback

    def finalize(self, status: str) -> None:
        if status == "success" and self.status.end("succeeded", **self._checkpoint_fields(), **self.wandb_fields()):
            self._finish_wandb(exit_code=0)

    def stopped(self, exception: BaseException) -> None:
        """The run stopped on `exception`: interrupted by a signal, else failed (after a requeue: left as it is)."""
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            status, error = "interrupted", f"{type(exception).__name__}: stopped by a signal (preemption, scancel, ^C)"
        else:
            status, error = "failed", f"{type(exception).__name__}: {exception}"
        if self.status.end(status, error=error, **self.wandb_fields()):
            self._finish_wandb(exit_code=1)
        elif self.status.ended:  # the run is `interrupted` and its requeued job continues it
            log.info("after the run's end (a requeue, while SLURM stops this job): %s", error)

    def _checkpoint_fields(self) -> dict[str, Any]:
        callback = self._checkpoint
        path = (callback.best_model_path or callback.last_model_path) if callback is not None else self.evaluated
        if not path or not Path(path).is_file():
            return {}
        return {"checkpoint_path": str(Path(path).resolve()), "checkpoint_sha256": provenance.file_sha256(path)}

    def wandb_fields(self) -> dict[str, Any]:
        """Where the W&B run is (its id, mode, and offline folder or entity/project/id), once W&B can say."""
        if self.wandb_logger is None:
            return {}
        try:
            experiment = self.wandb_logger.experiment
            mode = "offline" if getattr(experiment, "offline", False) else "online"
            # Offline: the run's own directory (what `wandb sync` takes); online: entity/project/id.
            path = Path(experiment.dir).parent if mode == "offline" else experiment.path
            self.wandb_location = (mode, str(path))
            return {"wandb_id": experiment.id, "wandb_mode": mode, "wandb_path": str(path)}
        except Exception as exc:
            log.warning("could not read the W&B run: %s", exc)
            return {}

    def _finish_wandb(self, exit_code: int) -> None:
        if self.wandb_logger is None:
            return
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=exit_code)
