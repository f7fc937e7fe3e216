"""SLURM preemption that cannot hang a DDP job: the requeue signal only raises a flag; the ranks agree on it at a
batch boundary, all save one checkpoint there, and rank 0 requeues the job.

Why not Lightning's own handler: it saves the checkpoint inside the signal handler, at whatever line each rank
happens to be running. Saving ends in a barrier, a collective; when the signal reaches the ranks at different
moments (SLURM signals each task separately), one rank's barrier meets another rank's gradient all-reduce and
the job hangs until its time limit, never requeued, and the store never hears of the preemption.
Here a rank's handler sets a flag and returns. Every `check_every_n_steps` training batches (and at each
epoch's end, after its validation) the ranks all-reduce their flags, so they decide together, at the same step, with the
optimizer step complete: the checkpoint is consistent and its barrier pairs with the others'.

Callbacks that want to hear about the requeue (the store's recorder marks the run interrupted) define
`on_slurm_requeued(trainer, signum)`; it runs on every rank, after the checkpoint is written and SLURM has
accepted the requeue. The requeued job resumes from that checkpoint (Lightning reads `hpc_ckpt_<n>.ckpt` in the
run folder; started with `--ckpt_path last`, it takes the further trained of that and last.ckpt, see
run.identify), under the same SLURM job id and the same store run.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from ecaplatform.training.run import slurm_job_id

log = logging.getLogger(__name__)

# After a requeue SLURM stops the job: SIGTERM (which Lightning ignores when it auto-requeues), SIGKILL KillWait
# seconds later (default 30). A job still alive this long after was not stopped, and says so.
STOP_WAIT_S = 600.0


def requeue_job(job_id: str) -> bool:
    """`scontrol requeue <job_id>`; True when SLURM accepted it."""
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("could not requeue SLURM job %s: %s", job_id, exc)
        return False
    if result.returncode != 0:
        log.warning("SLURM refused to requeue job %s: %s", job_id, result.stderr.strip() or result.returncode)
        return False
    return True


class SlurmRequeue(Callback):
    """Checkpoint and requeue on SLURM's requeue signal, at a step every rank agrees on (see the module doc).

    Active only where Lightning runs under SLURM with auto-requeue (SLURMEnvironment, the default there).
    """

    def __init__(self, check_every_n_steps: int = 20) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be at least 1, got {check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps
        self._signum: int | None = None
        self._previous_handler: Any = None
        self._signalled = False
        self._requeued = False
        self._requeue_pending = False
        self._path = ""

    @staticmethod
    def _requeue_signal(trainer: pl.Trainer) -> int | None:
        environment = getattr(trainer.strategy, "cluster_environment", None)
        if not isinstance(environment, SLURMEnvironment) or not environment.auto_requeue:
            return None
        return environment.requeue_signal

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Installed before Lightning registers its own (just after on_fit_start): finding a handler, it adds none.
        signum = self._requeue_signal(trainer)
        if signum is None or threading.current_thread() is not threading.main_thread():
            return
        self._signum, self._signalled, self._requeued, self._requeue_pending = signum, False, False, False
        self._previous_handler = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signalled = True  # only this: anything collective here could meet another rank's all-reduce

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        # The epoch's last batch is left to on_train_epoch_end: a checkpoint taken there, after the validation,
        # resumes with the next epoch; one taken before the validation would resume past it, the epoch unscored.
        if batch_idx + 1 == trainer.num_training_batches or (batch_idx + 1) % self.check_every_n_steps:
            return
        if self._checkpoint_if_signalled(trainer):
            self._requeue_and_wait(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Checkpoint now; requeue from the next hook on, once Lightning has logged the epoch's metrics: the requeue
        # makes SLURM signal the job at once, and a logger may not outlive that (W&B's service is stopped too).
        self._requeue_pending = self._checkpoint_if_signalled(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._requeue_pending:
            self._requeue_and_wait(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._requeue_pending:
            self._requeue_and_wait(trainer)

    def _checkpoint_if_signalled(self, trainer: pl.Trainer) -> bool:
        """Whether any rank heard the signal (the same call on every rank at the same step); if so, every rank
        saves the preemption checkpoint here, and True."""
        if self._signum is None or self._requeued:
            return False
        if not trainer.strategy.reduce_boolean_decision(self._signalled, all=False):
            return False
        self._requeued = True
        # Lightning's own name and folder for a preemption checkpoint: the requeued job resumes from it.
        self._path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        rank_zero_info(f"SLURM's requeue signal ({self._signum}) received: saving {self._path} at epoch "
                       f"{trainer.current_epoch}, step {trainer.global_step}, then requeueing the job")  # fmt: skip
        trainer.save_checkpoint(self._path)  # every rank: its barrier meets the others' here
        return True

    def _requeue_and_wait(self, trainer: pl.Trainer) -> None:
        """Rank 0 requeues the job; if SLURM accepts, tell the callbacks and wait to be stopped."""
        self._requeue_pending = False
        for logger in trainer.loggers:  # flush what the loggers hold before SLURM stops this process
            logger.finalize("finished")
        accepted = False
        if trainer.is_global_zero:
            job_id = slurm_job_id()
            accepted = job_id is not None and requeue_job(job_id)
        accepted = bool(trainer.strategy.broadcast(accepted, src=0))
        if not accepted:
            rank_zero_info(f"The job was not requeued; training goes on. {self._path} resumes it if it is stopped.")
            return
        for callback in trainer.callbacks:
            hook = getattr(callback, "on_slurm_requeued", None)
            if callable(hook):
                hook(trainer, self._signum)
        self._wait_to_be_stopped()

    def _wait_to_be_stopped(self) -> None:
        # Training on would only write epochs past the checkpoint, which the requeued job writes again.
        rank_zero_info("Requeued: waiting for SLURM to stop this job; the requeued job resumes from the checkpoint")
        time.sleep(STOP_WAIT_S)
        raise RuntimeError(f"SLURM accepted the requeue but did not stop this job within {STOP_WAIT_S:.0f} s; "
                           f"cancel it (scancel) and resubmit: {self._path} resumes the run")  # fmt: skip

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._signum is not None:
            signal.signal(self._signum, self._previous_handler or signal.SIG_DFL)
            self._signum = None
