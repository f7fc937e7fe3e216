"""The LightningModule: a registry network + the paper's training recipe + exact top-1/top-5 per split.

- The network comes from `ecaplatform.models.create_model(model_name, num_classes, checkpoint, **model_kwargs)`;
  `save_hyperparameters` stores those arguments, so a checkpoint rebuilds itself (`load_from_checkpoint`).
- Batches arrive as uint8 images; `on_after_batch_transfer` converts and normalises them on the device.
- Metrics are torchmetrics objects per split, synchronised only once, in `compute()` at epoch end: ranks with
  uneven batch counts (exact DDP evaluation) never meet in a per-step collective. Accuracies are percent.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from ecaplatform.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

Schedule = Literal["step", "exponential", "cosine", "constant"]
METRIC_SPLITS = ("train", "val", "test")  # ModuleDict keys get a "_metrics" suffix: "train" is taken


class ModelConfigError(ValueError):
    """A model or optimisation setting that cannot work; the message names the setting and what is allowed."""


@dataclass
class LrSchedule:
    """Learning-rate factor per optimizer step (a LambdaLR callable; its fields are saved in checkpoints).

    step: x step_gamma every step_size epochs (ResNets: x0.1 every 30); exponential: x exp_gamma every epoch
    (MobileNetV2: x0.98); cosine: half a cosine from 1 to min_factor over the run. Any schedule may start with a
    linear warm-up from warmup_start_factor over warmup_steps.
    """

    kind: str
    steps_per_epoch: int
    total_steps: int
    step_size: int = 30
    step_gamma: float = 0.1
    exp_gamma: float = 0.98
    warmup_steps: int = 0
    warmup_start_factor: float = 0.1
    min_factor: float = 0.0

    def __call__(self, step: int) -> float:
        epoch = step // max(1, self.steps_per_epoch)
        if self.kind == "step":
            factor = self.step_gamma ** (epoch // self.step_size)
        elif self.kind == "exponential":
            factor = self.exp_gamma**epoch
        elif self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            factor = self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            factor = 1.0
        if step < self.warmup_steps:
            factor *= self.warmup_start_factor + (1.0 - self.warmup_start_factor) * step / self.warmup_steps
        return factor


def _split_metrics(num_classes: int) -> nn.ModuleDict:
    return nn.ModuleDict(
        {
            "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            "loss": MeanMetric(),
            "samples": SumMetric(),
        }
    )


def build_network(
    model_name: str, num_classes: int, checkpoint: str | None, model_kwargs: dict[str, Any] | None
) -> nn.Module:
    """create_model with the registry's errors turned into ModelConfigError (the CLI prints them cleanly)."""
    from ecaplatform.models import create_model, list_models

    if model_name not in list_models():
        raise ModelConfigError(f"unknown model {model_name!r}; registered models: {', '.join(list_models())}")
    if checkpoint is not None:
        from pathlib import Path

        if not Path(checkpoint).expanduser().is_file():
            raise ModelConfigError(f"model checkpoint {checkpoint} does not exist; give the path of a .pth.tar/.ckpt")
        checkpoint = str(Path(checkpoint).expanduser())
    try:
        return create_model(model_name, num_classes=num_classes, checkpoint=checkpoint, **(model_kwargs or {}))
    except (TypeError, ValueError, KeyError) as err:
        raise ModelConfigError(f"cannot build {model_name!r}: {err}") from err


class ImageClassifier(L.LightningModule):
    """Image classification with a registered network, SGD and the paper's learning-rate schedules.

    Args:
        model_name: a registered model (`eca models` lists them), e.g. "eca_resnet50".
        num_classes: classifier outputs (1000 for ImageNet); must match the data.
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
        if lr_schedule not in ("step", "exponential", "cosine", "constant"):
            raise ModelConfigError(
                f"lr_schedule {lr_schedule!r} is not one of: step, exponential, cosine, constant"
            )
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
        self._throughput_start: float | None = None
        self._throughput_end = 0.0
        self._throughput_images = 0

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

    # --- checks that need the data -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_classes = getattr(datamodule, "num_classes", None)
        if isinstance(data_classes, int) and data_classes != self.hparams.num_classes:
            raise ModelConfigError(
                f"model.num_classes is {self.hparams.num_classes} but the data "
                f"({getattr(datamodule, 'dataset_name', type(datamodule).__name__)}) has {data_classes} classes; "
                f"set model.num_classes: {data_classes}"
            )

    # --- steps -------------------------------------------------------------------------------------------------
    def _update_metrics(self, split: str, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        metrics = self.metrics[f"{split}_metrics"]
        logits = logits.detach().float()
        metrics["top1"].update(logits, targets)
        metrics["top5"].update(logits, targets)
        metrics["loss"].update(loss.detach().float(), weight=targets.numel())
        metrics["samples"].update(torch.tensor(float(targets.numel()), device=logits.device))

    def _log_epoch_metrics(self, split: str) -> None:
        metrics = self.metrics[f"{split}_metrics"]
        if metrics["samples"].update_count == 0 and not torch.distributed.is_initialized():
            return
        values = {
            f"{split}_top1": metrics["top1"].compute() * 100.0,
            f"{split}_top5": metrics["top5"].compute() * 100.0,
            f"{split}_loss": metrics["loss"].compute(),
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
        self._throughput_images += targets.numel()
        return loss

    def _eval_step(self, split: str, batch: Any) -> None:
        images, targets = batch
        logits = self(images)
        loss = F.cross_entropy(logits.float(), targets)
        self._update_metrics(split, logits, targets, loss)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # --- throughput: training images per second over the epoch's batches (validation excluded) -------------------
    def on_train_epoch_start(self) -> None:
        self._throughput_start = None
        self._throughput_images = 0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._throughput_start is None:
            self._throughput_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.trainer.num_training_batches - 1 and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the GPU queue must drain before the last timestamp
        self._throughput_end = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")
        if self._throughput_start is not None and self._throughput_end > self._throughput_start:
            elapsed = self._throughput_end - self._throughput_start
            # Training ranks see equal shares (DistributedSampler), so the global rate is world_size x ours.
            self.log("train_throughput", self._throughput_images * self.trainer.world_size / elapsed)

    # --- optimisation ------------------------------------------------------------------------------------------
    def _schedule_lengths(self) -> tuple[int, int]:
        """(optimizer steps per epoch, total optimizer steps) of this run; 0 where not known yet."""
        total = self.trainer.estimated_stepping_batches  # inf when the run has no epoch limit
        total = int(total) if math.isfinite(total) else max(0, self.trainer.max_steps)
        batches = self.trainer.num_training_batches  # inf until the train loader is set up
        accumulate = max(1, self.trainer.accumulate_grad_batches)
        per_epoch = math.ceil(batches / accumulate) if math.isfinite(batches) else 0
        return per_epoch, total

    def on_train_start(self) -> None:
        # The loader is set up now: make sure the schedule knows the epoch length even when
        # configure_optimizers ran before it was (e.g. a run bounded by max_steps only).
        steps_per_epoch, total_steps = self._schedule_lengths()
        hp = self.hparams
        for config in self.trainer.lr_scheduler_configs:
            for schedule in getattr(config.scheduler, "lr_lambdas", []):
                if isinstance(schedule, LrSchedule) and steps_per_epoch:
                    schedule.steps_per_epoch = steps_per_epoch
                    schedule.total_steps = total_steps
                    schedule.warmup_steps = round(hp.warmup_epochs * steps_per_epoch)
        if hp.lr_schedule == "cosine" and total_steps <= 0:
            raise ModelConfigError("lr_schedule cosine needs a finite run: set trainer.max_epochs or max_steps")

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.SGD(
            self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=hp.nesterov
        )
        steps_per_epoch, total_steps = self._schedule_lengths()
        schedule = LrSchedule(
            kind=hp.lr_schedule,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            step_size=hp.step_size,
            step_gamma=hp.step_gamma,
            exp_gamma=hp.exp_gamma,
            warmup_steps=round(hp.warmup_epochs * steps_per_epoch),
            warmup_start_factor=hp.warmup_start_factor,
            min_factor=hp.min_lr_factor,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
