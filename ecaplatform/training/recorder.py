"""RunRecorder: the hooks of a run that a Logger does not get, for the StoreLogger (store_logger.py): its start, with
its provenance; its results; how it stopped (an exception, a SLURM requeue); its id in checkpoints.

Only global rank 0 writes. Each write is its own committed transaction, so a crash keeps every finished epoch. The
run id is decided before the Trainer exists (ecaplatform.training.run), is the same on every rank and node (rank 0's,
broadcast at setup), and is saved in the checkpoint, so `fit --ckpt_path last` and a SLURM requeue continue the same
record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl

from ecaplatform.store import writes
from ecaplatform.store.outcomes import Outcomes, OutcomesError
from ecaplatform.training import provenance
from ecaplatform.training.jobspec import JobSpec
from ecaplatform.training.run import CHECKPOINT_KEY
from ecaplatform.training.store_logger import StoreLogger, finite

log = logging.getLogger(__name__)

RESULT_SPLITS = {"fit": "val", "validate": "val", "test": "test"}


def find(config: Mapping[str, Any], section: str, key: str) -> Any:
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


def _fingerprint(datamodule: Any, split: str) -> dict[str, Any]:
    if not hasattr(datamodule, "fingerprint"):
        return {}
    try:
        return dict(datamodule.fingerprint(split))
    except Exception as exc:  # a missing fingerprint must not kill a finished evaluation
        log.warning("could not fingerprint the %s split: %s", split, exc)
        return {"error": str(exc)}


def class_names(datamodule: Any, fingerprint: Mapping[str, Any]) -> list[str] | None:
    """The data module's class names in class-index order (ImageFolder's sorted folder names), or None where it
    has none or they do not match the fingerprint's class count."""
    names = getattr(datamodule, "classes", None)
    if not isinstance(names, (list, tuple)) or len(names) != fingerprint.get("num_classes"):
        return None
    return [str(name) for name in names]


def result_metric_names(pl_module: Any) -> tuple[str, ...]:
    """The metrics a module's results carry (logged as `<split>_<name>`): the detector's box/mask AP, else top-1/5."""
    return tuple(getattr(pl_module, "result_metric_names", None) or ("top1", "top5"))


def weights_source(pl_module: Any) -> dict[str, Any]:
    """What a module's weights started from, where it says (the detector: its ImageNet backbone file and sha256, or
    the released detector), kept with the run's config as its provenance."""
    source = getattr(pl_module, "weights_source", None)
    return {"weights_source": provenance.jsonable(source)} if source else {}


def _guarded(what: str, read: Callable[[], Any]) -> Any:
    """read(), or None where it raises: what a data module or module cannot say must not lose a result."""
    try:
        return read()
    except Exception as exc:
        log.warning("could not %s: %s", what, exc)
        return None


class RunRecorder(pl.Callback):
    def __init__(self, store: StoreLogger, config: dict[str, Any] | None = None, job: JobSpec | None = None) -> None:
        if store.command not in RESULT_SPLITS:
            raise ValueError(f"command {store.command!r}: the recorder records one of {sorted(RESULT_SPLITS)}")
        self.store, self.status, self.command = store, store.status, store.command
        self.config = provenance.jsonable(config or {})
        self.job = job or JobSpec()

    @property
    def state_key(self) -> str:
        return CHECKPOINT_KEY

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.status.run_id}

    def _model_name(self, pl_module: pl.LightningModule) -> str:
        hparams = getattr(pl_module, "hparams", {}) or {}
        name = hparams.get("model_name") or find(self.config, "model", "model_name")
        return str(name) if name else type(pl_module).__name__

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            # Processes started apart (one per node, by hand or torchrun) each made up an id: rank 0's counts.
            self.status.run_id = trainer.strategy.broadcast(self.status.run_id, src=0)
        if trainer.local_rank == 0:  # one line per node, so every node's log says which run it belongs to
            where = f" (node {trainer.node_rank} of {trainer.num_nodes})" if trainer.num_nodes > 1 else ""
            print(f"eca {self.command}: recording run {self.status.run_id}{where}", flush=True)

    def _begin(self, trainer: pl.Trainer, pl_module: pl.LightningModule, command: str) -> None:
        if command != self.command or not trainer.is_global_zero or self.status.started:
            return
        commit, dirty = provenance.git_state()
        device = trainer.strategy.root_device
        accelerator = device.type
        if device.type == "cuda":
            import torch

            accelerator = f"cuda:{torch.cuda.get_device_name(device)}"
        self.status.start(
            job_name=self.job.name, claim_id=self.job.claim, command=self.command,
            model_name=self._model_name(pl_module), dataset_name=getattr(trainer.datamodule, "dataset_name", None),
            git_commit=commit, git_dirty=dirty, config_hash=provenance.config_hash(self.config),
            config={**self.config, **weights_source(pl_module)},
            versions=provenance.library_versions(), host=provenance.hostname(), accelerator=accelerator[:64],
            num_nodes=trainer.num_nodes, world_size=trainer.world_size, **self.store.wandb_fields(),
        )  # fmt: skip

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._begin(trainer, pl_module, "fit")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._begin(trainer, pl_module, "validate")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._begin(trainer, pl_module, "test")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._add_result(trainer, pl_module, "validate")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._add_result(trainer, pl_module, "test")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if f"val_{result_metric_names(pl_module)[0]}" in trainer.callback_metrics:
            self._add_result(trainer, pl_module, "fit")  # the final validation of the trained model

    def _add_result(self, trainer: pl.Trainer, pl_module: pl.LightningModule, command: str) -> None:
        if command != self.command or not trainer.is_global_zero or not self.status.started:
            return
        split, datamodule = RESULT_SPLITS[command], trainer.datamodule
        metrics = finite(trainer.callback_metrics)
        exact = getattr(pl_module, "eval_metrics", None)  # a module's own full-precision values, where it keeps them
        metrics.update(finite(exact(split)) if callable(exact) else {})
        fingerprint = _fingerprint(datamodule, split)
        pipeline = getattr(datamodule, "pipeline", None)
        pipeline = _guarded(f"tell the {split} split's input pipeline", lambda: pipeline(split)) if pipeline else None
        samples = metrics.get(f"{split}_samples")
        fields: dict[str, Any] = dict(
            model_name=self._model_name(pl_module),
            dataset=fingerprint.get("dataset") or getattr(datamodule, "dataset_name", None) or "unknown",
            split=split, metrics={name: metrics.get(f"{split}_{name}") for name in result_metric_names(pl_module)},
            loss=metrics.get(f"{split}_loss"), samples_evaluated=int(round(samples)) if samples is not None else 0,
            fingerprint=fingerprint, pipeline=str(pipeline)[:32] if pipeline else None,
            class_names=_guarded(f"tell the {split} split's class names", lambda: class_names(datamodule, fingerprint)),
        )  # fmt: skip
        getter = getattr(pl_module, "eval_outcomes", None)  # ImageClassifier's, from its EvalOutcomes metric
        outcomes = _guarded(f"collect the {split} split's per-image outcomes", lambda: whole_split_outcomes(
            getter(split), fields["samples_evaluated"], fingerprint)) if callable(getter) else None  # fmt: skip
        try:
            writes.add_result(self.status.engine, self.status.run_id, **fields, outcomes=outcomes)
        except OutcomesError as exc:  # outcomes that are not the result's own: keep the result, drop them
            log.warning("the %s result is stored without its per-image outcomes, which disagree with it: %s",
                        split, exc)  # fmt: skip
            writes.add_result(self.status.engine, self.status.run_id, **fields)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.store.stopped(exception)

    def on_slurm_requeued(self, trainer: pl.Trainer, signum: int) -> None:
        """SLURM preempted the job and requeued it (ecaplatform.training.slurm_requeue; the checkpoint is written)."""
        self.status.requeued(f"epoch {trainer.current_epoch}, step {trainer.global_step}", signum)
