"""The Compare page's COCO figure in the style of the paper's Figure 1: box AP against parameters (Table 5), one
colour per detector family, a line per method from ResNet-50 to ResNet-101, each paper point labelled ResNet / SE /
ECA, and our measured values (the claims' qualifying evidence) as squares. No Streamlit here: the page draws it."""

from __future__ import annotations

import altair as alt
import pandas as pd

FAMILY_COLOURS = {"Faster R-CNN": "#4c78a8", "Mask R-CNN": "#e45756", "RetinaNet": "#54a24b"}
SHORT_METHODS = {"ResNet": "ResNet", "SENet": "SE", "ECA-Net": "ECA"}
COLUMNS = ["family", "depth", "method", "label", "model", "params_m", "ap", "source"]


def ap_params_frame(compare: pd.DataFrame, metric: str = "box_ap") -> pd.DataFrame:
    """The figure's points from `queries.compare_frame`: per COCO claim of `metric` with a parameter count, the
    paper's AP (source "paper") and, where a qualifying result exists, ours (source "ours")."""
    on_coco = compare["dataset"].str.startswith("coco")
    rows = compare[(compare["metric"] == metric) & on_coco & compare["params_m"].notna()]
    points = []
    for r in rows.itertuples():
        family, _, depth = str(r.backbone).partition(", ")  # "Faster R-CNN, ResNet-50"
        base = {"family": family, "depth": depth, "method": r.method, "label": SHORT_METHODS.get(r.method, r.method),
                "model": r.model, "params_m": float(r.params_m)}  # fmt: skip
        points.append({**base, "ap": float(r.paper_value), "source": "paper"})
        if pd.notna(r.our_value):
            points.append({**base, "ap": float(r.our_value), "source": "ours"})
    return pd.DataFrame.from_records(points, columns=COLUMNS)


def ap_params_chart(points: pd.DataFrame, metric_title: str = "box AP") -> alt.LayerChart:
    """Paper points joined per (family, method) across depth and labelled; ours as open squares."""
    colour = alt.Color("family:N", title="detector",
                       scale=alt.Scale(domain=list(FAMILY_COLOURS), range=list(FAMILY_COLOURS.values())))  # fmt: skip
    encoding = {
        "x": alt.X("params_m:Q", title="parameters (M, Table 5: MMDetection's count, trainable only)",
                   scale=alt.Scale(zero=False, nice=False, padding=30)),
        "y": alt.Y("ap:Q", title=f"COCO val2017 {metric_title}", scale=alt.Scale(zero=False)),
        "color": colour,
        "tooltip": ["family", "depth", "method", "source", alt.Tooltip("ap:Q", format=".1f"), "params_m"],
    }  # fmt: skip
    paper = points[points["source"] == "paper"]
    ours = points[points["source"] == "ours"]
    lines = alt.Chart(paper).mark_line(point=alt.OverlayMarkDef(size=60)).encode(
        detail="line:N", order="params_m:Q", **encoding
    ).transform_calculate(line="datum.family + datum.method")
    labels = alt.Chart(paper).mark_text(align="left", dx=7, fontSize=10).encode(
        x="params_m:Q", y="ap:Q", color=colour, text="text:N"
    ).transform_calculate(text="datum.label + ' ' + format(datum.ap, '.1f')")
    layers = lines + labels
    if not ours.empty:
        layers += alt.Chart(ours).mark_square(size=110, filled=False, strokeWidth=2).encode(**encoding)
    return layers.properties(height=420, title=f"Parameters vs {metric_title}, paper (lines) and ours (squares)")
