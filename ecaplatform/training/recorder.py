"""RunRecorder: the Lightning callback that writes a run, its per-epoch metrics and its results to the store.

Only global rank 0 writes. Each write is its own committed transaction, so a crash keeps every finished epoch.
The run id is decided before the Trainer exists (see provenance.resolve_run_id), is the same on every rank and
node (rank 0's, broadcast at setup), and is saved in the checkpoint, so `fit --ckpt_path last` and a SLURM
requeue continue the same record.

Per-epoch metrics are what Lightning sends its loggers at each epoch's end (a small logger of ours listens), so
the store holds, epoch by epoch, exactly what the CSV log and W&B hold: a module that logs its train metrics
in its own on_train_epoch_end (as ImageClassifier does) logs them after every callback's on_train_epoch_end,
too late for a callback reading `trainer.callback_metrics` there.

While the run lives, a daemon thread on rank 0 refreshes `runs.heartbeat_at` (every ECA_HEARTBEAT_TIMEOUT_S / 5
seconds): a run killed without a chance to record its end (kill -9, the OOM killer, a lost node) is then read as
`lost` (verification.run_status). A thread, not batch hooks: a long legitimate pause (scanning a data set,
torch.compile, writing a large checkpoint) must not look like a dead process.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from sqlalchemy import Engine

from ecaplatform.store import database, verification, writes
from ecaplatform.store.outcomes import Outcomes, OutcomesError
from ecaplatform.training import provenance
from ecaplatform.training.jobspec import JobSpec

log = logging.getLogger(__name__)

RESULT_SPLITS = {"fit": "val", "validate": "val", "test": "test"}


def _scalar(value: Any) -> float | None:
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite scalars among `metrics` whose names fit the store (64 characters)."""
    values = {name: _scalar(value) for name, value in metrics.items()}
    return {name: value for name, value in values.items() if value is not None and len(name) <= 64}


def _find(config: dict[str, Any], section: str, key: str) -> Any:
    """config[section][key], or config[section]["init_args"][key] for a class_path/init_args section."""
    node = config.get(section)
    if not isinstance(node, dict):
        return None
    if key in node:
        return node[key]
    init_args = node.get("init_args")
    return init_args.get(key) if isinstance(init_args, dict) else None


def whole_split_outcomes(
    vectors: Mapping[str, Any] | None, samples_evaluated: int, fingerprint: Mapping[str, Any]
) -> Outcomes | None:
    """The module's per-image outcome vectors as a result stores them, or None. Only an evaluation of the whole
    split (as many samples as the fingerprint's, each once) has outcomes where entry i means image i of the split;
    a limit_*_batches subset has none."""
    if vectors is None:
        return None
    if samples_evaluated != fingerprint.get("num_samples"):
        log.info("%d of %s samples evaluated: no per-image outcomes", samples_evaluated, fingerprint.get("num_samples"))
        return None
    try:
        return Outcomes(**vectors)  # whether they are this result's own, add_result checks (check_against)
    except (OutcomesError, TypeError) as exc:
        log.warning("per-image outcomes not stored (malformed): %s", exc)
        return None


class _Heartbeat:
    """Calls `beat` every `interval` seconds from a daemon thread until stopped or `beat` returns False."""

    def __init__(self, beat: Callable[[], bool], interval: float) -> None:
        self._beat, self._interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eca-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        if wait and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        warned = False
        while not self._stop.wait(self._interval):
            try:
                if not self._beat():  # the run ended (or another process took it over): nothing to keep alive
                    return
            except Exception as exc:  # a store that is briefly unreachable must not stop training
                if not warned:
                    log.warning("heartbeat not recorded (retrying every %.0f s): %s", self._interval, exc)
                    warned = True


class _LoggedMetricsListener(Logger):
    """A logger that hands what Lightning logs to the RunRecorder; it writes nothing itself.

    Added to the Trainer's loggers by RunRecorder.setup (and removed at teardown). Alone (the job disabled
    logging), it stands in for "no logger": its save_dir is the Trainer's default_root_dir.
    """

    def __init__(self, on_log: Callable[[Mapping[str, Any], int | None], None]) -> None:
        super().__init__()
        self._on_log = on_log
        self.default_root_dir: str | None = None
        self.others: list[Logger] = []

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str | int:
        # Shown in the progress bar joined with the other loggers' versions: add nothing of its own.
        return self.others[0].version if self.others else ""  # type: ignore[return-value]

    @property
    def save_dir(self) -> str | None:
        return self.default_root_dir

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._on_log(metrics, step)


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
        self.db_url = db_url or database.db_url()  # fixed now: the whole run writes to one store
        self.wandb_logger = wandb_logger
        self._engine: Engine | None = None
        self._failed = False
        self._requeued = False
        self.wandb_location: tuple[str, str] | None = None  # (mode, run folder or entity/project/id), once known
        self._started = False
        self._heartbeat: _Heartbeat | None = None
        self._listener = _LoggedMetricsListener(self._on_logged)
        # Which epoch-end log Lightning sends next: "val" (after validation), "train" (after on_train_epoch_end).
        self._epoch_end: str | None = None
        self._trainer: pl.Trainer | None = None

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
            self._engine = database.writer_engine(self.db_url)
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

    def _pipeline(self, trainer: pl.Trainer, split: str) -> str | None:
        """The input pipeline that produced the split's batches, or None if the data module does not say."""
        pipeline = getattr(trainer.datamodule, "pipeline", None)
        if pipeline is None:
            return None
        try:
            name = pipeline(split)
        except Exception as exc:  # an unknown pipeline must not kill a finished evaluation
            log.warning("could not tell the %s split's input pipeline: %s", split, exc)
            return None
        return str(name)[:32] if name else None

    def _scalars(self, trainer: pl.Trainer) -> dict[str, float]:
        return _finite(trainer.callback_metrics)

    def _wandb_fields(self) -> dict[str, Any]:
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
        self._heartbeat = _Heartbeat(lambda: writes.heartbeat(self.engine, self.run_id),
                                     verification.heartbeat_interval_s())  # fmt: skip
        self._heartbeat.start()

    def _stop_heartbeat(self, wait: bool = True) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop(wait)
            self._heartbeat = None

    # --- one run id on every rank and node; the metrics listener ----------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer
        if trainer.world_size > 1:
            # Processes started apart (one per node, by hand or torchrun) each made up an id: rank 0's counts.
            self.run_id = trainer.strategy.broadcast(self.run_id, src=0)
        if self.command == "fit" and self._listener not in trainer.loggers:
            self._listener.default_root_dir = str(trainer.default_root_dir)
            self._listener.others = list(trainer.loggers)
            trainer.loggers = [*trainer.loggers, self._listener]
        if trainer.local_rank == 0:  # one line per node, so every node's log says which run it belongs to
            where = f" (node {trainer.node_rank} of {trainer.num_nodes})" if trainer.num_nodes > 1 else ""
            print(f"eca {self.command}: recording run {self.run_id}{where}", flush=True)

    def _on_logged(self, metrics: Mapping[str, Any], step: int | None) -> None:
        """What Lightning sent its loggers; the epoch-end logs of a fit become that epoch's metrics in the store."""
        trainer, which = self._trainer, self._epoch_end
        if which is None or trainer is None or not trainer.is_global_zero or not self._started:
            return
        epoch = metrics.get("epoch", trainer.current_epoch)
        values = _finite({name: value for name, value in metrics.items() if name not in ("epoch", "step")})
        step = trainer.global_step if step is None else step
        writes.record_epoch_metrics(self.engine, self.run_id, int(epoch), int(step), values)
        if which == "train":  # the epoch's last log
            self._epoch_end = None

    def on_slurm_requeued(self, trainer: pl.Trainer, signum: int) -> None:
        """SLURM preempted the job and requeued it (ecaplatform.training.slurm_requeue; the checkpoint is written):
        the run is interrupted until the requeued job, with the same ECA_RUN_ID / SLURM job id, marks it running."""
        self._failed = True  # this process is about to be stopped: its teardown must not report success
        self._requeued = True  # and what fails while SLURM stops it (W&B's service killed first...) is no failure
        self._stop_heartbeat()
        if not trainer.is_global_zero or not self._started:
            return
        try:
            writes.finish_run(self.engine, self.run_id, "interrupted", error=(
                f"preempted at epoch {trainer.current_epoch}, step {trainer.global_step}: requeued by SLURM "
                f"(signal {signum}); the requeued job continues this run"))  # fmt: skip
        except Exception as exc:  # never stand in the way of the requeue
            log.warning("could not mark run %s interrupted: %s", self.run_id, exc)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._begin(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.command == "validate":
            self._begin(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.command == "test":
            self._begin(trainer, pl_module)

    # Lightning sends an epoch's metrics to its loggers right after these hooks: validation's after
    # on_validation_epoch_end (callbacks first, then the module), training's after every on_train_epoch_end.
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.command == "fit" and not trainer.sanity_checking:
            self._epoch_end = "val"

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.command == "fit":
            self._epoch_end = "train"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:  # fmt: skip
        self._epoch_end = None  # step-level logs follow

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._epoch_end == "val":
            self._epoch_end = None
        if not trainer.sanity_checking and self.command == "validate":
            self._add_result(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.command == "test":
            self._add_result(trainer, pl_module, "test")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self._started and "val_top1" in trainer.callback_metrics:
            self._add_result(trainer, pl_module, "val")  # the final validation of the trained model

    def _add_result(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        if not trainer.is_global_zero or not self._started:
            return
        metrics = self._scalars(trainer)
        fingerprint = self._fingerprint(trainer, split)
        samples = metrics.get(f"{split}_samples")
        fields: dict[str, Any] = dict(
            model_name=self._model_name(pl_module),
            dataset=fingerprint.get("dataset") or getattr(trainer.datamodule, "dataset_name", None) or "unknown",
            split=split,
            top1=metrics.get(f"{split}_top1"),
            top5=metrics.get(f"{split}_top5"),
            loss=metrics.get(f"{split}_loss"),
            samples_evaluated=int(round(samples)) if samples is not None else 0,
            fingerprint=fingerprint,
            pipeline=self._pipeline(trainer, split),
        )
        outcomes = self._outcomes(pl_module, split, fields["samples_evaluated"], fingerprint)
        try:
            writes.add_result(self.engine, self.run_id, **fields, outcomes=outcomes)
        except OutcomesError as exc:  # outcomes that are not the result's own: keep the result, drop them
            log.warning("the %s result is stored without its per-image outcomes, which disagree with it: %s",
                        split, exc)  # fmt: skip
            writes.add_result(self.engine, self.run_id, **fields)

    def _outcomes(self, pl_module: pl.LightningModule, split: str, samples: int,
                  fingerprint: Mapping[str, Any]) -> Outcomes | None:  # fmt: skip
        """The module's per-image outcomes (ImageClassifier.eval_outcomes) fit for this result, or None."""
        getter = getattr(pl_module, "eval_outcomes", None)
        if not callable(getter):
            return None
        try:
            return whole_split_outcomes(getter(split), samples, fingerprint)
        except Exception as exc:  # outcomes are extra: a finished evaluation's result must never be lost for them
            log.warning("could not collect the %s split's per-image outcomes: %s", split, exc)
            return None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._failed = True
        self._stop_heartbeat()
        self._remove_listener(trainer)  # Lightning runs no callback teardown after an exception
        if not trainer.is_global_zero or not self._started:
            return
        if self._requeued:  # the run is `interrupted` and its requeued job continues it: keep that status
            log.info("after the requeue, while SLURM stops this job: %s: %s", type(exception).__name__, exception)
            return
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            status, error = "interrupted", f"{type(exception).__name__}: stopped by a signal (preemption, scancel, ^C)"
        else:
            status, error = "failed", f"{type(exception).__name__}: {exception}"
        writes.finish_run(self.engine, self.run_id, status, error=error, **self._wandb_fields())
        self._finish_wandb(exit_code=1)

    def _remove_listener(self, trainer: pl.Trainer) -> None:
        if self._listener in trainer.loggers:
            trainer.loggers = [logger for logger in trainer.loggers if logger is not self._listener]

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_listener(trainer)
        self._stop_heartbeat()
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
