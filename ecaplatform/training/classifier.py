"""The LightningModule: a registry network + the paper's training recipe + exact top-1/top-5 per split.

- The network comes from `ecaplatform.models.create_model(model_name, num_classes, checkpoint, **model_kwargs)`;
  `save_hyperparameters` stores those arguments, so a checkpoint rebuilds itself (`load_from_checkpoint`).
- The optimizer is SGD and the learning-rate schedule is composed of torch's own schedulers, stepped per
  optimizer step: an optional linear warm-up, then step / exponential / cosine / constant.
- Batches arrive as uint8 images; `on_after_batch_transfer` converts and normalises them on the device.
- Metrics are torchmetrics objects per split, synchronised only once, in `compute()` at epoch end: ranks with
  uneven batch counts (exact DDP evaluation) never meet in a per-step collective. Accuracies are percent.
- Validation and test also keep each sample's outcome (true class, top-1 prediction, top-5 right) on the device;
  at the epoch's end the ranks gather them once, with the dataset indices each rank's loader read, and rank 0 puts
  them in dataset-index order (`eval_outcomes`), which the recorder stores with the result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import lr_scheduler
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassAccuracy

from ecaplatform.datamodules.base import sample_order
from ecaplatform.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

Schedule = Literal["step", "exponential", "cosine", "constant"]
SCHEDULES = ("step", "exponential", "cosine", "constant")
METRIC_SPLITS = ("train", "val", "test")  # ModuleDict keys get a "_metrics" suffix: "train" is taken


# What each rank gathers per evaluated sample (int64 columns), and why a rank cannot place its samples.
OUTCOME_COLUMNS = ("index", "target", "predicted", "top5")
PLACED, SUBSET, UNPLACED = 0, 1, 2


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


def merge_rank_outcomes(gathered: np.ndarray, sizes: Sequence[int]) -> dict[str, np.ndarray]:
    """Every rank's rows (OUTCOME_COLUMNS), padded to one length as all_gather needs them ([world, max rows, 4]),
    -> the outcome vectors in dataset-index order: `target`, `predicted`, `top1`, `top5` (the fields of
    tracking.outcomes.Outcomes). Raises ValueError, saying why, unless the indices are each of range(N) once."""
    if len(sizes) != len(gathered) or any(n < 0 or n > gathered.shape[1] for n in sizes):
        raise ValueError(f"{len(gathered)} ranks gathered {gathered.shape[1]} rows at most, sizes say {list(sizes)}")
    rows = np.concatenate([gathered[rank, :n] for rank, n in enumerate(sizes)]).reshape(-1, len(OUTCOME_COLUMNS))
    index = rows[:, 0]
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], np.arange(len(rows))):
        raise ValueError(f"the {len(rows)} evaluated dataset indices are not each of 0..{len(rows) - 1} once")
    target, predicted, top5 = rows[order, 1], rows[order, 2], rows[order, 3].astype(bool)
    return {"target": target, "predicted": predicted, "top1": predicted == target, "top5": top5}


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


def schedule_for(optimizer: torch.optim.Optimizer, kind: str, steps_per_epoch: int, total_steps: int, *,
                 step_size: int = 30, step_gamma: float = 0.1, exp_gamma: float = 0.98, warmup_steps: int = 0,
                 warmup_start_factor: float = 0.1, min_factor: float = 0.0) -> lr_scheduler.LRScheduler:
    """torch schedulers for one optimizer, to be stepped once per optimizer step.

    step: x step_gamma every step_size epochs (ResNets: x0.1 every 30); exponential: x exp_gamma every epoch
    (MobileNetV2: x0.98); cosine: to min_factor x lr at the end of the run; constant. A warm-up, where asked
    for, ramps linearly from warmup_start_factor x lr over warmup_steps and the main schedule starts after it.
    """
    if kind == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=step_size * steps_per_epoch, gamma=step_gamma)
    elif kind == "exponential":
        main = lr_scheduler.StepLR(optimizer, step_size=steps_per_epoch, gamma=exp_gamma)
    elif kind == "cosine":
        eta_min = optimizer.param_groups[0]["lr"] * min_factor
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=eta_min)
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup_steps <= 0:
        return main
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=warmup_start_factor, total_iters=warmup_steps)
    return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


class ImageClassifier(L.LightningModule):
    """Image classification with a registered network, SGD and the paper's learning-rate schedules.

    Args:
        model_name: a registered model (`eca models` lists them), e.g. "eca_resnet50".
        num_classes: classifier outputs; `eca fit|validate|test` link it to the data module's `num_classes`.
        checkpoint: weights to start from: a released .pth.tar, a state_dict, or one of our .ckpt files.
        model_kwargs: passed to the model constructor (e.g. {"k_size": [3, 5, 5, 7]}).
        lr, momentum, weight_decay, nesterov: SGD; the paper's ResNet recipe is 0.1 / 0.9 / 1e-4 / False.
        lr_schedule: "step" (x step_gamma every step_size epochs), "exponential" (x exp_gamma per epoch),
            "cosine" (to min_lr_factor * lr), or "constant".
        warmup_epochs: linear warm-up from warmup_start_factor * lr (fractions of an epoch allowed).
        label_smoothing: cross-entropy label smoothing for training (0 in the paper).
        channels_last: NHWC memory format (faster convolutions with mixed precision on tensor cores).
        compile: torch.compile the network (state_dict keys are unchanged).
        mean, std: normalisation applied on the device to uint8 batches (ImageNet statistics).
    """

    flops_per_batch: int | None = None  # read by Lightning's ThroughputMonitor; None: images/s without MFU

    def __init__(
        self,
        model_name: str = "eca_resnet50",
        num_classes: int = 1000,
        checkpoint: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        nesterov: bool = False,
        lr_schedule: Schedule = "step",
        step_size: int = 30,
        step_gamma: float = 0.1,
        exp_gamma: float = 0.98,
        warmup_epochs: float = 0.0,
        warmup_start_factor: float = 0.1,
        min_lr_factor: float = 0.0,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if lr_schedule not in SCHEDULES:
            raise ModelConfigError(f"lr_schedule {lr_schedule!r} is not one of: {', '.join(SCHEDULES)}")
        for name, value in (("lr", lr), ("step_gamma", step_gamma), ("exp_gamma", exp_gamma)):
            if not value > 0:
                raise ModelConfigError(f"model.{name} must be positive, got {value}")
        for name, value in (("momentum", momentum), ("weight_decay", weight_decay), ("warmup_epochs", warmup_epochs)):
            if not value >= 0:
                raise ModelConfigError(f"model.{name} must be zero or positive, got {value}")
        if step_size < 1:
            raise ModelConfigError(f"model.step_size is in epochs and must be at least 1, got {step_size}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ModelConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if nesterov and momentum <= 0:
            raise ModelConfigError("nesterov=True needs momentum > 0")
        self.model = build_network(model_name, num_classes, checkpoint, model_kwargs)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if compile:
            self.model.compile()  # in place: parameter names (and checkpoints) stay as they are
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.metrics = nn.ModuleDict({f"{split}_metrics": _split_metrics(num_classes) for split in METRIC_SPLITS})
        # Per evaluated batch, [B, 3] int64 on the device (target, predicted, top5); gathered at the epoch's end.
        self._outcome_rows: dict[str, list[torch.Tensor]] = {"val": [], "test": []}
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
            self._keep_outcomes(split, logits, targets)

    def _keep_outcomes(self, split: str, logits: torch.Tensor, targets: torch.Tensor) -> None:
        # The same float logits and the same ops as the top-1/top-5 metrics (argmax; target among torch.topk's
        # indices), so ties break alike and the outcomes count exactly what the metrics count. Queued device work
        # only: no .item(), no host copy, no collective.
        logits = logits.detach().float()
        targets = targets.long()
        predicted = logits.argmax(dim=1)
        top5 = (logits.topk(min(5, logits.shape[1]), dim=1).indices == targets[:, None]).any(dim=1)
        self._outcome_rows[split].append(torch.stack([targets, predicted, top5.long()], dim=1))

    def _evaluated_indices(self, split: str, count: int) -> tuple[list[int] | None, int]:
        """The dataset indices behind this rank's `count` outcomes, in order, from the loader that ran (not from
        an assumed sampler pattern), and PLACED; or None and why not (SUBSET: limit_*_batches stopped early)."""
        trainer = self.trainer
        loaders = trainer.val_dataloaders if split == "val" else trainer.test_dataloaders
        if isinstance(loaders, (list, tuple)) and len(loaders) == 1:
            loaders = loaders[0]
        order = None if isinstance(loaders, (list, tuple, dict)) or loaders is None else sample_order(loaders)
        if order is None:
            log.warning("rank %d: the %s loader cannot say which samples it read", trainer.global_rank, split)
            return None, UNPLACED
        if count < len(order):
            return None, SUBSET
        if count != len(order):
            log.warning("rank %d: %d %s outcomes for %d indices read", trainer.global_rank, count, split, len(order))
            return None, UNPLACED
        return order, PLACED

    def _gather_outcomes(self, split: str) -> dict[str, np.ndarray] | None:
        """All ranks' outcomes of the epoch, exactly once each, in dataset-index order on global rank 0 (None on
        the other ranks, and wherever the samples cannot be placed). Every rank must call it: it all_gathers."""
        rows, self._outcome_rows[split] = self._outcome_rows[split], []
        local = torch.cat(rows) if rows else torch.empty((0, 3), dtype=torch.long, device=self.device)
        indices, status = self._evaluated_indices(split, len(local))
        index = torch.tensor(indices if indices is not None else [-1] * len(local), dtype=torch.long)
        local = torch.cat([index.to(local.device)[:, None], local], dim=1)
        trainer = self.trainer
        if trainer.world_size > 1:
            # Ranks hold different counts (rank::world_size): gather the counts, pad to the longest, gather, unpad.
            head = torch.tensor([len(local), status], dtype=torch.long).to(local.device)
            heads = trainer.strategy.all_gather(head).view(-1, 2).tolist()  # the epoch's one wait for the device
            sizes, statuses = [n for n, _ in heads], [s for _, s in heads]
            padded = torch.full((max(sizes), local.shape[1]), -1, dtype=torch.long, device=local.device)
            padded[: len(local)] = local
            gathered = trainer.strategy.all_gather(padded)
        else:
            sizes, statuses, gathered = [len(local)], [status], local[None]
        if not trainer.is_global_zero:
            return None  # only rank 0 records results
        if SUBSET in statuses:
            log.info("the %s evaluation covered a subset of the split: no per-image outcomes", split)
            return None
        if UNPLACED in statuses:
            log.warning("no per-image %s outcomes: rank(s) %s could not say which samples they evaluated", split,
                        [rank for rank, s in enumerate(statuses) if s == UNPLACED])  # fmt: skip
            return None
        try:
            return merge_rank_outcomes(gathered.cpu().numpy(), sizes)
        except ValueError as err:
            log.warning("no per-image %s outcomes: %s", split, err)
            return None

    def eval_outcomes(self, split: str) -> dict[str, np.ndarray] | None:
        """Per-image outcomes of the split's last evaluation (sanity checks excluded), on global rank 0: the
        `target`, `predicted`, `top1`, `top5` vectors in the dataset's index order; None elsewhere, or where the
        evaluated samples could not be placed or were a subset."""
        return self._outcomes.get(split)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _start_eval_epoch(self, split: str) -> None:
        self._outcome_rows[split] = []
        self._outcomes[split] = None  # a failed gather must not leave an earlier epoch's outcomes behind

    def _end_eval_epoch(self, split: str) -> None:
        if not self.trainer.sanity_checking:  # the same on every rank, so all or none meet in the gather
            self._outcomes[split] = self._gather_outcomes(split)
        self._log_epoch_metrics(split)

    def on_validation_epoch_start(self) -> None:
        self._start_eval_epoch("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval_epoch("test")

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch("test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    # --- optimisation ------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.SGD(
            self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=hp.nesterov
        )
        # Reading estimated_stepping_batches sets up the train loader, so the epoch length is known below.
        total = self.trainer.estimated_stepping_batches  # inf when the run has no epoch or step limit
        if hp.lr_schedule == "cosine" and not math.isfinite(total):
            raise ModelConfigError("lr_schedule cosine needs a finite run: set trainer.max_epochs or max_steps")
        batches = self.trainer.num_training_batches
        accumulate = max(1, self.trainer.accumulate_grad_batches)
        steps_per_epoch = max(1, math.ceil(batches / accumulate)) if math.isfinite(batches) else 1
        total_steps = int(total) if math.isfinite(total) else 0
        scheduler = schedule_for(
            optimizer, hp.lr_schedule, steps_per_epoch, total_steps, step_size=hp.step_size,
            step_gamma=hp.step_gamma, exp_gamma=hp.exp_gamma, warmup_steps=round(hp.warmup_epochs * steps_per_epoch),
            warmup_start_factor=hp.warmup_start_factor, min_factor=hp.min_lr_factor,
        )  # fmt: skip
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
