"""The ImageClassifier: recipe schedules, device-side normalisation, exact metrics, self-rebuilding checkpoints."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.cli import instantiate_module

from ecaplatform.datamodules import IMAGENET_MEAN, IMAGENET_STD, ImageNetDataModule, SyntheticDataModule
from ecaplatform.training.classifier import SGD, ImageClassifier, LRSchedule, ModelConfigError
from ecaplatform.training.lightning_cli import main
from tests.conftest import REPO_ROOT
from tests.image_folders import make_imagenet_folder


def tiny_trainer(**kwargs: object) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    return L.Trainer(**{**defaults, **kwargs})


# --- learning-rate schedules ---------------------------------------------------------------------------------------


def lr_curve(steps: int, steps_per_epoch: int, total_steps: int, **schedule: object) -> list[float]:
    """The learning-rate factor before each of `steps` optimizer steps (lr 1.0)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = LRSchedule(**schedule).scheduler(optimizer, steps_per_epoch, total_steps)
    factors = []
    for _ in range(steps):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return factors


@pytest.mark.parametrize(("job", "lr", "gamma", "every"), [("resnet50", 0.1, 0.1, 30), ("eca_resnet50", 0.1, 0.1, 30),
                          ("mobilenet_v2", 0.045, 0.98, 1), ("eca_mobilenet_v2", 0.045, 0.98, 1)])  # fmt: skip
def test_paper_schedules_follow_their_closed_form(capsys: pytest.CaptureFixture, job: str, lr: float, gamma: float,
                                                  every: int) -> None:  # fmt: skip
    """A job's model section as `eca fit` parses it (recipe merged in) gives the paper's lr at every step of the run."""
    assert main(["fit", "--config", str(REPO_ROOT / "jobs" / f"{job}.yaml"), "--print_config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    model = instantiate_module(ImageClassifier, {**config["model"], "num_classes": 4})
    n = 3 * config["trainer"]["max_epochs"]  # the run's optimizer steps, 3 an epoch
    model._trainer = SimpleNamespace(estimated_stepping_batches=n, num_training_batches=3, accumulate_grad_batches=1)
    configured = model.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    for step in range(n):
        assert abs(optimizer.param_groups[0]["lr"] - lr * gamma ** (step // 3 // every)) <= 1e-12, step
        optimizer.step()
        scheduler.step()


def test_cosine_schedule_with_linear_warmup_and_constant_schedule() -> None:
    lrs = lr_curve(111, steps_per_epoch=10, total_steps=110, kind="cosine", warmup_epochs=1, warmup_start_factor=0.1)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.55)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5)  # half-way through the cosine
    assert lrs[110] == pytest.approx(0.0, abs=1e-12)
    assert all(lrs[s] >= lrs[s + 1] for s in range(10, 110))
    assert lr_curve(50, steps_per_epoch=10, total_steps=50, kind="constant") == [1.0] * 50


def test_trainer_applies_the_schedule_per_optimizer_step() -> None:
    model = ImageClassifier("resnet18", num_classes=4, optimizer=SGD(0.2), schedule=LRSchedule("step", 1, 0.5))
    data = SyntheticDataModule(batch_size=4, num_classes=4, image_size=16, train_samples=8, val_samples=4)
    trainer = tiny_trainer(max_epochs=3, limit_val_batches=0)
    trainer.fit(model, data)
    # 3 epochs x 2 steps; the next step would be in epoch 3: 0.2 * 0.5**3
    assert trainer.global_step == 6
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.2 * 0.5**3)
    assert {"train_loss", "train_top1", "train_top5"} <= set(trainer.callback_metrics)


def test_sgd_settings_reach_the_optimizer() -> None:
    model = ImageClassifier("resnet18", num_classes=4, optimizer=SGD(0.045, 0.9, 4e-5, nesterov=True))
    data = SyntheticDataModule(batch_size=4, num_classes=4, image_size=16, train_samples=4, val_samples=4)
    trainer = tiny_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, data)
    group = trainer.optimizers[0].param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.9, 4e-5, True)
    assert isinstance(trainer.optimizers[0], torch.optim.SGD)


def test_speed_switches_train_and_evaluate_together() -> None:
    # bf16 autocast + channels_last + uint8 batches normalised on the device (CPU here; the same path on GPUs).
    model = ImageClassifier("eca_resnet18", num_classes=4, channels_last=True)
    data = SyntheticDataModule(batch_size=4, num_classes=4, image_size=16, train_samples=8, val_samples=5)
    trainer = tiny_trainer(max_steps=2, precision="bf16-mixed")
    trainer.fit(model, data)
    metrics = trainer.callback_metrics
    assert metrics["val_samples"] == 5 and torch.isfinite(metrics["val_loss"])
    assert torch.isfinite(metrics["train_loss"])


# --- inputs ----------------------------------------------------------------------------------------------------


def test_uint8_batches_are_normalised_on_the_device() -> None:
    model = ImageClassifier("resnet18", num_classes=3, channels_last=True)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    normalised, targets = model.on_after_batch_transfer((images, torch.tensor([0, 1])), 0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normalised, (images.float() / 255 - mean) / std)
    assert normalised.is_contiguous(memory_format=torch.channels_last)
    assert targets.tolist() == [0, 1]
    already = torch.randn(2, 3, 8, 8)
    assert torch.equal(model.normalize(already), already)  # float input is taken as normalised


def test_label_smoothing_is_used_for_training_loss() -> None:
    model = ImageClassifier("resnet18", num_classes=3, label_smoothing=0.1)
    model.eval()  # fixed BN statistics so both forward passes agree
    images, targets = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    loss = model.training_step((images, targets), 0)
    expected = F.cross_entropy(model(images), targets, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, F.cross_entropy(model(images), targets))


# --- exact metrics ---------------------------------------------------------------------------------------------


def test_validation_metrics_are_exact_percentages_over_every_sample(tmp_path: Path) -> None:
    root = make_imagenet_folder(tmp_path / "imagenet", classes=7, train_per_class=1,
                                val_per_class=[2, 1, 2, 1, 2, 1, 2], size=24)  # fmt: skip
    data = ImageNetDataModule(str(root), batch_size=4, num_workers=0, image_size=16)
    torch.manual_seed(0)
    model = ImageClassifier("resnet18", num_classes=7)
    metrics = tiny_trainer().validate(model, data, verbose=False)[0]

    model.eval()
    logits, labels = [], []
    with torch.no_grad():
        for images, targets in data.val_dataloader():
            logits.append(model(model.normalize(images)))
            labels.append(targets)
    logits, labels = torch.cat(logits), torch.cat(labels)
    top5 = logits.topk(5, dim=1).indices
    assert metrics["val_samples"] == 11
    assert metrics["val_top1"] == pytest.approx(100.0 * (logits.argmax(1) == labels).float().mean().item())
    assert metrics["val_top5"] == pytest.approx(100.0 * (top5 == labels[:, None]).any(1).float().mean().item())
    assert metrics["val_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)


def test_test_split_logs_its_own_metrics() -> None:
    data = SyntheticDataModule(batch_size=4, num_classes=3, image_size=16, val_samples=5)
    metrics = tiny_trainer().test(ImageClassifier("resnet18", num_classes=3), data, verbose=False)[0]
    assert metrics["test_samples"] == 5 and metrics["test_top5"] == 100.0  # 3 classes: top-3 always hits
    assert set(metrics) == {"test_top1", "test_top5", "test_loss", "test_samples"}


# --- building and rebuilding -----------------------------------------------------------------------------------


def test_checkpoint_rebuilds_the_classifier(tmp_path: Path) -> None:
    model = ImageClassifier("eca_resnet18", num_classes=4, optimizer=SGD(lr=0.05), schedule=LRSchedule("cosine"))
    data = SyntheticDataModule(batch_size=4, num_classes=4, image_size=16, train_samples=4, val_samples=4)
    trainer = tiny_trainer(max_steps=1, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    raw = torch.load(path, weights_only=True, map_location="cpu")  # no pickled code needed to read it
    assert raw["hyper_parameters"]["model_name"] == "eca_resnet18"
    rebuilt = ImageClassifier.load_from_checkpoint(path)
    assert rebuilt.hparams.optimizer["lr"] == 0.05 and rebuilt.hparams.schedule["kind"] == "cosine"
    model.eval()
    rebuilt.eval()
    images = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(rebuilt(images), model(images))
    # ...and the file works as a starting point (`model.checkpoint`) for a new run.
    started = ImageClassifier("eca_resnet18", num_classes=4, checkpoint=str(path)).eval()
    torch.testing.assert_close(started(images), model(images))


class _LearningRates(L.Callback):
    """The learning rate each optimizer step used, by global step."""

    def __init__(self) -> None:
        self.by_step: dict[int, float] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object,
                             batch_idx: int) -> None:  # fmt: skip
        self.by_step[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]


def test_schedule_state_survives_a_checkpoint(tmp_path: Path) -> None:
    """A run resumed from its epoch-1 checkpoint file steps through the same learning rates as the run that went
    on: the warm-up + cosine schedule's state is in the file and is loaded back, not rebuilt from step 0."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(max_epochs: int, ckpt_path: Path | None = None) -> dict[int, float]:
        torch.manual_seed(0)
        model = ImageClassifier("resnet18", num_classes=3, schedule=LRSchedule("cosine", warmup_epochs=1.5))
        data = SyntheticDataModule(batch_size=2, num_classes=3, image_size=16, train_samples=6, val_samples=2)
        rates = _LearningRates()
        folder = tmp_path / ("resumed" if ckpt_path else "straight")
        saves = ModelCheckpoint(dirpath=folder, save_top_k=-1, every_n_epochs=1, save_last=False)
        trainer = tiny_trainer(max_epochs=max_epochs, limit_val_batches=0, enable_checkpointing=True,
                               callbacks=[rates, saves], default_root_dir=tmp_path)  # fmt: skip
        trainer.fit(model, data, ckpt_path=ckpt_path)
        return rates.by_step

    straight = run(max_epochs=4)  # 3 steps an epoch: warm-up over steps 0-3, then cosine to 0 at step 12
    assert sorted(straight) == list(range(12)) and len(set(straight.values())) > 6  # the rate moves every step
    saved = tmp_path / "straight" / "epoch=0-step=3.ckpt"
    state = torch.load(saved, weights_only=True, map_location="cpu")["lr_schedulers"][0]
    assert state["last_epoch"] == 3  # the file holds where the schedule was

    resumed = run(max_epochs=4, ckpt_path=saved)
    assert resumed == {step: lr for step, lr in straight.items() if step >= 3}


def test_compile_keeps_parameter_names() -> None:
    plain = ImageClassifier("resnet18", num_classes=3)
    compiled = ImageClassifier("resnet18", num_classes=3, compile=True)
    assert list(compiled.state_dict()) == list(plain.state_dict())


def test_unknown_model_lists_the_registered_ones() -> None:
    with pytest.raises(ModelConfigError, match=r"unknown model 'eca_resnet51'.*eca_resnet50"):
        ImageClassifier("eca_resnet51")


def test_missing_checkpoint_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match=r"missing\.pth\.tar'? does not exist"):
        ImageClassifier("eca_resnet18", checkpoint=str(tmp_path / "missing.pth.tar"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("schedule.kind=linear", "kind\": Expected a typing.Literal['step', 'multistep', 'exponential', 'cosine', "),
        ("label_smoothing=1.0", "model.label_smoothing\": Not of type SmoothingFactor: 1.0 does not conform to"),
        ("optimizer.lr=-1", "model.optimizer.lr\": Not of type PositiveFloat: -1 does not conform to restriction v>0"),
        ("optimizer.lr=0", "model.optimizer.lr\": Not of type PositiveFloat: 0 does not conform to restriction v>0"),
        ("optimizer.weight_decay=-1e-4", "model.optimizer.weight_decay\": Not of type NonNegativeFloat: -1e-4"),
        ("schedule.step_size=0", "model.schedule.step_size\": Not of type PositiveInt: 0 does not conform to"),
        ("optimizer.nesterov=true optimizer.momentum=0", "nesterov true needs model.optimizer.momentum > 0"),
        ('model_kwargs={"not_an_option":1}', "cannot build 'eca_resnet18'"),
    ],
)
def test_bad_settings_are_named_in_one_line(capsys: pytest.CaptureFixture, options: str, message: str) -> None:
    args = [f"--model.{option}" for option in options.split(" ")]
    assert main(["fit", "--config", str(REPO_ROOT / "jobs" / "demo_cpu.yaml"), *args]) != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("eca fit: error: ") and message in last, last


