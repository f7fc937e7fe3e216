"""The ECA kernel policy and checkpoint loading at the edges mutation testing (`make mutation`) found unchecked:
MobileNetV2's block channels, the kernel rules' messages, and what the loader says and infers for unusual files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from ecaplatform.models import CheckpointError, MobileNetV2, create_model, eca, infer_architecture, list_models
from ecaplatform.models.checkpoint import (
    compare_state_dicts,
    extract_state_dict,
    load_checkpoint_into,
    load_state_dict_strict,
    read_checkpoint,
    read_state_dict,
)
from ecaplatform.models.eca import ECALayer
from ecaplatform.models.mobilenetv2 import block_output_channels, resolve_mobilenet_kernels
from ecaplatform.models.resnet import resolve_resnet_kernels

# MobileNetV2's 17 inverted-residual blocks (its paper's Table 2: t, c, n, s rows), output channels at width 1.0.
WIDTH_1 = [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]


# --- the kernel policy ---------------------------------------------------------------------------------------------


def test_mobilenet_block_channels_follow_the_width_and_the_rounding() -> None:
    assert block_output_channels() == WIDTH_1 == block_output_channels(1.0, 8)
    # Width 0.5 halves each (8, 12, 16, 32, 48, 80, 160), rounded to a multiple of 8 (12 -> 16) or of 4 (12 stays).
    assert block_output_channels(0.5) == [8, 16, 16, 16, 16, 16, 32, 32, 32, 32, 48, 48, 48, 80, 80, 80, 160]
    assert block_output_channels(0.5, 4) == [8, 12, 12, 16, 16, 16, 32, 32, 32, 32, 48, 48, 48, 80, 80, 80, 160]


def test_mobilenet_kernel_rules_name_the_model_and_its_unit_when_refusing() -> None:
    with pytest.raises(ValueError) as wrong_count:
        resolve_mobilenet_kernels([3, 3], WIDTH_1)
    assert str(wrong_count.value) == ("k_size=[3, 3]: MobileNetV2 needs 17 kernel sizes, one per inverted-residual "
                                      "block (or 'released', 'adaptive', one odd int)")  # fmt: skip
    with pytest.raises(ValueError) as wrong_word:
        resolve_mobilenet_kernels("paper", WIDTH_1)
    assert str(wrong_word.value) == ("k_size='paper' is not allowed; use 'released', 'adaptive', one odd int, or a "
                                     "list of 17 odd ints (one per inverted-residual block)")  # fmt: skip


def test_resnet_kernel_rules_name_the_model_its_unit_and_the_released_depths_when_refusing() -> None:
    channels = [256, 512, 1024, 2048]
    with pytest.raises(ValueError) as wrong_count:
        resolve_resnet_kernels([3, 3], 50, channels)
    assert str(wrong_count.value) == ("k_size=[3, 3]: a ResNet needs 4 kernel sizes, one per stage (or 'released', "
                                      "'adaptive', one odd int)")  # fmt: skip
    with pytest.raises(ValueError) as no_release:
        resolve_resnet_kernels("released", 26, channels)
    assert str(no_release.value) == ("no released ECA kernels for ResNet-26; known depths: [18, 34, 50, 101, 152]; "
                                     "pass k_size='adaptive' or 4 ints")  # fmt: skip
    assert resolve_resnet_kernels("adaptive", 26, channels) == [5, 5, 5, 7]  # any depth has the paper's formula


# --- reading a checkpoint's tensors ----------------------------------------------------------------------------------


def test_what_is_no_state_dict_is_named_with_its_source() -> None:
    with pytest.raises(CheckpointError) as not_a_mapping:
        extract_state_dict([1, 2])
    assert str(not_a_mapping.value) == ("checkpoint: expected a state_dict (or a dict with a 'state_dict' entry), "
                                        "got list")  # fmt: skip
    with pytest.raises(CheckpointError) as empty:
        extract_state_dict({}, "f.pth")
    assert str(empty.value) == "f.pth: expected a state_dict (or a dict with a 'state_dict' entry), got dict"
    with pytest.raises(CheckpointError) as no_tensors:
        extract_state_dict({f"k{i}": i for i in range(7)})
    assert str(no_tensors.value) == (
        "checkpoint: the state_dict holds no tensors (keys: ['k0', 'k1', 'k2', 'k3', 'k4']...)")


def test_a_file_holding_no_state_dict_is_named_by_its_path(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError) as raised:
        read_state_dict(path)
    assert str(raised.value) == f"{path}: expected a state_dict (or a dict with a 'state_dict' entry), got list"


def test_a_key_only_the_checkpoint_has_is_named_with_its_shape() -> None:
    assert compare_state_dicts({"a": torch.zeros(1)}, {"a": torch.zeros(1), "extra": torch.zeros(2, 3)}) == (
        "first differing key 'extra': not in the model, checkpoint shape [2, 3]")


# --- inferring the architecture -------------------------------------------------------------------------------------


def test_a_default_se_ratio_is_no_argument_and_cbams_ratio_is_read_too() -> None:
    # Each family's own default (ResNet 16, MobileNetV2 8) is left to the constructor.
    assert infer_architecture(create_model("se_resnet18").state_dict()).kwargs == {}
    assert infer_architecture(create_model("se_mobilenet_v2").state_dict()).kwargs == {}
    assert infer_architecture(create_model("se_mobilenet_v2", se_reduction=16).state_dict()).kwargs == {
        "se_reduction": 16}
    spec = infer_architecture(create_model("cbam_resnet18", num_classes=3, se_reduction=8).state_dict())
    assert (spec.name, spec.kwargs) == ("cbam_resnet18", {"se_reduction": 8})


@pytest.mark.parametrize("keys", [["fc.weight"], ["conv1.weight"], ["classifier.1.weight"], ["features.0.0.weight"],
                                  ["conv1.weight", "fc.weight"], ["layer1.0.conv1.weight", "fc.weight"]])
def test_a_family_is_recognised_only_by_all_of_its_keys(keys: list[str]) -> None:
    with pytest.raises(CheckpointError, match="^cannot tell the architecture: expected ResNet keys"):
        infer_architecture({key: torch.zeros(2, 2) for key in keys})


def test_what_no_family_has_is_named_with_the_keys_it_has() -> None:
    with pytest.raises(CheckpointError) as raised:
        infer_architecture({f"k{i}": torch.zeros(1) for i in range(6)})
    assert str(raised.value) == (
        "cannot tell the architecture: expected ResNet keys (conv1.weight, layer1.0.conv1.weight, fc.weight) or "
        "MobileNetV2 keys (features.0.0.weight, classifier.1.weight); first keys found: ['k0', 'k1', 'k2', 'k3', "
        "'k4']")


def test_an_architecture_no_registered_model_has_lists_the_models() -> None:
    with pytest.raises(CheckpointError) as raised:
        infer_architecture(MobileNetV2(num_classes=5, attention="cbam").state_dict())
    assert str(raised.value) == ("the checkpoint holds a mobilenet_v2 (depth=None, attention='cbam'), which is not a "
                                 f"registered model; known models: {', '.join(list_models())}")


def test_a_resnet_of_no_known_depth_is_named() -> None:
    sd = {k: v for k, v in create_model("resnet18").state_dict().items() if ".1." not in k}  # one block a stage
    with pytest.raises(CheckpointError) as raised:
        infer_architecture(sd)
    assert str(raised.value) == (
        "ResNet with basic blocks per stage (1, 1, 1, 1) is not a known depth; known: {18: (2, 2, 2, 2), "
        "34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}")


def test_a_stage_mixing_eca_kernels_is_refused() -> None:
    sd = create_model("eca_resnet18", k_size=3).state_dict()
    sd["layer2.1.eca.conv.weight"] = torch.zeros(1, 1, 5)
    with pytest.raises(CheckpointError) as raised:
        infer_architecture(sd)
    assert str(raised.value) == "layer2 mixes ECA kernel sizes [3, 5]; only one kernel per stage is supported"


# --- loading into a given model ---------------------------------------------------------------------------------


def test_a_mismatch_names_the_file_the_model_and_the_architecture_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(create_model("eca_resnet18", num_classes=10, k_size=[3, 3, 3, 3]).state_dict(), path)
    model = create_model("eca_resnet18", num_classes=10)
    with pytest.raises(CheckpointError) as named:
        load_checkpoint_into(model, path, "eca_resnet18")
    assert str(named.value) == (
        f"checkpoint {str(path)!r} for eca_resnet18 does not fit the model: first differing key "
        "'layer2.0.eca.conv.weight': model shape [1, 1, 5], checkpoint shape [1, 1, 3]. The checkpoint holds "
        "eca_resnet18(num_classes=10, k_size=[3, 3, 3, 3]): create it with those arguments, or let "
        f"load_official_checkpoint({str(path)!r}) work them out.")
    with pytest.raises(CheckpointError, match=rf"^checkpoint {str(path)!r} for the model does not fit"):
        load_checkpoint_into(model, path)


def test_a_mismatch_whose_architecture_cannot_be_told_still_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint_into(create_model("resnet18"), path)
    assert str(raised.value) == (f"checkpoint {str(path)!r} for the model does not fit the model: first differing "
                                 "key 'conv1.weight': model shape [64, 3, 7, 7], missing in the checkpoint.")


def test_a_strict_load_without_a_hint_adds_nothing_to_the_difference() -> None:
    model = torch.nn.Linear(2, 3)
    with pytest.raises(CheckpointError) as raised:
        load_state_dict_strict(model, {"weight": torch.zeros(3, 2)}, "weights.pt")
    assert str(raised.value) == ("weights.pt does not fit the model: first differing key 'bias': model shape [3], "
                                 "missing in the checkpoint.")  # fmt: skip
    load_state_dict_strict(model, {"weight": torch.ones(3, 2), "bias": torch.ones(3)}, "weights.pt")
    assert model.weight.sum().item() == 6.0 and model.bias.sum().item() == 3.0


# --- reading a file: torch.load's errors, in one line each -------------------------------------------------------


def _load_raising(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> list[dict[str, object]]:
    asked: list[dict[str, object]] = []

    def load(path: object, **kwargs: object) -> object:
        asked.append(kwargs)
        raise error

    monkeypatch.setattr(torch, "load", load)
    return asked


def test_a_file_is_read_on_the_cpu_and_as_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.pth"
    path.write_bytes(b"PK\x03\x04")  # the start of torch's zip format: torch.load decides
    asked = _load_raising(monkeypatch, EOFError())
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert asked == [{"map_location": "cpu", "weights_only": True}]  # a GPU-saved file loads on a CPU-only node


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as raised:
        read_checkpoint(tmp_path / "nope.pth.tar")
    assert str(raised.value) == f"checkpoint {str(tmp_path / 'nope.pth.tar')!r} does not exist or is not a file"


CUT = "could not read {path} as a torch checkpoint: it is a torch.save file, truncated or corrupted"
COPY = "; copy it again (a .pth.tar file is a torch.save file, not a tar archive)"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (pickle.UnpicklingError("Weights only load failed. Advice.\nWeightsUnpickler error: Unsupported global: "
                                "GLOBAL os.system was not an allowed global by default.\n\nMore advice."),
         "refused to load {path}: it references the Python object os.system, which torch.load(weights_only=True) "
         "will not unpickle because loading it could run arbitrary code. Only tensors, dicts, lists and numbers "
         "are accepted; re-save just the state_dict from a trusted environment."),
        (pickle.UnpicklingError("Weights only load failed.\nWeightsUnpickler error: Unsupported operand 110,\n"
                                "on two lines\n\nCheck the documentation."),
         f"{CUT} (Unsupported operand 110, on two lines){COPY}"),
        (pickle.UnpicklingError("invalid load key, 'x'.\nsecond line"), f"{CUT} (invalid load key, 'x'.){COPY}"),
        (RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. Advice."),
         f"{CUT} (PytorchStreamReader failed reading zip archive: failed finding central directory){COPY}"),
        (EOFError(), f"{CUT} (EOFError){COPY}"),
        (KeyError(101), f"{CUT} (KeyError 101){COPY}"),  # torch's unpickler on a damaged memo
    ],
)  # fmt: skip
def test_what_torch_load_raises_becomes_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, message: str
) -> None:
    path = tmp_path / "f.pth.tar"
    path.write_bytes(b"\x80\x02")  # the start of torch's legacy format: torch.load decides
    _load_raising(monkeypatch, error)
    with pytest.raises(CheckpointError) as raised:
        read_checkpoint(path)
    assert str(raised.value) == message.format(path=repr(str(path)))


# --- the ECA layer ----------------------------------------------------------------------------------------------


def test_the_layer_computes_its_kernel_with_its_own_gamma_and_b() -> None:
    assert ECALayer(channels=64).k_size == 3  # (6 + 1) / 2 -> 3 with the paper's b = 1 ...
    assert ECALayer(channels=64, b=2).k_size == 5  # ... (6 + 2) / 2 = 4 -> 5 with b = 2
    assert ECALayer(channels=64, gamma=1).k_size == 7
    with pytest.raises(ValueError) as raised:
        ECALayer()
    assert str(raised.value) == "ECALayer needs k_size, or channels to compute the adaptive kernel size"


def _spy(monkeypatch: pytest.MonkeyPatch, function: type) -> list[int]:
    calls: list[int] = []
    real = function.apply

    def apply(*args: torch.Tensor) -> torch.Tensor:
        calls.append(len(args))
        return real(*args)

    monkeypatch.setattr(function, "apply", apply)
    return calls


@pytest.mark.parametrize("needs_grad", [(), ("identity",), ("x",), ("gate",), ("identity", "x", "gate")])
def test_the_fused_gate_runs_only_where_autograd_needs_it(monkeypatch: pytest.MonkeyPatch,
                                                          needs_grad: tuple[str, ...]) -> None:  # fmt: skip
    # Without autograd the plain formulas run: what inference and the MAC counter (profile.py) see.
    fused, pooled = _spy(monkeypatch, eca._GatedResidual), _spy(monkeypatch, eca._GlobalAvgPool)
    tensors = {name: torch.randn(2, 4, 3, 3, requires_grad=name in needs_grad) for name in ("identity", "x")}
    gate = torch.rand(2, 4, 1, 1, requires_grad="gate" in needs_grad)
    out = eca.gated_residual(tensors["identity"], tensors["x"], gate)
    eca.global_avg_pool(tensors["x"])
    assert (len(fused), len(pooled)) == (1 if needs_grad else 0, 1 if "x" in needs_grad else 0)
    torch.testing.assert_close(out, tensors["x"] * gate + tensors["identity"])
    with torch.no_grad():
        eca.gated_residual(tensors["identity"], tensors["x"], gate)
        eca.global_avg_pool(tensors["x"])
    assert (len(fused), len(pooled)) == (1 if needs_grad else 0, 1 if "x" in needs_grad else 0)
