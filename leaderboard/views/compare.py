"""Compare page: ECA-Net against its baselines on each backbone, the paper's numbers next to ours (Figure 1)."""

from __future__ import annotations

from html import escape

import altair as alt
import pandas as pd
import streamlit as st

from leaderboard import data, render

BACKBONE_ORDER = ["ResNet-18", "ResNet-34", "ResNet-50", "ResNet-101", "ResNet-152", "MobileNetV2"]
METHOD_ORDER = ["ResNet", "MobileNetV2", "SENet", "SE (r=8)", "CBAM", "ECA-Net"]

url = data.store_url()
table = data.compare_frame(url)

st.title("ECA-Net against its baselines")
st.markdown(
    "ImageNet val top-1 per backbone. **Paper** is the claimed number; **ours** is the best recorded result that "
    "qualifies under the verification rule (the whole 50,000-image split, each image counted once), so subset and "
    "demo runs never appear here."
)
if table.empty:
    st.info("No top-1 claims to compare.")
    st.stop()


def order(values: pd.Series, preferred: list[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in preferred if v in present] + [v for v in present if v not in preferred]


# Figure 1 of the paper: ResNet-50/101/152, parameters against top-1, one line per attention method.
# Ours are drawn as squares next to the paper's circles, where a qualifying result exists.
ATTENTION_OF_METHOD = {"ResNet": "none", "MobileNetV2": "none", "SENet": "SE", "SE (r=8)": "SE", "CBAM": "CBAM"}
ATTENTION_COLOURS = {"none": "#4c78a8", "SE": "#f58518", "CBAM": "#54a24b", "ECA-Net": "#e45756"}
resnets = table[table["backbone"].str.startswith("ResNet") & table["params_m"].notna()]
resnets = resnets.assign(attention=resnets["method"].map(lambda m: ATTENTION_OF_METHOD.get(m, m)))
paper_points = resnets.assign(source="paper", top1=resnets["paper_top1"])
our_points = resnets[resnets["our_top1"].notna()].assign(source="ours", top1=lambda t: t["our_top1"])
if paper_points.empty:
    st.caption("Parameter counts come from ecaplatform/paper.py; none are available, so no figure.")
else:
    colour = alt.Color(
        "attention:N",
        title="attention",
        scale=alt.Scale(domain=list(ATTENTION_COLOURS), range=list(ATTENTION_COLOURS.values())),
    )
    encoding = {
        "x": alt.X("params_m:Q", title="parameters (M, 2^20 units)", scale=alt.Scale(zero=False)),
        "y": alt.Y("top1:Q", title="ImageNet top-1 (%)", scale=alt.Scale(zero=False)),
        "color": colour,
        "tooltip": ["backbone", "method", "source", alt.Tooltip("top1:Q", format=".2f"), "params_m"],
    }
    paper_layer = alt.Chart(paper_points).mark_line(point=alt.OverlayMarkDef(size=70)).encode(
        detail="attention:N", order="params_m:Q", **encoding
    )
    layers = paper_layer
    if not our_points.empty:
        layers += alt.Chart(our_points).mark_square(size=110, filled=False, strokeWidth=2).encode(**encoding)
    labels = alt.Chart(paper_points[paper_points["method"] == "ResNet"]).mark_text(dy=14, fontSize=11).encode(
        x="params_m:Q", y="top1:Q", text="backbone:N"
    )
    st.altair_chart(
        (layers + labels).properties(height=380, title="Parameters vs top-1, paper (lines) and ours (squares)"),
        width="stretch",
    )

for backbone in order(table["backbone"], BACKBONE_ORDER):
    rows = table[table["backbone"] == backbone]
    rows = rows.set_index("method").loc[order(rows["method"], METHOD_ORDER)].reset_index()
    rows = rows.astype(object).where(rows.notna(), None)  # missing numbers and runs as None, not NaN
    st.subheader(render.md(backbone))
    cells = [
        [
            escape(r.method),
            f"<code>{escape(r.model)}</code>",
            "&ndash;" if r.params_m is None else f"{r.params_m:.2f}M",
            "&ndash;" if r.flops_g is None else f"{r.flops_g:.2f}G",
            render.fmt_percent(r.paper_top1),
            render.fmt_percent(r.our_top1),
            render.fmt_delta(r.delta),
            render.status_badge(r.status),
            render.run_link(r.evidence_run_id),
        ]
        for r in rows.itertuples()
    ]
    st.html(
        render.table_html(
            ("Method", "Model", "Params (paper)", "FLOPs (paper)", "Top-1 paper", "Top-1 ours", "Δ", "Status",
             "Evidence"),
            cells,
            numeric=(2, 3, 4, 5, 6),
        )
    )
