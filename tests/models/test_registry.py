"""The registry: names, the paper's metadata, argument errors, and that models/ stays free of Lightning."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ecaplatform.models import ECALayer, ModelInfo, create_model, get_model_info, list_models
from ecaplatform.models.registry import find_model
from ecaplatform.paper import RESULTS

REQUIRED = [
    *(f"{prefix}resnet{d}" for prefix in ("", "se_", "eca_") for d in (18, 34, 50, 101, 152)),
    "cbam_resnet50", "mobilenet_v2", "se_mobilenet_v2", "eca_mobilenet_v2",
]


def test_required_names_are_registered() -> None:
    assert set(REQUIRED) <= set(list_models())
    assert list_models() == sorted(list_models())


def test_every_registered_name_builds_its_own_family_and_attention() -> None:
    for name in list_models():
        info = get_model_info(name)
        assert isinstance(info, ModelInfo) and info.name == name
        assert info.family in ("resnet", "mobilenet_v2") and info.attention in ("none", "se", "cbam", "eca")
        if info.family == "resnet":
            assert info.backbone == f"ResNet-{info.depth}" and name.endswith(f"resnet{info.depth}")


def test_paper_metadata() -> None:
    eca50 = get_model_info("eca_resnet50")
    assert (eca50.family, eca50.depth, eca50.attention, eca50.backbone, eca50.method) == (
        "resnet", 50, "eca", "ResNet-50", "ECA-Net")
    assert (eca50.paper_top1, eca50.paper_top5, eca50.paper_params_m, eca50.paper_flops_g) == (
        77.48, 93.68, 24.37, 3.86)
    assert eca50.released_checkpoint == "eca_resnet50_k3557.pth.tar"
    assert get_model_info("eca_resnet152").paper_top1 == 78.92
    assert get_model_info("eca_resnet101").paper_top1 == 78.65
    assert get_model_info("se_resnet152").paper_params_m == 63.68
    mb = get_model_info("eca_mobilenet_v2")
    assert (mb.paper_top1, mb.depth, mb.backbone) == (72.56, None, "MobileNetV2")
    assert mb.paper_flops_g == pytest.approx(319.9 / 1024)
    assert get_model_info("resnet18").paper_flops_g is None  # the paper prints no FLOPs for R-18
    assert get_model_info("cbam_resnet152").paper_top1 is None


def test_paper_numbers_come_from_ecaplatform_paper_alone() -> None:
    assert set(RESULTS) <= set(list_models())
    for name in list_models():
        info, paper = get_model_info(name), RESULTS.get(name)
        assert (info.paper_top1, info.paper_top5, info.paper_params_m, info.paper_flops_g,
                info.released_checkpoint) == ((paper.top1, paper.top5, paper.params_m, paper.flops_g,
                                               paper.released_checkpoint) if paper else (None,) * 5)


def test_find_model_names_the_registered_model() -> None:
    assert find_model("resnet", 50, "eca") == "eca_resnet50"
    assert find_model("resnet", 18, "none") == "resnet18"
    assert find_model("mobilenet_v2", None, "se") == "se_mobilenet_v2"
    assert find_model("mobilenet_v2", None, "cbam") is None


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'eca_resnet51'.*eca_resnet50.*mobilenet_v2"):
        create_model("eca_resnet51")
    with pytest.raises(ValueError, match="known models"):
        get_model_info("vit_b16")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"k_size": "paper"}, "'released', 'adaptive'"),
    ({"k_size": [3, 5]}, "4 kernel sizes"),
    ({"k_size": [3, 5, 7, 8]}, "positive odd integer"),
])
def test_bad_k_size_says_what_is_allowed(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("eca_resnet18", **kwargs)


def test_k_size_on_a_non_eca_model_and_unknown_kwargs_are_errors() -> None:
    with pytest.raises(ValueError, match="ECA models only"):
        create_model("se_resnet18", k_size=[3, 3, 3, 3])
    with pytest.raises(TypeError, match="allowed keyword arguments: .*k_size"):
        create_model("eca_resnet18", kernel=3)


def test_kwargs_reach_the_model() -> None:
    model = create_model("eca_resnet18", num_classes=3, k_size="adaptive")
    assert model.eca_kernels == [3, 5, 5, 5] and model.fc.out_features == 3
    mb = create_model("eca_mobilenet_v2", k_size=[3] * 17, dropout=0.1)
    assert mb.eca_kernels == [3] * 17 and mb.classifier[0].p == 0.1
    assert create_model("eca_mobilenet_v2").classifier[0].p == 0.25  # the released recipe's dropout
    assert create_model("mobilenet_v2").classifier[0].p == 0.2  # torchvision's


def test_eca_conv_keeps_pytorch_default_init() -> None:
    # The kaiming init touches Conv2d only; the ECA Conv1d keeps PyTorch's U(-1/sqrt(k), 1/sqrt(k)), as released
    # (kaiming-normal with fan_out = k would put values beyond that bound).
    torch.manual_seed(0)
    for m in create_model("eca_resnet50").modules():
        if isinstance(m, ECALayer):
            assert m.conv.weight.abs().max() <= 1 / m.k_size**0.5


def test_models_package_does_not_import_lightning() -> None:
    code = ("import sys, ecaplatform.models; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
