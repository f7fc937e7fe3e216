"""The GPU paths: mixed precision, channels_last, device-side normalisation and exact evaluation on CUDA.

These skip (with the reason shown by `-ra`) on machines without CUDA, such as CI's; run them on a GPU node with
`pytest -m gpu`.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from ecaplatform.datamodules import ImageNetDataModule, SyntheticDataModule
from ecaplatform.models import create_model
from ecaplatform.training.classifier import ImageClassifier
from tests.image_folders import make_imagenet_folder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)"),
]


def gpu_trainer(**kwargs: object) -> L.Trainer:
    defaults = dict(accelerator="gpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture(autouse=True)
def _full_fp32() -> None:
    # TF32 matmuls would make the CPU/GPU comparisons below differ by more than float32 rounding.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_channels_last_training_on_the_gpu(precision: str) -> None:
    model = ImageClassifier("eca_resnet50", num_classes=10, channels_last=True)
    data = SyntheticDataModule(batch_size=16, num_classes=10, image_size=64, train_samples=64, val_samples=37)
    trainer = gpu_trainer(max_steps=4, precision=precision)
    trainer.fit(model, data)
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train_loss"]) and torch.isfinite(metrics["val_loss"])
    assert int(metrics["val_samples"]) == 37
    assert next(model.parameters()).device.type == "cuda"


def test_gpu_logits_match_the_cpu_in_full_precision() -> None:
    torch.manual_seed(0)
    model = create_model("eca_resnet50").eval()
    images = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        cpu = model(images)
        gpu = model.cuda()(images.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)


def test_gpu_evaluation_counts_every_image_once_and_agrees_with_the_cpu(tmp_path: Path) -> None:
    root = make_imagenet_folder(tmp_path / "imagenet", classes=5, train_per_class=1, val_per_class=[3, 2, 3, 2, 3])
    data = ImageNetDataModule(str(root), batch_size=4, num_workers=2, image_size=32)
    torch.manual_seed(0)
    model = ImageClassifier("eca_resnet18", num_classes=5)
    cpu_metrics = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).validate(
        model, data, verbose=False
    )[0]
    gpu_metrics = gpu_trainer().validate(model, data, verbose=False)[0]
    assert cpu_metrics["val_samples"] == gpu_metrics["val_samples"] == 13
    assert gpu_metrics["val_top1"] == pytest.approx(cpu_metrics["val_top1"])
    assert gpu_metrics["val_top5"] == pytest.approx(cpu_metrics["val_top5"])


def test_metric_updates_never_make_the_cpu_wait_for_the_gpu() -> None:
    # Each hidden synchronisation stalls the GPU once per step (six of them cost ~12% of a ResNet step on an H100).
    model = ImageClassifier("eca_resnet18", num_classes=10).cuda()
    logits = torch.randn(32, 10, device="cuda")
    targets = torch.randint(0, 10, (32,), device="cuda")
    loss = torch.nn.functional.cross_entropy(logits, targets)
    model._update_metrics("val", logits, targets, loss)  # first call: lazy state initialisation may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        model._update_metrics("val", logits, targets, loss)
    finally:
        torch.cuda.set_sync_debug_mode("default")
