"""Our models against an independent reference: torchvision's layouts plus the released ECA keys (PAPER.md)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from ecaplatform.models import RELEASED_RESNET_KERNELS, create_model
from ecaplatform.models.profile import count_eca_params, count_params

# PAPER.md: exact parameter counts and ECA parameters of the released checkpoints.
RELEASED_COUNTS = {
    "eca_resnet18": (11_689_556, 44),
    "eca_resnet34": (21_797_744, 72),
    "eca_resnet50": (25_557_112, 80),
    "eca_resnet101": (44_549_317, 157),
    "eca_resnet152": (60_193_042, 234),
    "eca_mobilenet_v2": (3_504_903, 31),
}


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _torchvision_resnet_with_eca(depth: int) -> dict[str, tuple[int, ...]]:
    reference = _shapes(getattr(torchvision.models, f"resnet{depth}")(weights=None))
    blocks_per_stage = {k.split(".")[0]: int(k.split(".")[1]) + 1 for k in reference if k.startswith("layer")}
    for stage, k in enumerate(RELEASED_RESNET_KERNELS[depth], start=1):
        for block in range(blocks_per_stage[f"layer{stage}"]):
            reference[f"layer{stage}.{block}.eca.conv.weight"] = (1, 1, k)
    return reference


def _torchvision_mobilenet_with_eca() -> dict[str, tuple[int, ...]]:
    tv = torchvision.models.mobilenet_v2(weights=None)
    reference = _shapes(tv)
    for n in range(1, 18):
        block = tv.features[n]
        index = len(block.conv)  # ECA is appended after the projection BN: conv.3 for block 1, conv.4 after
        k = 1 if block.out_channels < 96 else 3
        reference[f"features.{n}.conv.{index}.conv.weight"] = (1, 1, k)
    return reference


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_eca_resnet_keys_and_shapes_equal_the_official_layout(depth: int) -> None:
    ours = _shapes(create_model(f"eca_resnet{depth}"))
    assert ours == _torchvision_resnet_with_eca(depth)
    # and in the same order as torchvision (so positional tools and printed diffs line up)
    assert [k for k in ours if ".eca." not in k] == list(
        _shapes(getattr(torchvision.models, f"resnet{depth}")(weights=None)))


def test_eca_mobilenet_v2_keys_and_shapes_equal_the_official_layout() -> None:
    ours = _shapes(create_model("eca_mobilenet_v2"))
    assert ours == _torchvision_mobilenet_with_eca()
    assert "features.1.conv.3.conv.weight" in ours and "features.2.conv.4.conv.weight" in ours
    assert ours["features.10.conv.4.conv.weight"] == (1, 1, 1)  # 64 channels
    assert ours["features.11.conv.4.conv.weight"] == (1, 1, 3)  # 96 channels: the `c < 96` rule


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2"])
def test_plain_models_equal_torchvision_layout(name: str) -> None:
    assert _shapes(create_model(name)) == _shapes(getattr(torchvision.models, name)(weights=None))


def test_plain_resnet_loads_torchvision_weights_and_gives_its_logits() -> None:
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    ours = create_model("resnet18").eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))


@pytest.mark.parametrize("name", sorted(RELEASED_COUNTS))
def test_parameter_counts_equal_the_released_checkpoints(name: str) -> None:
    model = create_model(name)
    assert (count_params(model), count_eca_params(model)) == RELEASED_COUNTS[name]


@pytest.mark.parametrize(("name", "paper_m"), [
    ("se_resnet50", 26.77), ("cbam_resnet50", 26.77), ("se_resnet101", 47.01), ("cbam_resnet101", 47.01),
    ("se_resnet152", 63.68), ("se_mobilenet_v2", 3.40), ("resnet50", 24.37), ("mobilenet_v2", 3.34),
])
def test_se_and_cbam_params_match_the_paper_in_2_20_units(name: str, paper_m: float) -> None:
    assert round(count_params(create_model(name)) / 2**20, 2) == paper_m


def test_attention_modules_sit_under_their_own_names() -> None:
    se = _shapes(create_model("se_resnet50"))
    cbam = _shapes(create_model("cbam_resnet50"))
    assert se["layer1.0.se.fc.0.weight"] == (16, 256)  # r = 16, bias-free (matches the paper's 26.77M)
    assert cbam["layer4.2.cbam.channel.mlp.0.weight"] == (128, 2048, 1, 1)
    assert cbam["layer4.2.cbam.spatial.conv.weight"] == (1, 2, 7, 7)
    se_mb = _shapes(create_model("se_mobilenet_v2"))
    assert se_mb["features.17.conv.4.fc.0.weight"] == (40, 320)  # r = 8 on the block's output channels


@pytest.mark.parametrize("name", ["eca_resnet18", "cbam_resnet18", "se_mobilenet_v2", "eca_mobilenet_v2"])
def test_any_input_size_and_class_count(name: str) -> None:
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 40, 56)).shape == (2, 7)


def test_eca_attention_changes_the_output() -> None:
    # The ECA gate is applied inside every block: zeroing one gate's conv changes the logits.
    torch.manual_seed(0)
    model = create_model("eca_resnet18", num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        model.layer4[1].eca.conv.weight.zero_()  # sigmoid(0) = 0.5 halves that block's residual branch
        after = model(x)
    assert not torch.allclose(before, after)


# The released checkpoints' file names (PAPER.md), written out here: the digits after `_k` are the ECA kernel size
# per ResNet stage (layer1..layer4); MobileNetV2's `k13` is k=1 for blocks with fewer than 96 output channels, else
# k=3. This reference is independent of RELEASED_RESNET_KERNELS, the constant that builds the models.
RELEASED_FILES = {
    "eca_resnet18": "eca_resnet18_k3577.pth.tar",
    "eca_resnet34": "eca_resnet34_k3357.pth.tar",
    "eca_resnet50": "eca_resnet50_k3557.pth.tar",
    "eca_resnet101": "eca_resnet101_k3357.pth.tar",
    "eca_resnet152": "eca_resnet152_k3357.pth.tar",
    "eca_mobilenet_v2": "eca_mobilenetv2_k13.pth.tar",
}


def _kernel_digits(file_name: str) -> list[int]:
    return [int(d) for d in file_name.removesuffix(".pth.tar").rsplit("_k", 1)[1]]


def _conv1d_kernels(module: torch.nn.Module) -> list[int]:
    return [m.kernel_size[0] for m in module.modules() if isinstance(m, torch.nn.Conv1d)]


@pytest.mark.parametrize("name", sorted(RELEASED_FILES))
def test_default_kernels_per_stage_are_those_the_released_file_names_say(name: str) -> None:
    model = create_model(name)
    digits = _kernel_digits(RELEASED_FILES[name])
    if name.startswith("eca_resnet"):
        assert len(digits) == 4
        stages = [getattr(model, f"layer{stage}") for stage in range(1, 5)]
        built = [sorted(set(_conv1d_kernels(stage))) for stage in stages]
        assert built == [[k] for k in digits], RELEASED_FILES[name]
        blocks = sum(len(stage) for stage in stages)
        assert len(_conv1d_kernels(model)) == blocks  # one ECA per block, none outside the stages
    else:
        small, large = digits
        expected, built = [], []
        for block in list(model.features)[1:18]:  # the 17 inverted-residual blocks
            out_channels = [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1].num_features
            expected.append(small if out_channels < 96 else large)
            built += _conv1d_kernels(block)
        assert built == expected, RELEASED_FILES[name]
        assert len(_conv1d_kernels(model)) == 17
