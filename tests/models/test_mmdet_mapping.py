"""The six released ECA detectors: MMDetection v1 checkpoints mapped onto torchvision's detectors, strictly.

The generated files below follow MMDetection v1.x's own source (names and shapes of ResNet, FPN, RPNHead,
SharedFCBBoxHead with 2 FCs, FCNMaskHead, RetinaHead; ConvModule keeps its conv as `.conv`), with random values.
The reference forwards are v1's forward definitions, written here from the v1 tensors, not through our mapping.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ecaplatform.models import CheckpointError
from ecaplatform.models.detection import (
    COCO_CATEGORY_IDS,
    RELEASED_DETECTORS,
    build_detector,
    load_mmdet_v1_state_dict,
    load_released_detector,
)
from ecaplatform.models.detection.legacy import V1AnchorGenerator, V1BoxCoder, v1_cell_anchors
from ecaplatform.models.resnet import ResNet

LAYERS = {50: 3, 101: 23}  # layer3 blocks


def _conv(sd: dict, name: str, out: int, inp: int, k: int, gen: torch.Generator) -> None:
    sd[f"{name}.weight"] = torch.randn(out, inp, k, k, generator=gen) * 0.05
    sd[f"{name}.bias"] = torch.randn(out, generator=gen) * 0.05


def v1_checkpoint(detector: str, depth: int, kernels: tuple[int, ...], seed: int = 0) -> dict:
    """A checkpoint in v1's layout: {"meta", "state_dict"} with v1's names and shapes, random values."""
    gen = torch.Generator().manual_seed(seed)
    # v1's ResNet names its modules as torchvision's (conv1, bn1, layerS.B.conv1..3/bn1..3, downsample.0/1).
    backbone = ResNet(depth, attention="eca", k_size=list(kernels)).state_dict()
    sd = {f"backbone.{k}": (torch.randn(v.shape, generator=gen) * 0.05 if v.is_floating_point() else v)
          for k, v in backbone.items() if not k.startswith("fc.")}
    for k in [k for k in sd if k.endswith("running_var")]:
        sd[k] = sd[k].abs() + 0.5
    retina = detector == "retinanet"
    channels = (512, 1024, 2048) if retina else (256, 512, 1024, 2048)
    for i, c in enumerate(channels):
        _conv(sd, f"neck.lateral_convs.{i}.conv", 256, c, 1, gen)
        _conv(sd, f"neck.fpn_convs.{i}.conv", 256, 256, 3, gen)
    if retina:  # add_extra_convs: fpn_convs.3 on C5, fpn_convs.4 on P6
        _conv(sd, "neck.fpn_convs.3.conv", 256, 2048, 3, gen)
        _conv(sd, "neck.fpn_convs.4.conv", 256, 256, 3, gen)
        for i in range(4):
            _conv(sd, f"bbox_head.cls_convs.{i}.conv", 256, 256, 3, gen)
            _conv(sd, f"bbox_head.reg_convs.{i}.conv", 256, 256, 3, gen)
        _conv(sd, "bbox_head.retina_cls", 9 * 80, 256, 3, gen)  # sigmoid: num_classes - 1 = 80 per anchor
        _conv(sd, "bbox_head.retina_reg", 9 * 4, 256, 3, gen)
    else:
        _conv(sd, "rpn_head.rpn_conv", 256, 256, 3, gen)
        _conv(sd, "rpn_head.rpn_cls", 3, 256, 1, gen)  # use_sigmoid_cls: 3 anchors x 1
        _conv(sd, "rpn_head.rpn_reg", 12, 256, 1, gen)
        for name, out, inp in (("shared_fcs.0", 1024, 256 * 7 * 7), ("shared_fcs.1", 1024, 1024),
                               ("fc_cls", 81, 1024), ("fc_reg", 81 * 4, 1024)):
            sd[f"bbox_head.{name}.weight"] = torch.randn(out, inp, generator=gen) * 0.02
            sd[f"bbox_head.{name}.bias"] = torch.randn(out, generator=gen) * 0.02
    if detector == "mask_rcnn":
        for i in range(4):
            _conv(sd, f"mask_head.convs.{i}.conv", 256, 256, 3, gen)
        sd["mask_head.upsample.weight"] = torch.randn(256, 256, 2, 2, generator=gen) * 0.05  # ConvTranspose2d
        sd["mask_head.upsample.bias"] = torch.randn(256, generator=gen) * 0.05
        _conv(sd, "mask_head.conv_logits", 81, 256, 1, gen)
    meta = {"mmdet_version": "1.0rc0+d3ca926", "config": f"# {detector} r{depth} 1x",
            "CLASSES": tuple(f"class{i}" for i in range(80))}
    return {"meta": meta, "state_dict": sd}


def _released(stem: str) -> tuple[str, int, tuple[int, ...]]:
    name, kernels = RELEASED_DETECTORS[stem]
    detector = name.split("_eca_")[0]
    return detector, int(name.split("resnet")[1].split("_")[0]), kernels


@pytest.mark.parametrize("stem", sorted(RELEASED_DETECTORS))
def test_every_released_layout_loads_strictly_as_its_name_says(stem: str, tmp_path: Path) -> None:
    detector, depth, kernels = _released(stem)
    ckpt = v1_checkpoint(detector, depth, kernels)
    source = ckpt
    if stem.startswith("faster_rcnn_ecanet50"):  # one through a file, as users bring them
        source = tmp_path / f"{stem}.pth"
        torch.save(ckpt, source)
    model = load_released_detector(source)
    assert model.released_architecture.name == RELEASED_DETECTORS[stem][0]
    assert model.released_architecture.kernels == kernels
    assert not model.training and model.mmdet_v1_boxes
    body = model.backbone.body
    assert torch.equal(body.layer3[LAYERS[depth] - 1].conv2.weight,
                       ckpt["state_dict"][f"backbone.layer3.{LAYERS[depth] - 1}.conv2.weight"])
    assert [body[f"layer{s}"][0].eca.conv.kernel_size[0] for s in range(1, 5)] == list(kernels)


def _rpn_reference(sd: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = F.relu(F.conv2d(x, sd["rpn_head.rpn_conv.weight"], sd["rpn_head.rpn_conv.bias"], padding=1))
    return (F.conv2d(h, sd["rpn_head.rpn_cls.weight"], sd["rpn_head.rpn_cls.bias"]),
            F.conv2d(h, sd["rpn_head.rpn_reg.weight"], sd["rpn_head.rpn_reg.bias"]))


def _fpn_reference(sd: dict, feats: list[torch.Tensor], retina: bool) -> list[torch.Tensor]:
    """v1 FPN.forward: laterals, top-down nearest x2, 3x3 outputs; P6 by max pool, or (RetinaNet) by conv on C5
    then P7 by conv on P6 without ReLU (relu_before_extra_convs=False)."""
    lat = [F.conv2d(f, sd[f"neck.lateral_convs.{i}.conv.weight"], sd[f"neck.lateral_convs.{i}.conv.bias"])
           for i, f in enumerate(feats)]
    for i in range(len(lat) - 1, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], scale_factor=2, mode="nearest")
    outs = [F.conv2d(p, sd[f"neck.fpn_convs.{i}.conv.weight"], sd[f"neck.fpn_convs.{i}.conv.bias"], padding=1)
            for i, p in enumerate(lat)]
    if not retina:
        return [*outs, F.max_pool2d(outs[-1], 1, stride=2)]
    p6 = F.conv2d(feats[-1], sd["neck.fpn_convs.3.conv.weight"], sd["neck.fpn_convs.3.conv.bias"], 2, 1)
    return [*outs, p6, F.conv2d(p6, sd["neck.fpn_convs.4.conv.weight"], sd["neck.fpn_convs.4.conv.bias"], 2, 1)]


@pytest.mark.parametrize("detector", ["mask_rcnn", "retinanet"])
def test_mapped_weights_compute_what_v1_computes(detector: str) -> None:
    """FPN, RPN head, box head and predictor, mask head and RetinaNet head against v1's forwards."""
    sd = v1_checkpoint(detector, 50, (3, 3, 7, 7), seed=1)["state_dict"]
    model = load_released_detector({"state_dict": sd})
    retina = detector == "retinanet"
    gen = torch.Generator().manual_seed(2)
    chans = (256, 512, 1024, 2048)[1 if retina else 0:]
    sizes = (32, 16, 8, 4)[1 if retina else 0:]
    feats = [torch.randn(1, c, s, s, generator=gen) for c, s in zip(chans, sizes, strict=True)]
    with torch.no_grad():
        ours = list(model.backbone.fpn({str(i): f for i, f in enumerate(feats)}).values())
        ref = _fpn_reference(sd, feats, retina)
        assert len(ours) == len(ref) == 5
        for a, b in zip(ours, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        x = ref[0]
        if retina:
            head = model.head
            cls, reg = x, x
            for i in range(4):
                cls = F.relu(F.conv2d(cls, sd[f"bbox_head.cls_convs.{i}.conv.weight"],
                                      sd[f"bbox_head.cls_convs.{i}.conv.bias"], padding=1))
                reg = F.relu(F.conv2d(reg, sd[f"bbox_head.reg_convs.{i}.conv.weight"],
                                      sd[f"bbox_head.reg_convs.{i}.conv.bias"], padding=1))
            ref_cls = F.conv2d(cls, sd["bbox_head.retina_cls.weight"], sd["bbox_head.retina_cls.bias"], padding=1)
            ref_reg = F.conv2d(reg, sd["bbox_head.retina_reg.weight"], sd["bbox_head.retina_reg.bias"], padding=1)
            out = head([x])
            # torchvision flattens [N, A*K, H, W] to [N, H*W*A, K]: v1's permute(0, 2, 3, 1).reshape(-1, K)
            torch.testing.assert_close(out["cls_logits"][0], ref_cls[0].permute(1, 2, 0).reshape(-1, 80))
            torch.testing.assert_close(out["bbox_regression"][0], ref_reg[0].permute(1, 2, 0).reshape(-1, 4))
            return
        obj, deltas = model.rpn.head([x])
        ref_obj, ref_deltas = _rpn_reference(sd, x)
        torch.testing.assert_close(obj[0], ref_obj)
        torch.testing.assert_close(deltas[0], ref_deltas)
        rois = torch.randn(5, 256, 7, 7, generator=gen)
        h = F.relu(F.linear(rois.flatten(1), sd["bbox_head.shared_fcs.0.weight"], sd["bbox_head.shared_fcs.0.bias"]))
        h = F.relu(F.linear(h, sd["bbox_head.shared_fcs.1.weight"], sd["bbox_head.shared_fcs.1.bias"]))
        scores, boxes = model.roi_heads.box_predictor(model.roi_heads.box_head(rois))
        torch.testing.assert_close(scores, F.linear(h, sd["bbox_head.fc_cls.weight"], sd["bbox_head.fc_cls.bias"]))
        torch.testing.assert_close(boxes, F.linear(h, sd["bbox_head.fc_reg.weight"], sd["bbox_head.fc_reg.bias"]))
        m = torch.randn(3, 256, 14, 14, generator=gen)
        r = m
        for i in range(4):
            r = F.relu(F.conv2d(r, sd[f"mask_head.convs.{i}.conv.weight"], sd[f"mask_head.convs.{i}.conv.bias"],
                                padding=1))
        r = F.relu(F.conv_transpose2d(r, sd["mask_head.upsample.weight"], sd["mask_head.upsample.bias"], stride=2))
        r = F.conv2d(r, sd["mask_head.conv_logits.weight"], sd["mask_head.conv_logits.bias"])
        torch.testing.assert_close(model.roi_heads.mask_predictor(model.roi_heads.mask_head(m)), r)


def _detect(model: torch.nn.Module) -> dict:
    model.transform.min_size, model.transform.max_size = (128,), 128
    with torch.no_grad():
        return model([torch.rand(3, 128, 160, generator=torch.Generator().manual_seed(3))])[0]


def test_v1_class_index_is_our_label_and_its_coco_category() -> None:
    """v1's fc_cls row c (background at 0) becomes label c, i.e. COCO category COCO_CATEGORY_IDS[c - 1]."""
    ckpt = v1_checkpoint("mask_rcnn", 50, (3, 3, 7, 7))  # the R-CNN path with the mask branch as well
    sd, c = ckpt["state_dict"], 17
    sd["bbox_head.fc_cls.weight"].zero_()
    sd["bbox_head.fc_cls.bias"].fill_(0).__setitem__(c, 20.0)
    sd["bbox_head.fc_reg.weight"].zero_()
    out = _detect(load_released_detector(ckpt))
    assert len(out["labels"]) > 0 and set(out["labels"].tolist()) == {c}
    assert out["masks"].shape == (len(out["labels"]), 1, 128, 160)
    assert COCO_CATEGORY_IDS[c - 1] == 18  # category 12 is one of COCO's ten unused ids
    assert len(COCO_CATEGORY_IDS) == 80 and COCO_CATEGORY_IDS[-1] == 90


def test_v1_retinanet_sigmoid_channel_k_is_label_k_plus_1() -> None:
    ckpt = v1_checkpoint("retinanet", 50, (3, 3, 7, 7))
    sd, k = ckpt["state_dict"], 4
    sd["bbox_head.retina_cls.weight"].zero_()
    sd["bbox_head.retina_cls.bias"].fill_(-20.0).view(9, 80)[:, k] = 20.0
    out = _detect(load_released_detector(ckpt))
    assert len(out["labels"]) > 0 and set(out["labels"].tolist()) == {k + 1}


def test_missing_extra_and_misshapen_keys_are_named_in_one_line() -> None:
    ckpt = v1_checkpoint("faster_rcnn", 50, (5, 5, 5, 5))
    sd = ckpt["state_dict"]
    model = build_detector("faster_rcnn", 50, "eca", k_size=[5, 5, 5, 5])
    missing = {k: v for k, v in sd.items() if k != "rpn_head.rpn_reg.bias"}
    with pytest.raises(CheckpointError, match=r"'rpn\.head\.bbox_pred\.bias'.*missing") as err:
        load_mmdet_v1_state_dict(model, missing, "faster_rcnn")
    extra = {**sd, "bbox_head.fc_extra.weight": torch.zeros(2)}
    with pytest.raises(CheckpointError, match=r"cannot place .*'bbox_head\.fc_extra\.weight'") as err2:
        load_mmdet_v1_state_dict(model, extra, "faster_rcnn")
    wrong = {**sd, "bbox_head.fc_cls.weight": torch.zeros(91, 1024)}
    with pytest.raises(CheckpointError, match=r"roi_heads\.box_predictor\.cls_score\.weight.*\[81, 1024\].*\[91"):
        load_mmdet_v1_state_dict(model, wrong, "faster_rcnn")
    assert "\n" not in str(err.value) + str(err2.value)
    with pytest.raises(CheckpointError, match="not an MMDetection checkpoint"):
        load_released_detector({"state_dict": {"conv1.weight": torch.zeros(1)}})


def test_v1_anchors_are_v1s() -> None:
    """v1 AnchorGenerator (MMDetection v2's LegacyAnchorGenerator, center_offset 0.5): centre (stride - 1) / 2,
    corners centre -+ 0.5 (size - 1), rounded; ratio-major order. Worked by hand for P2 (stride 4, size 32)."""
    p2 = v1_cell_anchors([(32,)], [(0.5, 1.0, 2.0)], [4])[0]
    assert p2.tolist() == [[-21, -9, 24, 12], [-14, -14, 17, 17], [-9, -21, 12, 24]]
    model = load_released_detector(v1_checkpoint("faster_rcnn", 50, (5, 5, 5, 5)))
    assert torch.equal(model.rpn.anchor_generator.cell_anchors[0], p2)
    # P6 of an 800-px side has 13 cells; torchvision would step 800 // 13 = 61 px, v1 steps its stride, 64
    p6 = V1AnchorGenerator(((512,),), ((0.5, 1.0, 2.0),), (64,))
    grid = p6.grid_anchors([[13, 20]], [[torch.tensor(61)] * 2])[0]
    assert (grid[3] - grid[0]).tolist() == [64.0, 0.0, 64.0, 0.0]  # the next location of the row, same anchor


def test_v1_box_decoding_is_v1_delta2bbox() -> None:
    """v1's delta2bbox: pw = x2 - x1 + 1, gx = px + pw dx, gw = pw exp(dw), x1 = gx - gw/2 + 0.5,
    x2 = gx + gw/2 - 0.5 (stds 0.1, 0.1, 0.2, 0.2 = torchvision's weights 10, 10, 5, 5)."""
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 7.0, 99.0]])
    deltas = torch.tensor([[0.3, -0.2, 0.1, 0.4], [-0.5, 0.25, -0.3, 0.2]])
    stds = torch.tensor([0.1, 0.1, 0.2, 0.2])
    d = deltas * stds
    pw, ph = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    gx, gy = (boxes[:, 0] + boxes[:, 2]) / 2 + pw * d[:, 0], (boxes[:, 1] + boxes[:, 3]) / 2 + ph * d[:, 1]
    gw, gh = pw * d[:, 2].exp(), ph * d[:, 3].exp()
    expected = torch.stack([gx - gw / 2 + 0.5, gy - gh / 2 + 0.5, gx + gw / 2 - 0.5, gy + gh / 2 - 0.5], 1)
    coder = V1BoxCoder((10.0, 10.0, 5.0, 5.0), math.log(1000 / 16))
    torch.testing.assert_close(coder.decode_single(deltas, boxes), expected)
    torch.testing.assert_close(coder.encode_single(expected, boxes), deltas, rtol=1e-4, atol=1e-5)
