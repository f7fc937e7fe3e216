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


_T3, _POSTER = "Table 3", "poster"
_ROWS = (  # model, backbone, method, top-1, top-5, source, params, FLOPs, train FPS, inference FPS, released file
    PaperResult("resnet18", "ResNet-18", "ResNet", 70.40, 89.45, _POSTER),
    PaperResult("se_resnet18", "ResNet-18", "SENet", 70.59, 89.78, _POSTER),
    PaperResult("eca_resnet18", "ResNet-18", "ECA-Net", 70.78, 89.92, _POSTER,
                released_checkpoint="eca_resnet18_k3577.pth.tar"),
    PaperResult("resnet34", "ResNet-34", "ResNet", 73.31, 91.40, _POSTER),
    PaperResult("se_resnet34", "ResNet-34", "SENet", 73.87, 91.65, _POSTER),
    PaperResult("cbam_resnet34", "ResNet-34", "CBAM", 74.01, 91.76, _POSTER),
    PaperResult("eca_resnet34", "ResNet-34", "ECA-Net", 74.21, 91.83, _POSTER,
                released_checkpoint="eca_resnet34_k3357.pth.tar"),
    PaperResult("resnet50", "ResNet-50", "ResNet", 75.20, 92.52, _T3, 24.37, 3.86, 1024, 1855),
    PaperResult("se_resnet50", "ResNet-50", "SENet", 76.71, 93.38, _T3, 26.77, 3.87, 759, 1620),
    PaperResult("cbam_resnet50", "ResNet-50", "CBAM", 77.34, 93.69, _T3, 26.77, 3.87, 472, 1213),
    PaperResult("eca_resnet50", "ResNet-50", "ECA-Net", 77.48, 93.68, _T3, 24.37, 3.86, 785, 1805,
                "eca_resnet50_k3557.pth.tar"),
    PaperResult("resnet101", "ResNet-101", "ResNet", 76.83, 93.48, _T3, 42.49, 7.34, 386, 1174),
    PaperResult("se_resnet101", "ResNet-101", "SENet", 77.62, 93.93, _T3, 47.01, 7.35, 367, 1044),
    PaperResult("cbam_resnet101", "ResNet-101", "CBAM", 78.49, 94.31, _T3, 47.01, 7.35, 270, 635),
    PaperResult("eca_resnet101", "ResNet-101", "ECA-Net", 78.65, 94.34, _T3, 42.49, 7.35, 380, 1089,
                "eca_resnet101_k3357.pth.tar"),
    PaperResult("resnet152", "ResNet-152", "ResNet", 77.58, 93.66, _T3, 57.40, 10.82, 281, 815),
    PaperResult("se_resnet152", "ResNet-152", "SENet", 78.43, 94.27, _T3, 63.68, 10.85, 268, 761),
    PaperResult("eca_resnet152", "ResNet-152", "ECA-Net", 78.92, 94.55, _T3, 57.40, 10.83, 279, 785,
                "eca_resnet152_k3357.pth.tar"),
    PaperResult("mobilenet_v2", "MobileNetV2", "MobileNetV2", 71.64, 90.20, _T3, 3.34, 319.4 / 1024, 711, 2086),
    PaperResult("se_mobilenet_v2", "MobileNetV2", "SE (r=8)", 72.42, 90.67, _T3, 3.40, 320.1 / 1024, 671, 2000),
    PaperResult("eca_mobilenet_v2", "MobileNetV2", "ECA-Net", 72.56, 90.81, _T3, 3.34, 319.9 / 1024, 676, 2010,
                "eca_mobilenetv2_k13.pth.tar"),
)

RESULTS: dict[str, PaperResult] = {row.model: row for row in _ROWS}


def paper_result(model: str) -> PaperResult | None:
    """The paper's row for a registry model name, or None where the paper has none (e.g. cbam_resnet18)."""
    return RESULTS.get(model)
