"""The seam between the LightningCLI (ecaplatform/training/lightning_cli.py) and tracking.

The CLI calls `tracking_for_run` once per `eca fit|validate|test`, after parsing and before the Trainer is
built, and adds what it returns: the RunRecorder callback, the StoreLogger (SQL store) and a WandbLogger.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger

from ecaplatform.training.jobspec import JobSpec
from ecaplatform.training.recorder import RESULT_SPLITS, RunRecorder, find
from ecaplatform.training.run import RunStatus, resolve_run_id
from ecaplatform.training.store_logger import StoreLogger


def wandb_mode(job: JobSpec) -> str:
    """online | offline | disabled. A job that says disabled is; otherwise `WANDB_MODE` in the environment wins
    (a machine or a test can forbid the network); then the job's mode; "auto" is online only with `WANDB_API_KEY`."""
    if job.wandb_mode == "disabled":
        return "disabled"
    from_env = os.environ.get("WANDB_MODE")
    if from_env in ("online", "offline", "disabled"):
        return from_env
    if from_env == "dryrun":
        return "offline"
    if job.wandb_mode != "auto":
        return job.wandb_mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def make_wandb_logger(run_id: str, job: JobSpec, mode: str) -> Any:
    """A WandbLogger whose W&B run id is the store's run id: a resume or requeue continues the same W&B run."""
    from lightning.pytorch.loggers import WandbLogger

    save_dir = os.environ.get("WANDB_DIR") or "."
    os.makedirs(save_dir, exist_ok=True)
    tags = [job.claim] if job.claim else None
    import wandb

    logger = WandbLogger(
        name=job.name, project=job.wandb_project, entity=job.wandb_entity, id=run_id, resume="allow",
        mode=mode, save_dir=save_dir, log_model=False, tags=tags, group=job.claim,
        # W&B's own banner and end-of-run history tables: `eca fit` prints where the run is itself (after_fit).
        settings=wandb.Settings(quiet=True),
    )  # fmt: skip
    # Lightning always passes anonymous=None, which W&B (>= 0.19) answers with a deprecation warning on every run;
    # an absent key is what W&B expects. Drop when Lightning's WandbLogger stops passing it.
    logger._wandb_init.pop("anonymous", None)
    return logger


def tracking_for_run(subcommand: str, config: dict[str, Any], job: JobSpec | None, run_id: str | None = None,
                     save_dir: str | None = None) -> tuple[list[Callback], list[Logger]]:  # fmt: skip
    """(callbacks, loggers) that record this run: the RunRecorder callback; a WandbLogger, unless W&B is disabled,
    and the StoreLogger (last: the first logger names Lightning's log_dir).

    `config` is the resolved config of the subcommand as a plain dict (what `--print_config` shows, `ckpt_path`
    a file or a word Lightning resolves); `run_id` the id the CLI resolved (its run folder, `save_dir`, is named after
    it), else resolved here.
    """
    if subcommand not in RESULT_SPLITS:
        return [], []
    job = job or JobSpec()
    run_id = run_id or resolve_run_id(subcommand, config.get("ckpt_path"))
    mode = wandb_mode(job)
    wandb_logger = None if mode == "disabled" else make_wandb_logger(run_id, job, mode)
    evaluated = None if subcommand == "fit" else config.get("ckpt_path") or find(config, "model", "checkpoint")
    store = StoreLogger(RunStatus(run_id), subcommand, evaluated, wandb_logger, save_dir)
    return [RunRecorder(store, config, job)], [logger for logger in (wandb_logger, store) if logger is not None]
