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
    authors: tuple[str, ...] = ()
    abstract: str = ""  # the paper's point in a few sentences (our summary, not the authors' text)


PAPER = Paper(
    title="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    venue="CVPR 2020",
    arxiv_id="1910.03151",
    arxiv_url="https://arxiv.org/abs/1910.03151",
    code_url="https://github.com/BangguWu/ECANet",
    authors=("Qilong Wang", "Banggu Wu", "Pengfei Zhu", "Peihua Li", "Wangmeng Zuo", "Qinghua Hu"),
    abstract=(
        "Channel attention such as SE improves deep CNNs, but its two fully connected layers reduce the channel "
        "dimension and add parameters. ECA-Net's Efficient Channel Attention module keeps every channel: after "
        "global average pooling, a 1-D convolution of kernel size k over the channel axis (k chosen adaptively "
        "from the number of channels) lets each channel attend to its k neighbours, followed by a sigmoid gate. "
        "It adds only a handful of parameters per block (80 in all for ResNet-50, whose 24.37M stay unchanged) "
        "and raises ImageNet top-1 of ResNet-50 from 75.20 to 77.48, above SENet and CBAM; the paper also reports "
        "gains on MobileNetV2 and on COCO object detection and instance segmentation."
    ),
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


# ---- COCO 2017 val2017 (5,000 images): Table 5 (box AP) and Table 6 (Mask R-CNN mask AP) ----------------------
@dataclass(frozen=True)
class DetectionResult:
    """One row of Tables 5/6. params in 10^6 and GFLOPs in 10^9 units: MMDetection's counter, which counts
    trainable parameters only (the frozen stem and layer1 excluded) at a 1280x800 input. None: not printed."""

    model: str | None  # the registry name; None for rows of other papers' modules (NL, GC), not claims here
    detector: str  # "Faster R-CNN" | "Mask R-CNN" | "RetinaNet"
    backbone: str  # "ResNet-50" | "ResNet-101"
    method: str  # the paper's row label: "ResNet", "SENet", "ECA-Net", "NL", "GC"
    params_m: float
    gflops: float
    box_ap: tuple[float | None, ...]  # AP, AP50, AP75, APS, APM, APL
    mask_ap: tuple[float | None, ...] | None = None  # Table 6, Mask R-CNN only
    released_checkpoint: str | None = None


AP_METRICS = ("AP", "AP50", "AP75", "APS", "APM", "APL")


def _det(model: str | None, detector: str, backbone: str, method: str, params: float, gflops: float,
         box: tuple, mask: tuple | None = None, released: str | None = None) -> DetectionResult:
    return DetectionResult(model, detector, backbone, method, params, gflops, box, mask, released)


_F, _M, _R, _R50, _R101 = "Faster R-CNN", "Mask R-CNN", "RetinaNet", "ResNet-50", "ResNet-101"
DETECTION_RESULTS: tuple[DetectionResult, ...] = (
    _det("faster_rcnn_resnet50_fpn", _F, _R50, "ResNet", 41.53, 207.07, (36.4, 58.2, 39.2, 21.8, 40.0, 46.2)),
    _det("faster_rcnn_se_resnet50_fpn", _F, _R50, "SENet", 44.02, 207.18, (37.7, 60.1, 40.9, 22.9, 41.9, 48.2)),
    _det("faster_rcnn_eca_resnet50_fpn", _F, _R50, "ECA-Net", 41.53, 207.18, (38.0, 60.6, 40.9, 23.4, 42.1, 48.0),
         released="faster_rcnn_ecanet50_k5_bs8_lr0.01"),
    _det("faster_rcnn_resnet101_fpn", _F, _R101, "ResNet", 60.52, 283.14, (38.7, 60.6, 41.9, 22.7, 43.2, 50.4)),
    _det("faster_rcnn_se_resnet101_fpn", _F, _R101, "SENet", 65.24, 283.33, (39.6, 62.0, 43.1, 23.7, 44.0, 51.4)),
    _det("faster_rcnn_eca_resnet101_fpn", _F, _R101, "ECA-Net", 60.52, 283.32,
         (40.3, 62.9, 44.0, 24.5, 44.7, 51.3), released="faster_rcnn_ecanet101_3357_bs8_lr0.01"),
    _det("mask_rcnn_resnet50_fpn", _M, _R50, "ResNet", 44.18, 275.58, (37.2, 58.9, 40.3, 22.2, 40.7, 48.0),
         (34.1, 55.5, 36.2, 16.1, 36.7, 50.0)),
    _det("mask_rcnn_se_resnet50_fpn", _M, _R50, "SENet", 46.67, 275.69, (38.7, 60.9, 42.1, 23.4, 42.7, 50.0),
         (35.4, 57.4, 37.8, 17.1, 38.6, 51.8)),
    _det(None, _M, _R50, "NL", 46.50, 288.70, (38.0, 59.8, 41.0, None, None, None),
         (34.7, 56.7, 36.6, None, None, None)),
    _det(None, _M, _R50, "GC", 46.90, 279.60, (39.4, 61.6, 42.4, None, None, None),
         (35.7, 58.4, 37.6, None, None, None)),
    _det("mask_rcnn_eca_resnet50_fpn", _M, _R50, "ECA-Net", 44.18, 275.69, (39.0, 61.3, 42.1, 24.2, 42.8, 49.9),
         (35.6, 58.1, 37.7, 17.6, 39.0, 51.8), "mask_rcnn_ecanet50_k3377_bs8_lr0.01"),
    _det("mask_rcnn_resnet101_fpn", _M, _R101, "ResNet", 63.17, 351.65, (39.4, 60.9, 43.3, 23.0, 43.7, 51.4),
         (35.9, 57.7, 38.4, 16.8, 39.1, 53.6)),
    _det("mask_rcnn_se_resnet101_fpn", _M, _R101, "SENet", 67.89, 351.84, (40.7, 62.5, 44.3, 23.9, 45.2, 52.8),
         (36.8, 59.3, 39.2, 17.2, 40.3, 53.6)),
    _det("mask_rcnn_eca_resnet101_fpn", _M, _R101, "ECA-Net", 63.17, 351.83, (41.3, 63.1, 44.8, 25.1, 45.8, 52.9),
         (37.4, 59.9, 39.8, 18.1, 41.1, 54.1), "mask_rcnn_ecanet101_k3357_bs8_lr0.01"),
    _det("retinanet_resnet50_fpn", _R, _R50, "ResNet", 37.74, 239.32, (35.6, 55.5, 38.2, 20.0, 39.6, 46.8)),
    _det("retinanet_se_resnet50_fpn", _R, _R50, "SENet", 40.23, 239.43, (37.1, 57.2, 39.9, 21.2, 40.7, 49.3)),
    _det("retinanet_eca_resnet50_fpn", _R, _R50, "ECA-Net", 37.74, 239.43, (37.3, 57.7, 39.6, 21.9, 41.3, 48.9),
         released="RetinaNet_ecanet50_k3377_bs8_lr0.01"),
    _det("retinanet_resnet101_fpn", _R, _R101, "ResNet", 56.74, 315.39, (37.7, 57.5, 40.4, 21.1, 42.2, 49.5)),
    _det("retinanet_se_resnet101_fpn", _R, _R101, "SENet", 61.45, 315.58, (38.7, 59.1, 41.6, 22.1, 43.1, 50.9)),
    _det("retinanet_eca_resnet101_fpn", _R, _R101, "ECA-Net", 56.74, 315.57, (39.1, 59.9, 41.8, 22.8, 43.4, 50.6),
         released="RetinaNet_ecanet101_k3357_bs8_lr0.01"),
)


def detection_result(model: str) -> DetectionResult | None:
    """The Table 5/6 row of a registered detector name, or None (e.g. the CPU demo's ResNet-18 detectors)."""
    return next((r for r in DETECTION_RESULTS if r.model == model), None)


@dataclass(frozen=True)
class PaperNumber:
    """One number the paper prints for a model and metric, with the row it is read from: what a claim states."""

    value: float
    backbone: str  # "ResNet-50"; for detectors the detector too ("Faster R-CNN, ResNet-50"): rows compare within it
    method: str
    source: str  # "Table 3", "poster", "Table 5", "Table 6"


def paper_number(model: str, metric: str) -> PaperNumber | None:
    """The paper's number for `model` (a registry name) and `metric` (top1, top5; box_ap, box_ap50, ..., mask_apl),
    or None where the paper prints none."""
    row = RESULTS.get(model)
    if row is not None:
        value = getattr(row, metric, None) if metric in ("top1", "top5") else None
        return PaperNumber(float(value), row.backbone, row.method, row.source) if value is not None else None
    detection = detection_result(model)
    kind, _, stat = metric.partition("_")
    if detection is None or kind not in ("box", "mask") or stat.upper() not in AP_METRICS:
        return None
    values = detection.box_ap if kind == "box" else detection.mask_ap
    value = values[AP_METRICS.index(stat.upper())] if values else None
    if value is None:
        return None
    return PaperNumber(float(value), f"{detection.detector}, {detection.backbone}", detection.method,
                       "Table 5" if kind == "box" else "Table 6")  # fmt: skip
