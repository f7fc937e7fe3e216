"""`eca fit|validate|test --config jobs/X.yaml`: a LightningCLI for the ImageClassifier and our data modules.

What it adds to Lightning's CLI:
- a `job:` section (ecaplatform.jobspec.JobSpec; unknown keys are rejected, naming the key);
- checkpoints in a predictable place: runs/<job.name>/checkpoints/{last,best}.ckpt (best by val_top1), so
  `--ckpt_path last` resumes the job and `--ckpt_path best` validates its best epoch;
- the tracking seam: `tracking_for_run(subcommand, config, job)` once per run, its callbacks and logger added;
- `validate`/`test` refuse to score random weights (neither --ckpt_path nor --model.checkpoint);
- errors about data, models and configs print one clear line and exit non-zero instead of a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger

from ecaplatform.classifier import ImageClassifier, ModelConfigError
from ecaplatform.datamodules import ClassificationDataModule, DataError
from ecaplatform.jobspec import JobSpec

SUBCOMMANDS = ("fit", "validate", "test")
DEFAULT_RUNS_DIR = "runs"
LIGHTNING_CKPT_WORDS = (None, "last", "hpc", "registry")  # --ckpt_path values Lightning resolves itself


class CLIConfigError(ValueError):
    """A combination of options the CLI cannot run; the message says what to pass instead."""


def _loggers_as_list(value: Any) -> list[Logger] | None:
    """Trainer(logger=...) as a list; None when the config disabled logging with `logger: false`."""
    if value is False:
        return None
    if value is None or value is True:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _ParsedOnly(Exception):
    """Raised by a parse-only CLI once the config has parsed and passed the checks."""


class EcaLightningCLI(LightningCLI):
    def __init__(self, args: list[str], parse_only: bool = False) -> None:
        self.parse_only = parse_only
        super().__init__(
            model_class=ImageClassifier,
            datamodule_class=ClassificationDataModule,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=args,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(JobSpec, "job")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_top1",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 1,
                "checkpoint.enable_version_counter": False,
            }
        )

    # --- before anything is built: fill run-specific defaults, refuse what cannot work ----------------------------
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        job_name = config.job.name
        if config.trainer.default_root_dir is None:
            config.trainer.default_root_dir = os.path.join(DEFAULT_RUNS_DIR, job_name)
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = os.path.join(config.trainer.default_root_dir, "checkpoints")
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "best":
            # Lightning knows "best" only inside the fit that produced it; ours has a fixed name on disk.
            best = Path(config.checkpoint.dirpath) / "best.ckpt"
            if not best.is_file():
                raise CLIConfigError(f"--ckpt_path best: {best} does not exist; train first or give a path")
            config.ckpt_path = str(best)
        elif ckpt_path not in LIGHTNING_CKPT_WORDS and not self.parse_only and not Path(ckpt_path).exists():
            raise CLIConfigError(f"--ckpt_path {ckpt_path} does not exist; give a .ckpt file, 'last' or 'best'")
        if self.subcommand in ("validate", "test") and not ckpt_path and not config.model.checkpoint:
            raise CLIConfigError(
                f"`eca {self.subcommand}` needs weights to score: pass --ckpt_path (one of our .ckpt files, "
                "'last' or 'best') or --model.checkpoint (e.g. a released eca_resnet50_k3557.pth.tar); "
                "it refuses to evaluate randomly initialised weights"
            )
        if self.parse_only:
            raise _ParsedOnly

    def resolved_config(self) -> dict[str, Any]:
        """The subcommand's config as plain data, as --print_config shows it."""
        parser = self._parser(self.subcommand)
        return yaml.safe_load(parser.dump(self.config[self.subcommand], skip_none=False))

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        from ecaplatform.tracking.integration import tracking_for_run

        job = self._get(self.config_init, "job")  # jsonargparse instantiates the dataclass (and Resources)
        try:
            extra_callbacks, tracking_logger = tracking_for_run(self.subcommand, self.resolved_config(), job)
        except ValueError as err:  # e.g. a job.claim that is not a claim id
            raise CLIConfigError(str(err)) from err
        callbacks = [*callbacks, *extra_callbacks]
        if config.get("enable_checkpointing") is False:  # Lightning refuses a ModelCheckpoint then
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        loggers = _loggers_as_list(config.get("logger"))
        if loggers is not None:
            if not loggers:  # the config asked for Lightning's default logger: a CSV one under the run folder
                loggers.append(CSVLogger(save_dir=config["default_root_dir"], name="csv"))
            if tracking_logger is not None:
                loggers.append(tracking_logger)
            config["logger"] = loggers
        return super()._instantiate_trainer(config, callbacks)

    def after_fit(self) -> None:
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        lines = ["", "Run finished. Where things are:"]
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint):
            lines.append(f"  checkpoints: {checkpoint.dirpath}")
            if checkpoint.best_model_path:
                score = checkpoint.best_model_score
                shown = f" (val_top1 {float(score):.2f})" if score is not None else ""
                lines.append(f"  best:        {checkpoint.best_model_path}{shown}")
            if checkpoint.last_model_path:
                lines.append(f"  last:        {checkpoint.last_model_path}")
        for logger in trainer.loggers:
            where = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
            if where is not None:
                lines.append(f"  logs ({type(logger).__name__}): {os.path.abspath(where)}")
        lines.append(f"  resume:      eca fit --config <this job> --ckpt_path {checkpoint.dirpath}/last.ckpt"
                     if isinstance(checkpoint, ModelCheckpoint) else "")
        print("\n".join(line for line in lines if line), flush=True)


def check_config(config_path: str, subcommand: str) -> None:
    """Parse a job YAML for `subcommand` as `eca <subcommand> --config` would, without building anything.

    Raises SystemExit (bad or unknown keys; jsonargparse prints why) or CLIConfigError.
    """
    if subcommand not in SUBCOMMANDS:
        raise CLIConfigError(f"unknown subcommand {subcommand!r}; use one of {', '.join(SUBCOMMANDS)}")
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    try:
        EcaLightningCLI(args=[subcommand, "--config", str(config_path)], parse_only=True)
    except _ParsedOnly:
        return


def _user_message(err: BaseException) -> str:
    """The useful line of an error; DataLoader workers wrap theirs in a traceback text."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith("Error") else last
    return text


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (CLIConfigError, DataError, ModelConfigError)
    try:
        from ecaplatform.models import CheckpointError

        errors += (CheckpointError,)
    except ImportError:
        pass
    return errors


def main(argv: list[str] | None = None) -> int:
    """Run `fit`, `validate` or `test` (argv[0]) with LightningCLI options; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SUBCOMMANDS:
        print(f"usage: eca {{{','.join(SUBCOMMANDS)}}} --config jobs/X.yaml [options]", file=sys.stderr)
        return 2
    # `eca` hands over sys.argv[1:] explicitly; Lightning warns when args and sys.argv are both set.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    # Intended: the classifier normalises uint8 batches on the device whatever the data module.
    warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")
    try:
        EcaLightningCLI(args=args)
    except SystemExit as exit_:  # argument errors, --help, --print_config
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except _user_errors() as err:
        print(f"eca {args[0]}: error: {_user_message(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
