"""The detectors: Table 5's 18 configurations and their params, MMDetection v1's backbone set-up (frozen stem and
layer1, BN statistics kept), the FPN levels, labels 1..80, backbone initialisation, the CPU demo's detector,
and the MACs counter's coverage of the heads."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from ecaplatform.cli.models import models_main
from ecaplatform.models import CheckpointError, create_model, list_models
from ecaplatform.models.detection import build_detector, create_detector, init_backbone
from ecaplatform.models.detection.backbone import resnet_fpn
from ecaplatform.models.profile import count_detector_macs, count_trainable_params
from ecaplatform.paper import DETECTION_RESULTS

TABLE5 = [r for r in DETECTION_RESULTS if r.model is not None]


def test_table5_has_18_registered_configurations() -> None:
    assert len(TABLE5) == 18
    assert {r.model for r in TABLE5} <= set(list_models(None))
    assert not any(n.endswith("_fpn") for n in list_models())  # the classification listing is unchanged
    assert set(list_models("instance_segmentation")) == {r.model for r in TABLE5 if r.detector == "Mask R-CNN"}


@pytest.mark.parametrize("row", TABLE5, ids=[r.model for r in TABLE5])
def test_params_match_table5(row) -> None:  # noqa: ANN001
    """Table 5's params are MMDetection's count: trainable parameters only (its get_flops.py counts those with
    requires_grad; frozen_stages=1 leaves the stem and layer1 out), in 10^6 units, with 81-way R-CNN heads and
    RetinaNet's 80-way sigmoid head. Measured so, all 18 rows agree to 0.012% (the print's rounding); the total
    count is 0.225M higher for ResNet-50 and -101 alike (the frozen stem and layer1)."""
    with torch.device("meta"):
        model = create_detector(row.model)
    trainable = count_trainable_params(model) / 1e6
    assert abs(trainable - row.params_m) / row.params_m < 2e-4, (trainable, row.params_m)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen == sum(p.numel() for n, p in model.backbone.body.named_parameters()
                         if n.split(".")[0] in ("conv1", "bn1", "layer1"))


def test_frozen_stem_and_layer1_and_bn_statistics_kept_in_training() -> None:
    model = build_detector("faster_rcnn", 18, "eca", min_size=96, max_size=96, fpn_channels=32, box_head_dim=32)
    model.train()
    body = model.backbone.body
    assert not any(p.requires_grad for n in ("conv1", "bn1", "layer1") for p in getattr(body, n).parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())  # BN affine included, as in v1
    assert all(not m.training for m in body.modules() if isinstance(m, nn.BatchNorm2d))
    stats = body.layer3[0].bn1.running_mean.clone()
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([3])}]
    losses = model([torch.rand(3, 96, 96)], targets)
    sum(losses.values()).backward()
    assert torch.equal(body.layer3[0].bn1.running_mean, stats)
    assert body.conv1.weight.grad is None and body.layer2[0].conv1.weight.grad is not None


def test_fpn_levels_as_v1() -> None:
    """R-CNNs: P2-P6 (strides 4-64, P6 = max pool of P5); RetinaNet: P3-P7 (8-128) with P6 from C5."""
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        rcnn = resnet_fpn(18, out_channels=16).eval()(x)
        retina_fpn = resnet_fpn(18, retinanet=True, out_channels=16).eval()
        retina = retina_fpn(x)
    assert [v.shape[-1] for v in rcnn.values()] == [32, 16, 8, 4, 2]
    assert [v.shape[-1] for v in retina.values()] == [16, 8, 4, 2, 1]
    assert retina_fpn.fpn.extra_blocks.p6.in_channels == 512  # C5 of ResNet-18
    p6 = list(retina.values())[3]
    torch.testing.assert_close(list(retina.values())[4], retina_fpn.fpn.extra_blocks.p7(p6))  # no ReLU


def test_labels_are_1_based_for_every_detector() -> None:
    """RetinaNet, like the R-CNNs, takes labels 1..num_classes (training with label num_classes must work) and
    returns them so: its head channel k is label k + 1."""
    model = build_detector("retinanet", 18, "eca", num_classes=5, min_size=96, max_size=96, fpn_channels=32)
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([5])}]
    losses = model.train()([torch.rand(3, 96, 96)], targets)
    assert torch.isfinite(sum(losses.values()))
    head = model.head.classification_head.cls_logits
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-20.0).view(9, 5)[:, 0] = 20.0  # every anchor says channel 0
        out = model.eval()([torch.rand(3, 96, 96)])[0]
    assert len(out["labels"]) > 0 and set(out["labels"].tolist()) == {1}


def test_demo_detector_trains_and_detects_on_cpu() -> None:
    """The CPU demo's ECA-ResNet-18 Faster R-CNN: small input and heads; a few SGD steps lower the loss."""
    model = create_detector("faster_rcnn_eca_resnet18_fpn", num_classes=3)
    assert model.transform.min_size == (160,) and model.backbone.out_channels == 128
    # trained from scratch: nothing frozen, BatchNorm learns batch statistics (no ImageNet ones to keep)
    assert all(p.requires_grad for p in model.backbone.body.parameters())
    assert all(m.training for m in model.train().backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d))
    model.transform.min_size, model.transform.max_size = (128,), 128  # a quicker test, same network
    torch.manual_seed(0)
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 90.0, 100.0]]), "labels": torch.tensor([2])}] * 2
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    first = None
    for _ in range(3):
        loss = sum(model.train()(images, targets).values())
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first
    with torch.no_grad():
        out = model.eval()(images[:1])[0]
    assert set(out) == {"boxes", "labels", "scores"} and all(1 <= v <= 3 for v in out["labels"].tolist())


def test_init_backbone_from_a_released_classifier_file(tmp_path: Path) -> None:
    classifier = create_model("eca_resnet18", k_size=[3, 5, 7, 7])
    path = tmp_path / "eca_resnet18_k3577.pth.tar"
    torch.save({"epoch": 1, "arch": "x", "state_dict": {f"module.{k}": v for k, v in classifier.state_dict().items()}},
               path)
    # default kernels: the released classifier's; frozen as the paper's detectors (the demo's default freezes nothing)
    detector = create_detector("faster_rcnn_eca_resnet18_fpn", frozen_stages=1, norm_eval=True)
    init = init_backbone(detector, path)
    assert init.source == str(path) and len(init.sha256) == 64 and init.skipped == ("fc.weight", "fc.bias")
    assert init.tensors == len(detector.backbone.body.state_dict())
    assert torch.equal(detector.backbone.body.layer4[1].eca.conv.weight, classifier.layer4[1].eca.conv.weight)
    assert not detector.backbone.body.conv1.weight.requires_grad  # loading keeps the freezing

    other = create_detector("faster_rcnn_eca_resnet18_fpn", k_size=[5, 5, 5, 5])
    with pytest.raises(CheckpointError, match=r"layer1\.0\.eca\.conv\.weight.*\[1, 1, 5\].*\[1, 1, 3\]") as err:
        init_backbone(other, classifier.state_dict())
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="does not fit"):
        init_backbone(create_detector("faster_rcnn_se_resnet18_fpn"), classifier.state_dict())


def test_init_backbone_none_warns_and_says_so() -> None:
    detector = create_detector("faster_rcnn_resnet18_fpn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        init = init_backbone(detector, None)
    assert init.source == "none" and init.tensors == 0
    assert any("random weights" in str(w.message) for w in caught)


def test_detector_macs_cover_backbone_fpn_and_heads() -> None:
    """MMDetection's dummy forward: conv/linear MACs equal an independent count by hooks, which includes the box
    head on 1000 RoIs and the mask head on 100."""
    model = build_detector("mask_rcnn", 18, "none", fpn_channels=32, box_head_dim=64)
    total, rows = 0, {}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        rows[module] = output.shape[0]
        if isinstance(module, nn.ConvTranspose2d):
            total += inputs[0].numel() * module.out_channels * module.weight[0, 0].numel()
        elif isinstance(module, nn.Conv2d):
            total += output.numel() * module.in_channels // module.groups * module.weight[0, 0].numel()
        else:
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)]
    macs = count_detector_macs(model, (128, 96))
    for h in handles:
        h.remove()
    assert macs.conv_linear == total
    heads = model.roi_heads
    assert rows[heads.box_predictor.cls_score] == 1000 and rows[heads.mask_predictor.mask_fcn_logits] == 100
    assert rows[model.rpn.head.cls_logits] == 1


def test_eca_models_lists_detectors_with_their_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert models_main([]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("mask_rcnn_eca_resnet101_fpn "))
    assert "instance_segmentation" in line and "mask_rcnn_ecanet101_k3357_bs8_lr0.01" in line
    assert "faster_rcnn_eca_resnet18_fpn" in out and "eca_resnet50 " in out
