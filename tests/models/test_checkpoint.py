"""Loading checkpoints: the released file format, inference from tensors, strict errors, refusing code."""

from __future__ import annotations

import builtins
import pickle
from pathlib import Path

import pytest
import torch

from ecaplatform.models import CheckpointError, MobileNetV2, create_model, infer_architecture, load_official_checkpoint
from ecaplatform.models.checkpoint import read_checkpoint


def _save_official(model: torch.nn.Module, path: Path, arch: str = "se_resnet50") -> Path:
    """The released format: {'epoch', 'arch', 'state_dict' with DataParallel's 'module.' prefix, ...}."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save({
        "epoch": 100,
        "arch": arch,  # deliberately wrong, as in the released ResNet-50 file
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        "best_prec1": 77.42,
        "optimizer": optimizer.state_dict(),
    }, path)
    return path


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics, so that a mix-up of running stats would show in the logits."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


CASES = [
    ("resnet18", {}),
    ("se_resnet18", {}),
    ("cbam_resnet18", {}),
    ("eca_resnet18", {}),
    ("se_resnet50", {}),
    ("cbam_resnet50", {}),
    ("eca_resnet50", {}),
    ("mobilenet_v2", {}),
    ("se_mobilenet_v2", {}),
    ("eca_mobilenet_v2", {}),
    ("eca_resnet18", {"k_size": [3, 3, 3, 3]}),  # the official constructors' default, not the released one
    ("eca_resnet18", {"k_size": "adaptive"}),
    ("eca_mobilenet_v2", {"k_size": "adaptive"}),
    ("eca_mobilenet_v2", {"k_size": 5}),
]


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[f"{n}-{kw}" if kw else n for n, kw in CASES])
def test_official_format_round_trip_gives_the_same_logits(tmp_path: Path, name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(create_model(name, num_classes=10, **kwargs))
    path = _save_official(model, tmp_path / f"{name}.pth.tar")
    loaded = load_official_checkpoint(path)
    assert type(loaded) is type(model)
    assert getattr(loaded, "eca_kernels", None) == getattr(model, "eca_kernels", None)
    assert not loaded.training
    x = torch.randn(2, 3, 48, 48)
    torch.testing.assert_close(_logits(loaded, x), _logits(model, x), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["eca_resnet34", "eca_resnet101", "eca_resnet152"])
def test_released_kernels_of_every_depth_are_read_back(tmp_path: Path, name: str) -> None:
    model = create_model(name)
    loaded = load_official_checkpoint(_save_official(model, tmp_path / f"{name}.pth.tar"))
    assert loaded.eca_kernels == model.eca_kernels and loaded.depth == model.depth


def test_bare_state_dict_and_lightning_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(create_model("eca_resnet18", num_classes=4, k_size=[5, 5, 3, 3]))
    x = torch.randn(1, 3, 48, 48)
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    lightning = {"state_dict": {f"model._orig_mod.{k}": v for k, v in model.state_dict().items()},
                 "hyper_parameters": {"model_name": "eca_resnet18"}, "epoch": 3}
    torch.save(lightning, tmp_path / "lightning.ckpt")
    for file in ("bare.pt", "lightning.ckpt"):
        loaded = load_official_checkpoint(tmp_path / file)
        assert loaded.eca_kernels == [5, 5, 3, 3]
        torch.testing.assert_close(_logits(loaded, x), _logits(model, x), rtol=0, atol=0)


def test_se_reduction_other_than_the_default_is_inferred(tmp_path: Path) -> None:
    model = create_model("se_resnet18", num_classes=3, se_reduction=4)
    loaded = load_official_checkpoint(_save_official(model, tmp_path / "se.pth"))
    assert loaded.layer1[0].se.fc[0].weight.shape == (16, 64)


def test_infer_architecture_names_the_model_and_its_arguments() -> None:
    spec = infer_architecture(create_model("se_resnet34", num_classes=7, se_reduction=4).state_dict())
    assert (spec.name, spec.num_classes, spec.kwargs) == ("se_resnet34", 7, {"se_reduction": 4})
    assert str(spec) == "se_resnet34(num_classes=7, se_reduction=4)"


def test_an_architecture_no_registered_model_has_is_reported(tmp_path: Path) -> None:
    torch.save(MobileNetV2(num_classes=5, attention="cbam").state_dict(), tmp_path / "cbam.pt")
    with pytest.raises(CheckpointError, match="attention='cbam'.*not a registered model; known models"):
        load_official_checkpoint(tmp_path / "cbam.pt")


def test_create_model_with_checkpoint_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(create_model("eca_resnet18", num_classes=10))
    path = _save_official(model, tmp_path / "eca_resnet18_k3577.pth.tar")
    loaded = create_model("eca_resnet18", num_classes=10, checkpoint=str(path))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_logits(loaded, x), _logits(model, x), rtol=0, atol=0)


def test_create_model_names_the_first_differing_key_and_both_shapes(tmp_path: Path) -> None:
    path = _save_official(create_model("eca_resnet18", num_classes=10, k_size=[3, 3, 3, 3]), tmp_path / "k.pth")
    with pytest.raises(CheckpointError) as err:
        create_model("eca_resnet18", num_classes=10, checkpoint=str(path))
    message = str(err.value)
    assert "'layer2.0.eca.conv.weight'" in message  # layer1 agrees (k=3), layer2 is the first difference
    assert "model shape [1, 1, 5]" in message and "checkpoint shape [1, 1, 3]" in message
    assert "k_size=[3, 3, 3, 3]" in message  # and it says what to pass instead


def test_create_model_reports_a_wrong_family_and_class_count(tmp_path: Path) -> None:
    path = _save_official(create_model("resnet18", num_classes=10), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"'fc.weight': model shape \[1000, 512\], checkpoint shape \[10, 512\]"):
        create_model("resnet18", checkpoint=str(path))
    with pytest.raises(CheckpointError, match=r"'layer1.0.eca.conv.weight': model shape \[1, 1, 3\], missing"):
        create_model("eca_resnet18", num_classes=10, checkpoint=str(path))


class _WritesAMarker:
    """Unpickling this calls open(marker, 'w'): code that a safe loader must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (builtins.open, (str(self.marker), "w"))


@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth.tar"
    payload = {"state_dict": {"fc.weight": torch.zeros(2, 2)}, "hook": _WritesAMarker(marker)}
    if container == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_official_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused to load"):
        create_model("resnet18", checkpoint=str(path))
    assert not marker.exists()
    # The payload really does run code when unpickled unsafely, so the test above can fail:
    pickle.loads(pickle.dumps(_WritesAMarker(marker))).close()
    assert marker.exists()


def test_the_loader_itself_asks_for_weights_only_under_a_torch_that_defaults_to_unpickling_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch >= 2.6 defaults to weights_only=True, so the test above passes even if the loader stops asking for it;
    torch.load as older versions had it (weights_only defaulting to False) shows whether the loader asks."""
    real_load = torch.load
    asked: list[object] = []

    def torch_load_before_2_6(*args: object, weights_only: object = False, **kwargs: object) -> object:
        asked.append(weights_only)
        return real_load(*args, weights_only=weights_only, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "load", torch_load_before_2_6)
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "hook": _WritesAMarker(marker)}, evil)
    refusal = r"refused to load .*the Python object io\.open, .*could run arbitrary code"
    with pytest.raises(CheckpointError, match=refusal):
        load_official_checkpoint(evil)
    assert not marker.exists(), "the checkpoint loader unpickled code"
    good = _save_official(create_model("eca_resnet18", num_classes=3), tmp_path / "good.pth.tar")
    load_official_checkpoint(good)
    assert asked == [True, True]  # every read, the refused one and the good one, asked for weights only


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official_checkpoint(tmp_path / "nope.pth.tar")
    (tmp_path / "junk.pth.tar").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="could not read"):
        load_official_checkpoint(tmp_path / "junk.pth.tar")


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip format", "legacy pickle format"])
def test_a_checkpoint_cut_off_anywhere_is_reported_as_truncated(tmp_path: Path, zipfile: bool) -> None:
    # A copy that stopped early: every prefix of a real file must give the one-line error, never a bare
    # IndexError or struct.error from inside the unpickler.
    path = tmp_path / "whole.pth.tar"
    torch.save({"state_dict": {"conv.weight": torch.zeros(2, 3), "bn.bias": torch.ones(4)}}, path,
               _use_new_zipfile_serialization=zipfile)
    data = path.read_bytes()
    cut = tmp_path / "cut.pth.tar"
    for length in range(1, len(data), 1 if len(data) < 2000 else 7):
        cut.write_bytes(data[:length])
        with pytest.raises(CheckpointError, match="could not read"):
            read_checkpoint(cut)


def test_a_class_this_python_lacks_is_not_called_an_attack(tmp_path: Path) -> None:
    # What a training script's own class looks like in a pickle: `__main__.TrainArgs`, absent here.
    path = tmp_path / "args.pth.tar"
    path.write_bytes(b"\x80\x02}q\x00X\x04\x00\x00\x00argsq\x01c__main__\nTrainArgs\nq\x02)\x81q\x03s.")
    with pytest.raises(CheckpointError, match=r"names '__main__\.TrainArgs', an object this Python "
                                              r"does not have.*re-save just the state_dict") as raised:
        read_checkpoint(path)
    assert str(raised.value).startswith(f"could not read {str(path)!r} as a torch checkpoint: ")


def test_unknown_architecture_is_reported(tmp_path: Path) -> None:
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="cannot tell the architecture.*encoder.weight"):
        load_official_checkpoint(tmp_path / "other.pt")


@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning hints (srun present, few workers)
@pytest.mark.slow  # importing Lightning and fitting two steps takes ~15 s on a busy 2-core machine
def test_a_real_lightning_checkpoint_loads(tmp_path: Path) -> None:
    """A checkpoint written by Lightning's Trainer (module holding the network as `model`) loads by inference."""
    lightning = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, TensorDataset

    class Classifier(lightning.LightningModule):
        def __init__(self, model_name: str = "eca_resnet18", num_classes: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = create_model(model_name, num_classes=num_classes, k_size="adaptive")

        def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))), batch_size=4)
    module = Classifier()
    trainer = lightning.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, data)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    loaded = load_official_checkpoint(tmp_path / "last.ckpt")
    assert loaded.eca_kernels == [3, 5, 5, 5]
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(_logits(loaded, x), _logits(module.model, x), rtol=0, atol=0)
