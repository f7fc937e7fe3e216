"""The detection LightningModule: a registered torchvision detector over our ResNets + MMDetection's 1x recipe +
COCO box (and mask) AP, scored exactly once per image by CocoMetric.

The same training glue as the classifier (store logger, run identity, requeue, results): only the network, the
loss (the detector's own) and the metrics differ. Batches are the COCO data module's (a list of uint8 images at
their original size, torchvision's targets); the detector resizes, normalises and pads them on the device.
Results are percent, as the paper prints AP (38.0, not 0.380).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import nn

from ecaplatform.training.classifier import SGD, LRSchedule, ModelConfigError, _plain
from ecaplatform.training.coco_metric import PREFIXES, STATS, CocoMetric

# MMDetection v1's 1x schedule: lr 0.01 for batch 8 (0.02 per 16 images), x0.1 after epochs 8 and 11, linear
# warm-up over 500 iterations from a third of the rate; gradients clipped at norm 35 (the recipe's trainer).
DETECTION_SGD = SGD(lr=0.01, momentum=0.9, weight_decay=1e-4)
DETECTION_SCHEDULE = LRSchedule(kind="multistep", milestones=(8, 11), warmup_steps=500, warmup_start_factor=1 / 3)
EVAL_SPLITS = ("val", "test")


def iou_types_of(detector: nn.Module) -> tuple[str, ...]:
    """What a detector's outputs can be scored on: boxes, and masks where it has a mask head."""
    heads = getattr(detector, "roi_heads", None)  # RetinaNet has none
    return ("bbox", "segm") if heads is not None and heads.has_mask() else ("bbox",)


def run_checkpoint(run_id: str) -> str:
    """The checkpoint file one of our runs kept (`model.backbone_run`), read from the run store."""
    from sqlalchemy.orm import Session

    from ecaplatform.store.database import Store
    from ecaplatform.store.schema import Run

    store = Store.from_env()
    engine = store.open_reader()
    try:
        with Session(engine) as session:
            run = session.get(Run, run_id)
    finally:
        engine.dispose()
    if run is None:
        raise ModelConfigError(f"model.backbone_run {run_id}: no such run in {store.display_url} (`eca runs`)")
    if not run.checkpoint_path or not Path(run.checkpoint_path).is_file():
        kept = run.checkpoint_path or "none recorded"
        raise ModelConfigError(f"model.backbone_run {run_id}: its checkpoint ({kept}) is not on this machine; give "
                               "the file as model.backbone_checkpoint")
    return run.checkpoint_path


def build_detector_network(model_name: str, num_classes: int, checkpoint: str | None,
                           backbone_checkpoint: str | None, model_kwargs: dict[str, Any] | None,
                           ) -> tuple[nn.Module, dict[str, Any]]:  # fmt: skip
    """The detector and what its weights started from (the run's provenance). `checkpoint`: a released MMDetection
    v1 detector (loaded strictly, in v1's box convention); else `backbone_checkpoint`: ImageNet weights for the
    backbone (a released .pth.tar or one of our classification .ckpt files); neither: random, with a warning."""
    from ecaplatform.models import CheckpointError
    from ecaplatform.models.checkpoint import read_checkpoint
    from ecaplatform.models.detection import create_detector, init_backbone, load_mmdet_v1_state_dict
    from ecaplatform.models.detection.mmdet_v1 import v1_state_dict

    kwargs = dict(model_kwargs or {})
    try:
        if checkpoint is not None:
            network = create_detector(model_name, num_classes, mmdet_v1_boxes=True, **kwargs)
            source = f"checkpoint {checkpoint!r}"
            load_mmdet_v1_state_dict(network, v1_state_dict(read_checkpoint(checkpoint), source),
                                     network.detector, source)  # fmt: skip
            return network, {"detector": checkpoint}
        network = create_detector(model_name, num_classes, **kwargs)
        return network, {"backbone": asdict(init_backbone(network, backbone_checkpoint))}
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError) as err:  # unknown model, a classifier's name, bad k_size
        raise ModelConfigError(f"cannot build detector {model_name!r}: {err}") from err


class ObjectDetector(L.LightningModule):
    """COCO detection / instance segmentation with a registered detector (`eca models --task detection`).

    Args:
        model_name: e.g. "faster_rcnn_eca_resnet50_fpn", "mask_rcnn_se_resnet101_fpn", "retinanet_resnet50_fpn".
        num_classes: object categories (80 for COCO), linked to the data module's.
        checkpoint: a released MMDetection v1 detector to evaluate (verify jobs).
        backbone_checkpoint: ImageNet classification weights for the backbone (the paper's start); None: random.
        backbone_run: one of our classification runs (an id in the run store) whose checkpoint is the backbone's.
        model_kwargs: passed to the detector's builder (k_size, min_size, max_size, ...).
        optimizer, schedule: SGD and the learning-rate schedule (MMDetection's 1x by default).
        evaluator: COCOeval's implementation: pycocotools (the reference) or faster_coco_eval (same numbers).
    """

    result_metric_names: tuple[str, ...] = ()  # set per instance: what a result of this module carries

    def __init__(
        self,
        model_name: str = "faster_rcnn_eca_resnet50_fpn",
        num_classes: int = 80,
        checkpoint: str | None = None,
        backbone_checkpoint: str | None = None,
        backbone_run: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: SGD = DETECTION_SGD,
        schedule: LRSchedule = DETECTION_SCHEDULE,
        evaluator: Literal["pycocotools", "faster_coco_eval"] = "pycocotools",
    ) -> None:
        super().__init__()
        optimizer, schedule = _plain(SGD, optimizer), _plain(LRSchedule, schedule)
        self.save_hyperparameters()
        if backbone_run is not None:
            if backbone_checkpoint is not None:
                raise ModelConfigError("give model.backbone_checkpoint or model.backbone_run, not both")
            backbone_checkpoint = run_checkpoint(backbone_run)
        self.model, self.weights_source = build_detector_network(
            model_name, num_classes, checkpoint, backbone_checkpoint, model_kwargs)  # fmt: skip
        self.iou_types = iou_types_of(self.model)
        self.result_metric_names = tuple(f"{PREFIXES[t]}_{s}" for t in self.iou_types for s in STATS)
        self.coco_metrics = nn.ModuleDict()  # per evaluated split; needs the data module's annotations (setup)
        self._scores: dict[str, dict[str, float]] = {}  # the last evaluation's, in float64: what results keep

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if "segm" in self.iou_types and stage == "fit" and not getattr(datamodule, "masks", False):
            raise ModelConfigError(f"{self.hparams.model_name} trains on instance masks: set data.masks: true")
        for split in EVAL_SPLITS:
            if split not in self.coco_metrics:
                self.coco_metrics[split] = CocoMetric(datamodule.annotation_file(split), datamodule.category_ids,
                                                      self.iou_types, backend=self.hparams.evaluator)  # fmt: skip

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, targets = batch
        return [image.float().div_(255.0) for image in images], targets  # the detector normalises 0..1 images

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.model(images)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        size = len(images)
        self.log("train_loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        self.log_dict({f"train_{name}": value.detach() for name, value in losses.items()}, on_step=False,
                      on_epoch=True, sync_dist=True, batch_size=size)  # fmt: skip
        self.log("train_loss", loss.detach(), on_step=False, on_epoch=True, sync_dist=True, batch_size=size)
        return loss

    def _eval_step(self, split: str, batch: Any) -> None:
        if self.trainer.sanity_checking:  # a sanity check's few images are no evaluation
            return
        images, targets = batch
        self.coco_metrics[split].update(self.model(images), targets)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _end_eval_epoch(self, split: str) -> None:
        metric = self.coco_metrics[split]
        if self.trainer.sanity_checking:
            metric.reset()
            return
        values = metric.compute()  # every rank: it gathers, rank 0 scores once, every rank gets the numbers
        metric.reset()
        # COCOeval's -1 means "no object of that size in the split": no value, not a score of -100.
        scores = {f"{split}_{name}": values[name] * 100.0 for name in self.result_metric_names if values[name] >= 0}
        self._scores[split] = {**scores, f"{split}_samples": values["images"]}
        first = f"{split}_{self.result_metric_names[0]}"  # box AP in the progress bar, all of them in the logs
        self.log_dict({name: value for name, value in self._scores[split].items() if name != first})
        self.log(first, scores.get(first, 0.0), prog_bar=True)  # the same on every rank: no sync needed

    def eval_metrics(self, split: str) -> dict[str, float]:
        """The split's last evaluation as COCOeval computed it (float64; the logged copies are float32)."""
        return dict(self._scores.get(split, {}))

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch("test")

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]  # the frozen stem and stage 1 stay out
        optimizer = torch.optim.SGD(params, **self.hparams.optimizer)
        schedule = LRSchedule(**self.hparams.schedule)
        total = self.trainer.estimated_stepping_batches
        batches = self.trainer.num_training_batches
        steps_per_epoch = max(1, math.ceil(batches / max(1, self.trainer.accumulate_grad_batches)))
        scheduler = schedule.scheduler(optimizer, steps_per_epoch, int(total) if math.isfinite(total) else 0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
