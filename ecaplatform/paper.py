"""The ECA-Net paper's facts, in one place and without torch: what the registry, the claims, the benchmarks and
the leaderboard all read (torchvision's weights `meta`, kept as data).

Numbers are as printed in the paper (Wang et al., CVPR 2020, arXiv:1910.03151): Table 3 for ResNet-50/101/152
and MobileNetV2 (ImageNet-1k val, single 224 centre crop; params in 2^20 units, FLOPs in 2^30 units, training
and inference images/s on 4x RTX 2080Ti), the paper's poster for ResNet-18/34 (accuracies only).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paper:
    title: str
    venue: str
    arxiv_id: str
    arxiv_url: str
    code_url: str


PAPER = Paper(
    title="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    venue="CVPR 2020",
    arxiv_id="1910.03151",
    arxiv_url="https://arxiv.org/abs/1910.03151",
    code_url="https://github.com/BangguWu/ECANet",
)


@dataclass(frozen=True)
class PaperResult:
    """One model's row in the paper. None where the paper prints no number."""

    model: str  # the registry name, e.g. "eca_resnet50"
    backbone: str  # "ResNet-50", "MobileNetV2"
    method: str  # the paper's row label: "ResNet", "SENet", "CBAM", "ECA-Net", "MobileNetV2", "SE (r=8)"
    top1: float  # ImageNet val, percent
    top5: float
    source: str  # where in the paper: "Table 3" or "poster"
    params_m: float | None = None  # 2^20 units ("24.37M")
    flops_g: float | None = None  # 2^30 units ("3.86G"); MobileNetV2's "319.4M" (2^20 units) is 319.4 / 1024
    train_fps: int | None = None  # images/s, 4x RTX 2080Ti
    infer_fps: int | None = None
    released_checkpoint: str | None = None  # the official weights' file name (its kernels are in the name)


def _table3(model: str, backbone: str, method: str, params_m: float, flops_g: float, train_fps: int,
            infer_fps: int, top1: float, top5: float, released: str | None = None) -> PaperResult:
    return PaperResult(model, backbone, method, top1, top5, "Table 3", params_m, flops_g, train_fps, infer_fps,
                       released)


def _poster(model: str, backbone: str, method: str, top1: float, top5: float,
            released: str | None = None) -> PaperResult:
    return PaperResult(model, backbone, method, top1, top5, "poster", released_checkpoint=released)


_ROWS = (
    _poster("resnet18", "ResNet-18", "ResNet", 70.40, 89.45),
    _poster("se_resnet18", "ResNet-18", "SENet", 70.59, 89.78),
    _poster("eca_resnet18", "ResNet-18", "ECA-Net", 70.78, 89.92, "eca_resnet18_k3577.pth.tar"),
    _poster("resnet34", "ResNet-34", "ResNet", 73.31, 91.40),
    _poster("se_resnet34", "ResNet-34", "SENet", 73.87, 91.65),
    _poster("cbam_resnet34", "ResNet-34", "CBAM", 74.01, 91.76),
    _poster("eca_resnet34", "ResNet-34", "ECA-Net", 74.21, 91.83, "eca_resnet34_k3357.pth.tar"),
    _table3("resnet50", "ResNet-50", "ResNet", 24.37, 3.86, 1024, 1855, 75.20, 92.52),
    _table3("se_resnet50", "ResNet-50", "SENet", 26.77, 3.87, 759, 1620, 76.71, 93.38),
    _table3("cbam_resnet50", "ResNet-50", "CBAM", 26.77, 3.87, 472, 1213, 77.34, 93.69),
    _table3("eca_resnet50", "ResNet-50", "ECA-Net", 24.37, 3.86, 785, 1805, 77.48, 93.68,
            "eca_resnet50_k3557.pth.tar"),
    _table3("resnet101", "ResNet-101", "ResNet", 42.49, 7.34, 386, 1174, 76.83, 93.48),
    _table3("se_resnet101", "ResNet-101", "SENet", 47.01, 7.35, 367, 1044, 77.62, 93.93),
    _table3("cbam_resnet101", "ResNet-101", "CBAM", 47.01, 7.35, 270, 635, 78.49, 94.31),
    _table3("eca_resnet101", "ResNet-101", "ECA-Net", 42.49, 7.35, 380, 1089, 78.65, 94.34,
            "eca_resnet101_k3357.pth.tar"),
    _table3("resnet152", "ResNet-152", "ResNet", 57.40, 10.82, 281, 815, 77.58, 93.66),
    _table3("se_resnet152", "ResNet-152", "SENet", 63.68, 10.85, 268, 761, 78.43, 94.27),
    _table3("eca_resnet152", "ResNet-152", "ECA-Net", 57.40, 10.83, 279, 785, 78.92, 94.55,
            "eca_resnet152_k3357.pth.tar"),
    _table3("mobilenet_v2", "MobileNetV2", "MobileNetV2", 3.34, 319.4 / 1024, 711, 2086, 71.64, 90.20),
    _table3("se_mobilenet_v2", "MobileNetV2", "SE (r=8)", 3.40, 320.1 / 1024, 671, 2000, 72.42, 90.67),
    _table3("eca_mobilenet_v2", "MobileNetV2", "ECA-Net", 3.34, 319.9 / 1024, 676, 2010, 72.56, 90.81,
            "eca_mobilenetv2_k13.pth.tar"),
)

RESULTS: dict[str, PaperResult] = {row.model: row for row in _ROWS}


def paper_result(model: str) -> PaperResult | None:
    """The paper's row for a registry model name, or None where the paper has none (e.g. cbam_resnet18)."""
    return RESULTS.get(model)
