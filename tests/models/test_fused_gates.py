"""The fused channel-gate paths (eca.gated_residual, eca.global_avg_pool) against the plain formulas.

ResNet blocks with SE/ECA add `identity + x * gate` in one custom-autograd op and pool with a cheaper backward;
these tests pin that the logits and every gradient are those of the reference `attention(x) + identity` with
stock autograd (float64, so that only rounding can differ), and that inference runs the unfused ops unchanged.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ecaplatform.models import ECALayer, SELayer, create_model
from ecaplatform.models import attention as attention_module
from ecaplatform.models import eca as eca_module
from ecaplatform.models.resnet import _AttentionMixin


def _reference_attend_and_add(self: _AttentionMixin, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """The unfused block formula: out = attention(x) (x * y for SE/ECA), then + identity."""
    out = x if self.attention_name is None else getattr(self, self.attention_name)(x)
    return out + identity


def _use_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    def stock_pool(x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1)

    monkeypatch.setattr(_AttentionMixin, "_attend_and_add", _reference_attend_and_add)
    monkeypatch.setattr(eca_module, "global_avg_pool", stock_pool)
    monkeypatch.setattr(attention_module, "global_avg_pool", stock_pool)


def _backward_node_names(t: torch.Tensor) -> list[str]:
    seen, stack, names = set(), [t.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


def _train_step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Logits, parameter gradients and input gradient of one training-mode forward/backward."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # MobileNetV2's dropout draws the same mask in both runs
    x = x.clone().requires_grad_()
    logits = model(x)
    # A loss with non-uniform weights, so that every logit's gradient differs.
    weights = torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).view_as(logits)
    (logits * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return logits.detach(), grads, x.grad


@pytest.mark.parametrize(("name", "fused", "pooled", "channels_last"), [
    ("eca_resnet18", 8, 8, False), ("se_resnet18", 8, 8, False), ("eca_resnet50", 16, 16, False),
    ("se_resnet50", 16, 16, False),
    ("eca_resnet18", 8, 8, True), ("se_resnet18", 8, 8, True),  # NHWC on the cheaper models: the same block code
    # MobileNetV2 keeps `x + conv(x)` with the attention inside `conv`: only the pooling is the custom one.
    ("eca_mobilenet_v2", 0, 17, False), ("se_mobilenet_v2", 0, 17, False),
])
def test_fused_blocks_match_the_reference_formula(name: str, fused: int, pooled: int, channels_last: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(name, num_classes=10).double().to(memory_format=memory_format).train()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64).contiguous(memory_format=memory_format)

    got = _train_step(model, x)
    # Every SE/ECA ResNet block took the fused path (training mode uses batch statistics: reruns are identical).
    names = _backward_node_names(model(x))
    assert names.count("_GatedResidualBackward") == fused
    assert names.count("_GlobalAvgPoolBackward") == pooled
    with monkeypatch.context() as patch:
        _use_reference(patch)
        want = _train_step(model, x)
        names = _backward_node_names(model(x))
        assert "_GatedResidualBackward" not in names and "_GlobalAvgPoolBackward" not in names

    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-10)
    assert got[1].keys() == want[1].keys()
    for param in got[1]:
        torch.testing.assert_close(got[1][param], want[1][param], rtol=1e-9, atol=1e-9, msg=param)
    torch.testing.assert_close(got[2], want[2], rtol=1e-9, atol=1e-9)


def test_cbam_keeps_its_module_path() -> None:
    # CBAM has a spatial gate as well, so it is not a pure channel gate and is not fused.
    model = create_model("cbam_resnet18", num_classes=5).train()
    names = _backward_node_names(model(torch.randn(2, 3, 32, 32)))
    assert "_GatedResidualBackward" not in names and "_GlobalAvgPoolBackward" not in names


@pytest.mark.parametrize("name", ["eca_resnet18", "se_resnet18"])
def test_inference_runs_the_unfused_ops(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without autograd the helpers fall back to x * gate + identity and a plain mean: bit-identical logits.
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        fused = model(x)
        with monkeypatch.context() as patch:
            _use_reference(patch)
            reference = model(x)
    assert torch.equal(fused, reference)


@pytest.mark.parametrize("layer", [ECALayer(k_size=3), SELayer(32, reduction=4)])
def test_standalone_layers_rescale_by_their_gate(layer: nn.Module) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 32, 5, 7)
    gate = layer.gate(x)
    assert gate.shape == (2, 32, 1, 1) and bool(((gate > 0) & (gate < 1)).all())
    torch.testing.assert_close(layer(x), x * gate)


def test_gated_residual_and_pool_gradcheck() -> None:
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)

    identity, x, gate = rand(2, 3, 4, 5), rand(2, 3, 4, 5), rand(2, 3, 1, 1)
    assert torch.autograd.gradcheck(eca_module.gated_residual, (identity, x, gate))
    assert torch.autograd.gradcheck(eca_module.global_avg_pool, (x,))
    # Only some inputs needing a gradient (a frozen gate, a detached identity).
    fixed_gate = gate.detach()
    assert torch.autograd.gradcheck(lambda i, t: eca_module.gated_residual(i, t, fixed_gate), (identity, x))
    assert torch.autograd.gradcheck(lambda t, g: eca_module.gated_residual(identity.detach(), t, g), (x, gate))
    # Second order, as through a gradient penalty.
    assert torch.autograd.gradgradcheck(eca_module.gated_residual, (identity, x, gate))
    assert torch.autograd.gradgradcheck(eca_module.global_avg_pool, (x,))
