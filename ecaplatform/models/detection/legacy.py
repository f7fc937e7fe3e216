"""MMDetection v1's "+1" pixel convention, bridged onto torchvision's detectors for its released weights.

v1 treats a box [x1, x2] as covering pixels x1..x2 (width x2 - x1 + 1), and its layers learned that:
- anchors (v1 AnchorGenerator; MMDetection v2 keeps it as LegacyAnchorGenerator with center_offset=0.5):
  centred at ((stride - 1) / 2 + k * stride), corners centre -+ (size - 1) / 2, rounded. torchvision centres
  anchors at k * stride with corners -+ size / 2: up to half a stride (32 px on P6) away;
- box deltas (v1 delta2bbox): width x2 - x1 + 1, decoded corners gx -+ gw / 2 with +0.5 / -0.5;
- RoIAlign (v1's kernel) ends a RoI at (x2 + 1) * scale, and the RoI level is chosen by sqrt((w + 1) (h + 1));
- results go to COCO as [x1, y1, x2 - x1 + 1, y2 - y1 + 1].
`use_mmdet_v1_boxes` rebuilds all four on a model (and steps anchors by v1's fixed strides: V1AnchorGenerator),
so a v1 checkpoint sees what it was trained on. Not bridged
(sub-pixel, or a selection rule): v1 clips boxes to W - 1 rather than W, resizes with OpenCV rather than
F.interpolate, and its RetinaNet keeps the 1000 anchors of highest max-class score per level where torchvision
keeps the 1000 highest (anchor, class) scores. Their effect on AP is unmeasured here (it needs COCO val2017
and the released weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform

# [x1, y1, x2, y2] of a v1 box -> the continuous box it covers, and back
_TO_CONTINUOUS = (-0.5, -0.5, 0.5, 0.5)


def v1_cell_anchors(sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]],
                    strides: Sequence[int]) -> list[torch.Tensor]:
    """One level's base anchors per stride, as v1 makes them (base size = stride, scales = size / stride),
    in torchvision's order (ratio-major, as v1's scale_major=True also is)."""
    cells = []
    for level_sizes, ratios, stride in zip(sizes, aspect_ratios, strides, strict=True):
        scales = torch.tensor([s / stride for s in level_sizes], dtype=torch.float64)
        h_ratios = torch.tensor(ratios, dtype=torch.float64).sqrt()
        ws = (stride / h_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (stride * h_ratios[:, None] * scales[None, :]).reshape(-1)
        c = (stride - 1) / 2
        anchors = torch.stack([c - (ws - 1) / 2, c - (hs - 1) / 2, c + (ws - 1) / 2, c + (hs - 1) / 2], dim=1)
        cells.append(anchors.round().float())
    return cells


class V1AnchorGenerator(AnchorGenerator):
    """v1's anchors at v1's fixed strides. torchvision derives a level's stride as image size // grid size,
    which is 61, not 64, on P6 of an 800-px padded side (800 // 13); v1 always steps by its anchor_strides."""

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]],
                 strides: Sequence[int]) -> None:
        super().__init__(tuple(map(tuple, sizes)), tuple(map(tuple, aspect_ratios)))
        self.cell_anchors = v1_cell_anchors(sizes, aspect_ratios, strides)
        self.fixed_strides = tuple(strides)

    def grid_anchors(self, grid_sizes: list[list[int]], strides: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        device = self.cell_anchors[0].device
        fixed = [[torch.tensor(s, device=device)] * 2 for s in self.fixed_strides]
        return super().grid_anchors(grid_sizes, fixed)


class V1BoxCoder(BoxCoder):
    """BoxCoder on v1 boxes: decoding v1's deltas against v1 anchors/proposals gives v1 delta2bbox's boxes."""

    def _shift(self, boxes: torch.Tensor, sign: float) -> torch.Tensor:
        offset = boxes.new_tensor(_TO_CONTINUOUS) * sign
        return (boxes.reshape(boxes.shape[0], -1, 4) + offset).reshape(boxes.shape)

    def decode_single(self, rel_codes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self._shift(super().decode_single(rel_codes, self._shift(boxes.to(rel_codes.dtype), 1)), -1)

    def encode_single(self, reference_boxes: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        return super().encode_single(self._shift(reference_boxes, 1), self._shift(proposals, 1))


class V1RoIPool(nn.Module):
    """A MultiScaleRoIAlign fed v1 RoIs: x2, y2 + 1 gives v1's RoI end and its level rule sqrt((w+1)(h+1))."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        return self.pool(features, [b + b.new_tensor([0, 0, 1, 1]) for b in boxes], image_shapes)


class V1Transform(GeneralizedRCNNTransform):
    """Resizing as before; results come out as the continuous boxes v1 sends to COCO (x2, y2 + 1)."""

    def postprocess(self, result: list[dict[str, torch.Tensor]], image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        result = super().postprocess(result, image_shapes, original_image_sizes)
        for r in result:
            r["boxes"] = r["boxes"] + r["boxes"].new_tensor([0, 0, 1, 1])
        return result


def use_mmdet_v1_boxes(model: nn.Module, strides: Sequence[int]) -> nn.Module:
    """Switch a torchvision FasterRCNN / MaskRCNN / RetinaNet to v1's box convention (module docstring)."""
    owner = model.rpn if hasattr(model, "rpn") else model
    old = owner.anchor_generator
    owner.anchor_generator = V1AnchorGenerator(old.sizes, old.aspect_ratios, strides)
    clip = math.log(1000.0 / 16)
    if hasattr(model, "rpn"):
        model.rpn.box_coder = V1BoxCoder(model.rpn.box_coder.weights, clip)
        heads = model.roi_heads
        heads.box_coder = V1BoxCoder(heads.box_coder.weights, clip)
        heads.box_roi_pool = V1RoIPool(heads.box_roi_pool)
        if heads.mask_roi_pool is not None:
            heads.mask_roi_pool = V1RoIPool(heads.mask_roi_pool)
    else:
        model.box_coder = V1BoxCoder(model.box_coder.weights, clip)
    t = model.transform
    model.transform = V1Transform(t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible,
                                  t.fixed_size)
    model.mmdet_v1_boxes = True
    return model
