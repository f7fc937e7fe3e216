"""`eca fit|validate|test --config jobs/X.yaml`: a LightningCLI for the ImageClassifier and our data modules.

What it adds to Lightning's CLI, through its public hooks only: a `job:` section (JobSpec); `extends: base.yaml`
(the job read on top of a recipe, as if both were given to `--config`); `model.num_classes` linked to the data;
a folder per run, runs/<job.name>/<run id>/ (checkpoints/{best,last}.ckpt, csv/), so that `--ckpt_path last|best`
name one run's file (`--from_run RUN`, else the newest; ecaplatform.training.run decides both); the run's tracking
(`tracking_for_run`); `validate`/`test` refusing random weights; a check (`check_job`: parse and build the model and
data module as `eca <command>` would, through LightningCLI's `run=False`, no Trainer) that `eca submit` uses;
one-line errors instead of tracebacks.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError, Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, ThroughputMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ecaplatform.datamodules import ClassificationDataModule, DataError
from ecaplatform.models import CheckpointError
from ecaplatform.store.database import StoreError
from ecaplatform.training.classifier import ImageClassifier, ModelConfigError
from ecaplatform.training.jobspec import COMMANDS, JOB_NAME_MAX_CHARS, JobSpec, check_identifier
from ecaplatform.training.progress import LogLinesProgressBar
from ecaplatform.training.quiet import silence_known_noise
from ecaplatform.training.run import RunIdentity, identify
from ecaplatform.training.slurm_requeue import SlurmRequeue
from ecaplatform.training.store_logger import StoreLogger

LIGHTNING_CKPT_WORDS = (None, "hpc", "registry")  # --ckpt_path values Lightning resolves itself (not last/best)
USER_ERRORS = (ArgumentError, DataError, ModelConfigError, CheckpointError, StoreError)
CHECKPOINT_DEFAULTS = {"checkpoint.monitor": "val_top1", "checkpoint.mode": "max", "checkpoint.filename": "best",
                       "checkpoint.save_last": True, "checkpoint.save_top_k": 1,
                       "checkpoint.enable_version_counter": False}  # fmt: skip


class CLIConfigError(ValueError):
    """A combination of options the CLI cannot run; the message says what to pass instead."""


@rank_zero_only
def rank_zero_print(line: str) -> None:
    """Print once, not once per DDP process (Lightning re-runs this command in each)."""
    print(line, flush=True)


# --- job files that extend a recipe -----------------------------------------------------------------------------


def config_chain(path: str | os.PathLike[str]) -> list[Path]:
    """The config files a job file stands for, base recipes first: its `extends:` chain, then itself."""
    chain: list[Path] = []
    current: Path | None = Path(path)
    while current is not None:
        if current in chain:
            raise CLIConfigError(f"{current}: `extends:` loops back to itself ({' -> '.join(map(str, chain))})")
        chain.insert(0, current)
        try:
            document = yaml.safe_load(current.read_text())
        except FileNotFoundError:
            raise CLIConfigError(f"{current}: no such config file") from None
        except yaml.YAMLError as err:
            raise CLIConfigError(f"{current}: not valid YAML: {err}".replace("\n", " ")) from None
        if not isinstance(document, dict):  # jsonargparse would say only "Unexpected config"
            found = "is empty" if document is None else f"holds a YAML {type(document).__name__}, not a mapping"
            raise CLIConfigError(f"{current}: the config file {found}; expected a mapping of sections (job:, model:, "
                                 "data:, trainer:), as in jobs/demo_cpu.yaml")
        base = document.get("extends")
        current = (current.parent / base) if base else None
    return chain


def expand_config_args(args: Sequence[str]) -> list[str]:
    """`--config JOB.yaml` -> `--config BASE.yaml --config JOB.yaml` for each `extends:` in JOB's chain.

    The merged config extends nothing any more: `extends` is then reset, so that what --print_config shows and
    what a run saves as its config.yaml is complete and runs from any folder.
    """
    expanded: list[str] = []
    remaining = iter(args)
    for arg in remaining:
        if arg == "--config" or arg.startswith("--config="):
            path = next(remaining, "") if arg == "--config" else arg.split("=", 1)[1]
            expanded += [word for file in config_chain(path) for word in ("--config", str(file))]
        else:
            expanded.append(arg)
    return [*expanded, "--extends=null"] if len(expanded) > len(args) else expanded


ARCHITECTURE_HPARAMS = ("model_name", "model_kwargs")  # what decides the network a checkpoint's weights fit


def check_ckpt_file(path: str, model: Any, trust_hparams: bool = False) -> None:
    """Refuse a --ckpt_path that cannot be read safely, is not one of our Lightning checkpoints, or holds another
    model than the job's `model` section (unless `trust_hparams`): one line, before anything is built."""
    from ecaplatform.models.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(path)  # weights_only: a file that would run code is refused here, in one line
    if not isinstance(checkpoint, dict) or "pytorch-lightning_version" not in checkpoint:
        what = f"a dict with keys {list(checkpoint)[:4]}" if isinstance(checkpoint, dict) else \
            f"a {type(checkpoint).__name__}"
        raise CLIConfigError(f"--ckpt_path {path} is not a Lightning checkpoint written by `eca fit` (it holds "
                             f"{what}); released weights (.pth.tar) go in --model.checkpoint")
    saved = checkpoint.get("hyper_parameters") or {}
    if "lr" in saved and "optimizer" not in saved:  # flat settings: what ImageClassifier took before SGD/LRSchedule
        raise CLIConfigError(f"--ckpt_path {path} holds an older ecaplatform's flat optimizer settings (model.lr, "
                             f"model.lr_schedule, ...): score its weights with --model.checkpoint {path} instead")
    theirs = {key: saved.get(key) for key in ARCHITECTURE_HPARAMS}
    ours = {key: model.get(key) for key in ARCHITECTURE_HPARAMS}
    if not trust_hparams and theirs != ours:
        raise CLIConfigError(f"--ckpt_path {path} holds {theirs} but the job's model is {ours}; give a checkpoint "
                             "of the job's model, or pass --trust_ckpt_hparams true to score the checkpoint's own")


def job_model_name(args: Sequence[str]) -> str | None:
    """The model a command line names: its config files' `model.model_name` (last wins), then --model.model_name."""
    name, words = None, expand_config_args(list(args))
    for i, word in enumerate(words):
        value = words[i + 1] if i + 1 < len(words) and "=" not in word else word.partition("=")[2]
        if word.partition("=")[0] == "--config":
            try:
                model = (yaml.safe_load(Path(value).read_text()) or {}).get("model") or {}
            except (OSError, AttributeError, yaml.YAMLError):  # the parser will say what is wrong with the file
                continue
            model = model.get("init_args", model) if isinstance(model, dict) else {}
            name = model.get("model_name", name) if isinstance(model, dict) else name
        elif word.partition("=")[0] == "--model.model_name":
            name = value
    return name if isinstance(name, str) else None


def module_class_for(args: Sequence[str]) -> type[Any]:
    """ObjectDetector where the job's model is a registered detector, else ImageClassifier: the model's name says
    its task, so a job file needs no class_path."""
    from ecaplatform.models.registry import get_model_info

    name = job_model_name(args)
    try:
        task = get_model_info(name).task if name else "classification"
    except (KeyError, ValueError):  # an unknown name: the classifier's parser says so, with the known names
        task = "classification"
    if task == "classification":
        return ImageClassifier
    from ecaplatform.training.detector import ObjectDetector

    return ObjectDetector


def accelerator_problem(config: Any) -> str | None:
    """Why a job that asks for CUDA (`trainer.accelerator: gpu`, DALI's gpu decoding) cannot run on this machine
    (no CUDA GPU, or fewer than it asks for), naming the overrides that run it here; None where it can. Lightning's
    and DALI's own answers are long tracebacks."""
    import torch

    trainer, found = config.get("trainer") or {}, torch.cuda.device_count()  # a parsed Namespace or a plain dict
    accelerator, devices = trainer.get("accelerator"), trainer.get("devices")
    data = config.get("data")
    init = (data.get("init_args") or data) if hasattr(data, "get") else {}
    dali_gpu = init.get("backend") == "dali" and init.get("dali_device") == "gpu"
    gpu_trainer = accelerator in ("gpu", "cuda")
    if found and gpu_trainer and isinstance(devices, int) and devices > found:
        return (f"trainer.devices is {devices} but this machine has {found} GPU(s): pass --trainer.devices {found} "
                "(the global batch size stays data.batch_size), or `eca submit` the job to a node with enough")
    if found or not (gpu_trainer or dali_gpu):
        return None
    asks, overrides = [], []
    if gpu_trainer:
        asks.append(f"trainer.accelerator: {accelerator} ({devices} device(s))")
        overrides += ["--trainer.accelerator cpu", "--trainer.devices 1"]
        if str(trainer.get("strategy")) not in ("auto", "None"):
            overrides.append("--trainer.strategy auto")
        if str(trainer.get("precision")) not in ("32", "32-true", "None"):
            overrides.append("--trainer.precision 32-true")
    if dali_gpu:
        asks.append("data backend dali with dali_device: gpu")
        overrides.append("--data.init_args.backend torchvision")
    return (f"the job asks for {' and '.join(asks)} but this machine has no CUDA GPU; to run it on the CPU add "
            f"{' '.join(overrides)}, or `eca submit` it to a GPU node")


def batch_size_of(batch: Any) -> int:
    """Images in an (images, targets) batch, for ThroughputMonitor."""
    return len(batch[1])


class EcaLightningCLI(LightningCLI):
    """`args` start with the subcommand; with `check` (a subcommand) they do not: the classes are built as that
    subcommand would build them (its arguments, e.g. --ckpt_path, included) and nothing runs (`run=False`)."""

    def __init__(self, args: list[str], check: str | None = None, data_here: bool = True) -> None:
        self.check = check
        self.data_here = data_here  # False: a check away from the data (`eca submit` to SLURM) counts no classes
        self.data_unseen: str | None = None  # why such a check could not count them (checked on the node instead)
        self.run: RunIdentity | None = None  # decided in before_instantiate_classes
        super().__init__(
            model_class=module_class_for(args),
            datamodule_class=ClassificationDataModule,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            # Images/s over the last 20 steps, logged with the other step metrics (W&B, CSV).
            trainer_defaults={"callbacks": [ThroughputMonitor(batch_size_fn=batch_size_of, window_size=20)]},
            parser_kwargs={"exit_on_error": False},  # errors come back as exceptions: main() prints one line
            auto_configure_optimizers=False,
            args=args,
            run=check is None,
        )

    @property
    def command(self) -> str:
        return self.subcommand or str(self.check)

    def _section(self, config: Namespace) -> Namespace:
        """The subcommand's part of a parsed config: all of it when checking (no subcommands)."""
        return config[self.subcommand] if self.subcommand else config

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--extends", type=str | None, default=None,
                            help="a recipe YAML this job file is read on top of (relative to the job file)")
        parser.add_argument("--from_run", type=str | None, default=None,
                            help="the run whose checkpoint --ckpt_path last|best names (a run id); default: this "
                                 "run's own (ECA_RUN_ID), else the job's run with the newest such file")
        parser.add_class_arguments(JobSpec, "job")
        # Built in instantiate_trainer, so that `trainer.enable_checkpointing: false` can leave it out.
        parser.add_class_arguments(ModelCheckpoint, "checkpoint", instantiate=False)
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        if self.model_class is not ImageClassifier:  # a detector: its first metric (box AP) picks the best epoch
            parser.set_defaults({"checkpoint.monitor": "val_box_ap"})
        parser.link_arguments("data", "model.num_classes", compute_fn=self._num_classes, apply_on="instantiate")
        parser.add_argument("--trust_ckpt_hparams", type=bool, default=False,
                            help="score --ckpt_path's own model (its saved model_name, model_kwargs) even where the "
                                 "job names another; by default such a checkpoint is refused")
        parser.add_argument("--force", type=bool, default=False, nargs="?", const=True,
                            help="start a run although the store says another process runs it now (its heartbeat "
                                 "is fresh); by default that is refused")  # fmt: skip
        if self.check:  # what LightningCLI adds to the subcommand's parser: the Trainer method's own arguments
            parser.add_method_arguments(Trainer, self.check, skip=set(self.subcommands()[self.check]))

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, expand_config_args(args) if isinstance(args, list) else args)
        # Before Lightning reads --ckpt_path (it would replace the job's model with the checkpoint's, silently).
        config = self.config.get(self.config.get("subcommand") or "", self.config)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and (Path(ckpt_path).is_file() or Path(ckpt_path).is_dir() and ckpt_path not in ("last", "best")):
            check_ckpt_file(config.ckpt_path, config.model, trust_hparams=config.trust_ckpt_hparams)

    # --- before anything is built: fill run-specific defaults, refuse what cannot work ----------------------------
    def before_instantiate_classes(self) -> None:
        config = self._section(self.config)
        if config.job.claim:
            from ecaplatform.store.claims import claim_ids

            if config.job.claim not in (known := claim_ids()):
                raise CLIConfigError(f"job.claim: {config.job.claim!r} is not a claim id; known ids look like "
                                     f"{known[0]!r} (`eca claims --json` lists them all)")
        from ecaplatform.store import verification

        ckpt_path = config.get("ckpt_path")
        try:
            check_identifier(config.job.name, "job.name", JOB_NAME_MAX_CHARS)  # it names the job's folder
            verification.heartbeat_timeout_s()  # a bad ECA_HEARTBEAT_TIMEOUT_S fails now, not in a thread
            # Lightning knows "best" only inside the fit that produced it, and its "last" would search one folder.
            model = None if config.trust_ckpt_hparams else {key: config.model.get(key) for key in ARCHITECTURE_HPARAMS}
            self.run = identify(self.command, config.job.name, config.trainer.default_root_dir, ckpt_path,
                                config.get("from_run"), config.checkpoint.dirpath, model, bool(config.get("force")))
        except ValueError as err:
            raise CLIConfigError(str(err)) from None
        if self.run.taken_from is not None:  # last|best: an existing file
            config.ckpt_path = self.run.ckpt_path
            try:
                check_ckpt_file(config.ckpt_path, config.model, trust_hparams=config.trust_ckpt_hparams)
            except (CLIConfigError, CheckpointError) as err:  # the file found is no use: another run's may be
                raise CLIConfigError(f"--ckpt_path {ckpt_path} ({self.run.taken_from}): {err}; or name another run "
                                     "with --from_run <id>") from None  # fmt: skip
            if not self.check:  # `eca submit` says which run it continues itself
                rank_zero_print(f"eca {self.command}: --ckpt_path {ckpt_path}: "
                                f"{self.run.taken_from}: {config.ckpt_path}")
        elif ckpt_path not in LIGHTNING_CKPT_WORDS and not Path(ckpt_path).exists():
            raise CLIConfigError(f"--ckpt_path {ckpt_path} does not exist; give a .ckpt file, 'last' or 'best'")
        if self.command in ("validate", "test") and not ckpt_path and not config.model.checkpoint:
            raise CLIConfigError(
                f"`eca {self.command}` needs weights to score: pass --ckpt_path (one of our .ckpt files, "
                "'last' or 'best') or --model.checkpoint (e.g. a released eca_resnet50_k3557.pth.tar); "
                "it refuses to evaluate randomly initialised weights"
            )

    def _num_classes(self, data: ClassificationDataModule) -> int:
        """The data's class count; a check away from the data builds the model with ImageNet's 1000 instead (the
        head of the released weights): its name and settings are checked all the same."""
        try:
            return data.num_classes
        except DataError as err:
            if self.data_here:
                raise
            self.data_unseen = str(err)
            return 1000

    def resolved_config(self) -> dict[str, Any]:
        """The subcommand's config as plain data, as --print_config shows it, with the linked num_classes."""
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        dumped = dumped[self.subcommand] if self.subcommand else dumped
        dumped["model"]["num_classes"] = None if self.data_unseen else self.model.hparams.num_classes
        dumped.pop("force", None)  # how a start was allowed, not what the run computes: never in its recipe
        return dumped

    def instantiate_trainer(self, **kwargs: Any) -> Trainer | None:
        """The Trainer in the run's own folder (runs/<job>/<run id>/, its default_root_dir), with checkpoints and a
        CSV log there and the run's tracking. No two runs share a file, so a checkpoint's recorded sha256 stays
        true and concurrent runs of one job never race on a log.

        A check builds no Trainer: `eca submit` may run on a login node without the job's GPUs.
        """
        if self.check or self.run is None:
            return None
        if problem := accelerator_problem(self._section(self.config)):  # after the data's own errors, if any
            raise CLIConfigError(problem)
        from ecaplatform.training.integration import tracking_for_run

        config = self.config_init[self.subcommand]
        trainer = config.trainer
        run_dir = str(self.run.folder)
        callbacks = list(trainer.callbacks or []) if isinstance(trainer.callbacks, list) else [trainer.callbacks]
        callbacks = [c for c in callbacks if c is not None]
        if trainer.enable_checkpointing is not False:  # Lightning refuses a ModelCheckpoint when it is False
            dirpath = os.path.join(run_dir, "checkpoints")
            ckpt_path = config.get("ckpt_path")
            if self.subcommand != "fit" and ckpt_path and Path(ckpt_path).is_file():
                # An evaluation writes no checkpoint; where it reads one, the callbacks' saved state fits as it is.
                dirpath = str(Path(ckpt_path).parent)
            callbacks += checkpoint_callbacks(config.checkpoint.as_dict(), dirpath)
        tracking_callbacks, tracking_loggers = tracking_for_run(self.subcommand, self.resolved_config(), config.job,
                                                                run_id=self.run.id, save_dir=run_dir)  # fmt: skip
        logger = trainer.logger
        if logger is False:  # the job logs nothing: the store still records the run
            tracking_loggers = [lg for lg in tracking_loggers if isinstance(lg, StoreLogger)]
        loggers = [] if logger in (None, True, False) else list(logger) if isinstance(logger, list) else [logger]
        if logger in (None, True):  # the config asked for Lightning's default logger: a CSV one under the run folder
            loggers.append(CSVLogger(save_dir=run_dir, name="csv"))
        kwargs["logger"] = [*loggers, *tracking_loggers]
        # Not written into the config: the recorded config (and its hash) stays the same for every run of a job.
        kwargs["default_root_dir"] = run_dir
        # A log file gets lines, not a bar redrawn in place; a bar the config names is kept.
        bar_named = any(isinstance(c, ProgressBar) for c in callbacks)
        if trainer.enable_progress_bar is not False and not bar_named and not sys.stdout.isatty():
            callbacks.append(LogLinesProgressBar())
        # SlurmRequeue does nothing outside SLURM; under it, a preemption checkpoints at a step all ranks agree on.
        callbacks.append(SlurmRequeue())
        built = super().instantiate_trainer(callbacks=[*callbacks, *tracking_callbacks], **kwargs)
        if built.fast_dev_run:  # it swaps every logger for a DummyLogger: the store records the run all the same
            built.loggers = [*built.loggers, *(lg for lg in tracking_loggers if isinstance(lg, StoreLogger))]
        return built

    def after_fit(self) -> None:
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        run = self.run
        assert run is not None
        lines = ["", f"Run {run.id} finished. Where things are:", f"  run folder:  {os.path.abspath(run.folder)}"]
        checkpoints = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        if checkpoints:
            lines.append(f"  checkpoints: {checkpoints[0].dirpath}")
        for checkpoint in checkpoints:  # the best one (by checkpoint.monitor), then the last epoch's
            if checkpoint.monitor and checkpoint.best_model_path:
                score = checkpoint.best_model_score
                shown = f" ({checkpoint.monitor} {float(score):.2f})" if score is not None else ""
                lines.append(f"  best:        {checkpoint.best_model_path}{shown}")
            elif checkpoint.best_model_path:
                lines.append(f"  last:        {checkpoint.best_model_path}")
        for logger in trainer.loggers:
            # W&B's save_dir is only where it makes its wandb/ folder; the store's is the run folder.
            if isinstance(logger, (WandbLogger, StoreLogger)):
                continue
            where = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
            if where is not None:
                lines.append(f"  logs ({type(logger).__name__}): {os.path.abspath(where)}")
        wandb_run = next((lg.wandb_location for lg in trainer.loggers if isinstance(lg, StoreLogger)), None)
        if wandb_run is not None:
            mode, where = wandb_run
            if mode == "offline":
                lines.append(f"  W&B run:     {os.path.abspath(where)} (offline; `wandb sync {where}` uploads it)")
            else:
                lines.append(f"  W&B run:     {where}")
        if checkpoints:
            lines.append(f"  resume:      eca fit --config <this job> --ckpt_path last --from_run {run.id}")
            lines.append(f"  evaluate:    eca validate --config <this job> --ckpt_path best --from_run {run.id}")
        print("\n".join(lines), flush=True)


def checkpoint_callbacks(options: dict[str, Any], default_dirpath: str) -> list[ModelCheckpoint]:
    """The job's `checkpoint:` callback (best.ckpt by val top-1) and, for `save_last`, a second one that writes
    last.ckpt at the end of EVERY epoch. Lightning 2.6's own save_last writes last.ckpt only when a top-k file
    is written too, so it would hold the best epoch, and `--ckpt_path last` would redo the epochs after it."""
    options = {**options, "dirpath": options.get("dirpath") or default_dirpath}
    save_last = options.pop("save_last", None)
    callbacks = [ModelCheckpoint(**options, save_last=False)]
    if save_last:
        callbacks.append(ModelCheckpoint(dirpath=options["dirpath"], filename=ModelCheckpoint.CHECKPOINT_NAME_LAST,
                                         monitor=None, save_top_k=1, enable_version_counter=False))  # fmt: skip
    return callbacks


def check_job(config_path: str | os.PathLike[str], subcommand: str, overrides: Sequence[str] = (),
              data_here: bool = True) -> tuple[JobSpec, dict[str, Any], str | None]:
    """Parse a job for `subcommand` and build its model and data module as `eca <subcommand>` would, then stop.
    Returns the job section, the resolved config (as --print_config shows it) and, where `data_here` is False, why
    the data could not be read here (None: it could; its model.num_classes is then None in the config).

    Raises one of USER_ERRORS or CLIConfigError with a message fit for one line (see `user_message`).
    """
    if subcommand not in COMMANDS:
        raise CLIConfigError(f"unknown subcommand {subcommand!r}; use one of {', '.join(COMMANDS)}")
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    try:
        cli = EcaLightningCLI(args=["--config", str(config_path), *overrides], check=subcommand, data_here=data_here)
        return cli.config_init.job, cli.resolved_config(), cli.data_unseen
    except Exception as err:
        raise (find_user_error(err) or err) from None


def find_user_error(err: BaseException) -> BaseException | None:
    """The error a user can act on: `err` itself or one it was raised from (jsonargparse wraps what a class
    raises while it builds a data module in its own ValueError)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (*USER_ERRORS, CLIConfigError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def user_message(err: BaseException) -> str:
    """One line saying what is wrong: jsonargparse's multi-line type errors and DataLoader workers' traceback
    text reduced to the part that names the key or file."""
    text = str(err).strip()
    # Checked (run=False: no subcommand), an unknown key is named within its group; `eca <command>` names it whole.
    text = re.sub(r"^Group '([^']+)' does not accept option '", r"Group '\1' does not accept option '\1.", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(err).__name__]
    if "Original Traceback" in text:  # a DataLoader worker's error: its last line holds the message
        head, _, tail = lines[-1].partition(": ")
        return tail if tail and head.endswith("Error") else lines[-1]
    # jsonargparse: 'Parser key "k":', then a "- ..." line per type it tried (None's is no help), the value given.
    details = [" ".join(lines[i:i + 2 + lines[i + 1].endswith(":")])[2:] if line.endswith(":") and i + 1 < len(lines)
               else line[2:] for i, line in enumerate(lines) if line.startswith("- ") and "NoneType" not in line]
    details += [line for line in lines if line.startswith("Given value:") and len(line) < 100]
    return f"{lines[0].rstrip(':')}: {'; '.join(details)}" if details else " ".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run `fit`, `validate` or `test` (argv[0]) with LightningCLI options; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(f"usage: eca {{{','.join(COMMANDS)}}} --config jobs/X.yaml [options]", file=sys.stderr)
        return 2
    silence_known_noise()
    # `eca` hands over sys.argv[1:] explicitly; Lightning warns when args and sys.argv are both set.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    # Intended: the classifier normalises uint8 batches on the device whatever the data module.
    warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")
    try:
        EcaLightningCLI(args=args)
    except SIGTERMException:  # a SystemExit without a code: the run was stopped, it did not finish
        return 128 + signal.SIGTERM
    except SystemExit as exit_:  # --help, --print_config
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception as err:
        found = find_user_error(err)
        if found is None:
            raise
        print(f"eca {args[0]}: error: {user_message(found)}", file=sys.stderr)
        return 2 if isinstance(found, ArgumentError) else 1  # 2: the command line or config, as argparse does
    return 0


if __name__ == "__main__":
    sys.exit(main())
