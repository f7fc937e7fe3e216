"""The ECA layer and its kernel-size rules, checked against the paper's definition computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ecaplatform.models import ECALayer, adaptive_kernel_size
from ecaplatform.models.mobilenetv2 import resolve_mobilenet_kernels
from ecaplatform.models.resnet import resolve_resnet_kernels


@pytest.mark.parametrize(("channels", "k"), [(16, 3), (32, 3), (64, 3), (96, 3), (128, 5), (256, 5), (512, 5),
                                             (1024, 5), (2048, 7)])
def test_adaptive_kernel_size_matches_the_paper(channels: int, k: int) -> None:
    assert adaptive_kernel_size(channels) == k


def test_adaptive_kernel_size_follows_gamma_and_b() -> None:
    # (log2(256) + 3) / 1 = 11 (odd, kept); (log2(256) + 0) / 2 = 4 (even, bumped to 5)
    assert adaptive_kernel_size(256, gamma=1, b=3) == 11
    assert adaptive_kernel_size(256, gamma=2, b=0) == 5


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_eca_layer_is_pool_conv1d_sigmoid_rescale(k: int) -> None:
    torch.manual_seed(0)
    layer = ECALayer(k_size=k)
    x = torch.randn(2, 12, 5, 4)
    w = layer.conv.weight.detach().reshape(-1)
    assert layer.conv.weight.shape == (1, 1, k) and layer.conv.bias is None
    # By hand: per-channel mean, then a 1-D correlation over the channel axis with zero padding at both edges.
    pooled = x.mean(dim=(2, 3))  # [B, C]
    padded = F.pad(pooled, ((k - 1) // 2, (k - 1) // 2))
    mixed = torch.stack([(padded[:, c:c + k] * w).sum(dim=1) for c in range(12)], dim=1)
    expected = x * torch.sigmoid(mixed)[:, :, None, None]
    torch.testing.assert_close(layer(x), expected)


def test_eca_layer_adaptive_from_channels_and_only_parameter() -> None:
    layer = ECALayer(channels=2048)
    assert layer.k_size == 7
    assert [name for name, _ in layer.named_parameters()] == ["conv.weight"]


@pytest.mark.parametrize("bad", [0, 2, 4, -3, 3.0, "3", True])
def test_eca_layer_rejects_bad_kernels(bad: object) -> None:
    with pytest.raises(ValueError, match="positive odd integer"):
        ECALayer(k_size=bad)  # type: ignore[arg-type]


def test_eca_layer_needs_a_kernel_or_channels() -> None:
    with pytest.raises(ValueError, match="k_size, or channels"):
        ECALayer()


def test_resnet_kernel_rules() -> None:
    bottleneck = [256, 512, 1024, 2048]
    basic = [64, 128, 256, 512]
    assert resolve_resnet_kernels("released", 50, bottleneck) == [3, 5, 5, 7]
    assert resolve_resnet_kernels("released", 18, basic) == [3, 5, 7, 7]
    assert resolve_resnet_kernels("released", 101, bottleneck) == [3, 3, 5, 7]
    assert resolve_resnet_kernels("adaptive", 50, bottleneck) == [5, 5, 5, 7]
    assert resolve_resnet_kernels("adaptive", 18, basic) == [3, 5, 5, 5]
    assert resolve_resnet_kernels([3, 3, 3, 3], 50, bottleneck) == [3, 3, 3, 3]
    assert resolve_resnet_kernels(9, 50, bottleneck) == [9, 9, 9, 9]


@pytest.mark.parametrize(("bad", "message"), [
    ("paper", "'released', 'adaptive'"),
    ([3, 5, 7], "4 kernel sizes, one per stage"),
    ([3, 5, 7, 4], "positive odd integer"),
])
def test_resnet_kernel_rules_reject_bad_values(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_resnet_kernels(bad, 50, [256, 512, 1024, 2048])  # type: ignore[arg-type]


def test_mobilenet_kernel_rules() -> None:
    channels = [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]
    assert resolve_mobilenet_kernels("released", channels) == [1] * 10 + [3] * 7  # c < 96, not <=
    assert resolve_mobilenet_kernels("adaptive", channels) == [3] * 13 + [5] * 4
    assert resolve_mobilenet_kernels(5, channels) == [5] * 17
    with pytest.raises(ValueError, match="17 kernel sizes"):
        resolve_mobilenet_kernels([3, 3, 3, 3], channels)
