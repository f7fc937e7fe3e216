"""The LightningModule: a registry network + the paper's training recipe + exact top-1/top-5 per split.

- The network comes from `ecaplatform.models.create_model(model_name, num_classes, checkpoint, **model_kwargs)`;
  `save_hyperparameters` stores those arguments, so a checkpoint rebuilds itself (`load_from_checkpoint`).
- The optimizer (`SGD`) and the learning-rate schedule (`LRSchedule`, torch's own schedulers stepped per optimizer
  step: an optional linear warm-up, then step / exponential / cosine / constant) are typed recipe objects: the job
  YAML's `model.optimizer` and `model.schedule`, whose field types jsonargparse enforces in one-line errors.
- Batches arrive as uint8 images; `on_after_batch_transfer` converts and normalises them on the device.
- Metrics are torchmetrics objects per split, synchronised only once, in `compute()` at epoch end: ranks with
  uneven batch counts (exact DDP evaluation) never meet in a per-step collective. Accuracies are percent.
- Validation and test also keep each sample's outcome (true class, top-1 prediction, top-5 right) on the device, in
  an EvalOutcomes metric per split, gathered once at the epoch's end and put in dataset-index order
  (`eval_outcomes`), which the recorder stores with the result.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)
from torch import nn
from torch.optim import lr_scheduler
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassAccuracy

from ecaplatform.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD
from ecaplatform.training.outcomes_metric import EvalOutcomes, loader_order

log = logging.getLogger(__name__)

StartFactor = restricted_number_type("StartFactor", float, [(">", 0), ("<=", 1)])  # LinearLR's (0, 1]
SmoothingFactor = restricted_number_type("SmoothingFactor", float, [(">=", 0), ("<", 1)])
METRIC_SPLITS = ("train", "val", "test")  # ModuleDict keys get a "_metrics" suffix: "train" is taken


class ModelConfigError(ValueError):
    """A model or optimisation setting that cannot work; the message names the setting and what is allowed."""


def _split_metrics(num_classes: int) -> nn.ModuleDict:
    # No argument validation and no NaN checks: each is a `.any()` that makes the CPU wait for the GPU every step
    # (measured on an H100: six such waits per step cost ~12% of a ResNet step). The data modules guarantee labels
    # in range, and a NaN loss shows in the logged loss. The mean loss is loss_sum / samples: MeanMetric drops its
    # weights when its NaN checks are disabled (torchmetrics 1.9).
    return nn.ModuleDict(
        {
            "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro", validate_args=False),
            "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro", validate_args=False),
            "loss_sum": SumMetric(nan_strategy="disable"),
            "samples": SumMetric(nan_strategy="disable"),
        }
    )


def build_network(
    model_name: str, num_classes: int, checkpoint: str | None, model_kwargs: dict[str, Any] | None
) -> nn.Module:
    """create_model with the registry's errors turned into ModelConfigError (the CLI prints them cleanly)."""
    from pathlib import Path

    from ecaplatform.models import create_model

    if checkpoint is not None:
        checkpoint = str(Path(checkpoint).expanduser())
    try:
        return create_model(model_name, num_classes=num_classes, checkpoint=checkpoint, **(model_kwargs or {}))
    except (TypeError, ValueError, KeyError) as err:  # unknown model, bad k_size, missing or unfit checkpoint
        raise ModelConfigError(f"cannot build {model_name!r}: {err}") from err


@dataclass(frozen=True)
class SGD:
    """`model.optimizer`: torch.optim.SGD's settings; the paper's ResNet recipe is 0.1 / 0.9 / 1e-4 / False."""

    lr: PositiveFloat = 0.1
    momentum: NonNegativeFloat = 0.9
    weight_decay: NonNegativeFloat = 1e-4
    nesterov: bool = False

    def __post_init__(self) -> None:  # what no one field's type can say
        if self.nesterov and self.momentum <= 0:
            raise ModelConfigError("model.optimizer.nesterov true needs model.optimizer.momentum > 0")


@dataclass(frozen=True)
class LRSchedule:
    """`model.schedule`, in epochs, applied per optimizer step. kind: step (x step_gamma every step_size epochs;
    ResNets: x0.1 every 30), multistep (x step_gamma after each of `milestones`; detection 1x: 8 and 11),
    exponential (x exp_gamma every epoch; MobileNetV2: x0.98), cosine (to min_lr_factor x lr at the end of the run)
    or constant. A warm-up, where asked for, ramps linearly from warmup_start_factor x lr over warmup_epochs
    (fractions of an epoch allowed) or warmup_steps, and the main schedule starts after it; multistep's, as
    MMDetection's, overlays its first steps instead."""

    kind: Literal["step", "multistep", "exponential", "cosine", "constant"] = "step"
    step_size: PositiveInt = 30
    step_gamma: PositiveFloat = 0.1
    exp_gamma: PositiveFloat = 0.98
    milestones: tuple[PositiveInt, ...] = ()  # multistep: x step_gamma after each of these epochs (detection 1x)
    warmup_epochs: NonNegativeFloat = 0.0
    warmup_steps: NonNegativeInt = 0  # a warm-up in optimizer steps (MMDetection's 500), instead of epochs
    warmup_start_factor: StartFactor = 0.1
    min_lr_factor: ClosedUnitInterval = 0.0

    def scheduler(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                  total_steps: int) -> lr_scheduler.LRScheduler:  # fmt: skip
        """torch schedulers for `optimizer`, stepped once per optimizer step (`total_steps`: the run's, for cosine)."""
        warmup_steps = self.warmup_steps or round(self.warmup_epochs * steps_per_epoch)
        if self.kind == "multistep":  # MMDetection's: the warm-up overlays the first steps; milestones count from 0
            bounds, start = [m * steps_per_epoch for m in self.milestones], self.warmup_start_factor

            def factor(step: int) -> float:
                warm = 1 - (1 - start) * (1 - step / warmup_steps) if step < warmup_steps else 1.0
                return warm * self.step_gamma ** sum(step >= b for b in bounds)

            return lr_scheduler.LambdaLR(optimizer, factor)
        if self.kind == "step":
            main = lr_scheduler.StepLR(optimizer, step_size=self.step_size * steps_per_epoch, gamma=self.step_gamma)
        elif self.kind == "exponential":
            main = lr_scheduler.StepLR(optimizer, step_size=steps_per_epoch, gamma=self.exp_gamma)
        elif self.kind == "cosine":
            eta_min = optimizer.param_groups[0]["lr"] * self.min_lr_factor
            main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=eta_min)
        else:
            main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        if warmup_steps <= 0:
            return main
        warmup = lr_scheduler.LinearLR(optimizer, start_factor=self.warmup_start_factor, total_iters=warmup_steps)
        return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


@dataclass(frozen=True)
class Normalization:
    """`model.normalization`: the per-channel statistics uint8 batches are normalised with on the device."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = IMAGENET_STD


def _plain(kind: type, value: Any) -> dict[str, Any]:
    """A recipe object as the plain dict hparams keep (checkpoints load with weights_only, which takes no class of
    ours); a dict (a checkpoint's hparams) is built into the object first, which checks it."""
    return asdict(value if isinstance(value, kind) else kind(**value))


class ImageClassifier(L.LightningModule):
    """Image classification with a registered network, SGD and the paper's learning-rate schedules.

    Args:
        model_name: a registered model (`eca models` lists them), e.g. "eca_resnet50".
        num_classes: classifier outputs; `eca fit|validate|test` link it to the data module's `num_classes`.
        checkpoint: weights to start from: a released .pth.tar, a state_dict, or one of our .ckpt files.
        model_kwargs: passed to the model constructor (e.g. {"k_size": [3, 5, 5, 7]}).
        optimizer: SGD's settings (see `SGD`).
        schedule: the learning-rate schedule in epochs (see `LRSchedule`).
        label_smoothing: cross-entropy label smoothing for training (0 in the paper).
        channels_last: NHWC memory format (faster convolutions with mixed precision on tensor cores).
        compile: torch.compile the network (state_dict keys are unchanged).
        normalization: mean and std applied on the device to uint8 batches (ImageNet statistics).
    """

    flops_per_batch: int | None = None  # read by Lightning's ThroughputMonitor; None: images/s without MFU

    def __init__(
        self,
        model_name: str = "eca_resnet50",
        num_classes: int = 1000,
        checkpoint: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: SGD = SGD(),
        schedule: LRSchedule = LRSchedule(),
        label_smoothing: SmoothingFactor = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        normalization: Normalization = Normalization(),
    ) -> None:
        super().__init__()
        # Rebound to plain dicts before save_hyperparameters reads them: see _plain.
        optimizer, schedule = _plain(SGD, optimizer), _plain(LRSchedule, schedule)
        normalization = _plain(Normalization, normalization)
        self.save_hyperparameters()
        self.model = build_network(model_name, num_classes, checkpoint, model_kwargs)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if compile:
            self.model.compile()  # in place: parameter names (and checkpoints) stay as they are
        for name, values in normalization.items():  # the buffers `mean` and `std`
            self.register_buffer(name, torch.tensor(values).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.metrics = nn.ModuleDict({f"{split}_metrics": _split_metrics(num_classes) for split in METRIC_SPLITS})
        # Each evaluated image's outcome, per split; the last evaluation's, gathered on global rank 0.
        self.outcomes = nn.ModuleDict({split: EvalOutcomes() for split in ("val", "test")})
        self._outcomes: dict[str, dict[str, np.ndarray] | None] = {"val": None, "test": None}

    # --- data on the device ------------------------------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> normalised float; floating inputs are taken as already normalised."""
        if images.dtype == torch.uint8:
            images = (images.float() - self.mean) / self.std
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, targets = batch[0], batch[1]
        return self.normalize(images), targets

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    # --- steps -------------------------------------------------------------------------------------------------
    def _update_metrics(self, split: str, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        metrics = self.metrics[f"{split}_metrics"]
        logits = logits.detach().float()
        metrics["top1"].update(logits, targets)
        metrics["top5"].update(logits, targets)
        # The count is filled on the device: torch.tensor(n, device=...) would be a blocking host-to-device copy.
        count = torch.full((), float(targets.numel()), device=logits.device)
        metrics["loss_sum"].update(loss.detach().float() * count)
        metrics["samples"].update(count)

    def _log_epoch_metrics(self, split: str) -> None:
        metrics = self.metrics[f"{split}_metrics"]
        if metrics["samples"].update_count == 0 and not torch.distributed.is_initialized():
            return
        values = {
            f"{split}_top1": metrics["top1"].compute() * 100.0,
            f"{split}_top5": metrics["top5"].compute() * 100.0,
            f"{split}_loss": metrics["loss_sum"].compute() / metrics["samples"].compute(),
        }
        if split != "train":
            values[f"{split}_samples"] = metrics["samples"].compute()
        # Already reduced over ranks by torchmetrics; every rank logs the same numbers.
        self.log_dict(values, prog_bar=split == "val")
        for metric in metrics.values():
            metric.reset()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.hparams.label_smoothing)
        self._update_metrics("train", logits, targets, loss)
        self.log("train_loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _eval_step(self, split: str, batch: Any) -> None:
        images, targets = batch
        logits = self(images)
        loss = F.cross_entropy(logits.float(), targets)
        self._update_metrics(split, logits, targets, loss)
        if self._trainer is not None and not self._trainer.sanity_checking:
            self.outcomes[split].update(logits, targets)

    def eval_outcomes(self, split: str) -> dict[str, np.ndarray] | None:
        """Per-image outcomes of the split's last evaluation (sanity checks excluded), on global rank 0: the
        `target`, `predicted`, `top1`, `top5` vectors in the dataset's index order; None elsewhere, or where the
        evaluated samples could not be placed or were a subset."""
        return self._outcomes.get(split)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _end_eval_epoch(self, split: str) -> None:
        outcomes, trainer = self.outcomes[split], self.trainer
        if not trainer.sanity_checking:  # the same on every rank, so all or none meet in the gather
            outcomes.place(loader_order(trainer.val_dataloaders if split == "val" else trainer.test_dataloaders))
            computed = outcomes.compute()  # on every rank: it gathers
            self._outcomes[split] = computed if trainer.is_global_zero else None
        outcomes.reset()
        self._log_epoch_metrics(split)

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch("test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    # --- optimisation ------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.SGD(self.parameters(), **self.hparams.optimizer)
        schedule = LRSchedule(**self.hparams.schedule)
        # Reading estimated_stepping_batches sets up the train loader, so the epoch length is known below.
        total = self.trainer.estimated_stepping_batches  # inf when the run has no epoch or step limit
        if schedule.kind == "cosine" and not math.isfinite(total):
            raise ModelConfigError("model.schedule.kind cosine needs a finite run: set trainer.max_epochs or max_steps")
        batches = self.trainer.num_training_batches
        accumulate = max(1, self.trainer.accumulate_grad_batches)
        steps_per_epoch = max(1, math.ceil(batches / accumulate)) if math.isfinite(batches) else 1
        scheduler = schedule.scheduler(optimizer, steps_per_epoch, int(total) if math.isfinite(total) else 0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
