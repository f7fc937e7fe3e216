"""Compare page: ECA-Net against its baselines on each backbone, the paper's numbers next to ours (Figure 1, and its
COCO counterpart: box AP against parameters), and paired comparisons image by image (difference with a 95% interval,
McNemar's p, the classes that differ most)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from ecaplatform.store.board import dataset_name, decimals, metric_name
from ecaplatform.store.comparison import DEFAULT_RESAMPLES, describe_fingerprint, fmt_p
from ecaplatform.store.database import Store
from leaderboard import ap_figure, data, paired, render

BACKBONE_ORDER = ["ResNet-18", "ResNet-34", "ResNet-50", "ResNet-101", "ResNet-152", "MobileNetV2"]
METHOD_ORDER = ["ResNet", "MobileNetV2", "SENet", "SE (r=8)", "CBAM", "ECA-Net"]

store = data.store()
table = data.compare_frame(store)

st.title("ECA-Net against its baselines")
st.markdown(
    "Top-1 (ImageNet) and AP (COCO) per backbone, on each claim's data set and split. **Paper** is the claimed "
    "number; **ours** is the best recorded result that qualifies under the verification rule (the whole split, each "
    "image counted once), so subset and demo runs never appear here. **Paired** compares ECA-Net with each baseline "
    "on the same images of the claims' data set, where both have a result with per-image outcomes there: our "
    "difference with its 95% paired bootstrap interval and McNemar's exact p, next to the paper's difference, and the "
    "classes where the two differ most."
)
if table.empty:
    st.info("No top-1 or AP claims to compare.")
    st.stop()


def order(values: pd.Series, preferred: list[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in preferred if v in present] + [v for v in present if v not in preferred]


# Figure 1 of the paper: parameters against top-1, one line per attention method and family (ResNet-50/101/152;
# MobileNetV2 on its own), each paper point labelled. Ours are drawn as squares where a qualifying result exists.
ATTENTION_OF_METHOD = {"ResNet": "none", "MobileNetV2": "none", "SENet": "SE", "SE (r=8)": "SE", "CBAM": "CBAM"}
ATTENTION_COLOURS = {"none": "#4c78a8", "SE": "#f58518", "CBAM": "#54a24b", "ECA-Net": "#e45756"}
figure = table[(table["dataset"] == "imagenet") & (table["metric"] == "top1") & table["params_m"].notna()]
figure = figure.assign(attention=figure["method"].map(lambda m: ATTENTION_OF_METHOD.get(m, m)),
                       family=figure["backbone"].map(lambda b: "ResNet" if b.startswith("ResNet") else b))  # fmt: skip
paper_points = figure.assign(source="paper", top1=figure["paper_value"])
our_points = figure[figure["our_value"].notna()].assign(source="ours", top1=lambda t: t["our_value"])
if paper_points.empty:
    st.caption("Parameter counts come from ecaplatform/paper.py; none are available, so no figure.")
else:
    colour = alt.Color(
        "attention:N",
        title="attention",
        scale=alt.Scale(domain=list(ATTENTION_COLOURS), range=list(ATTENTION_COLOURS.values())),
    )
    encoding = {
        "x": alt.X("params_m:Q", title="parameters (M, 2^20 units, log scale)",
                   scale=alt.Scale(type="log", domain=[2.5, 80], nice=False)),
        "y": alt.Y("top1:Q", title="ImageNet top-1 (%)", scale=alt.Scale(zero=False)),
        "color": colour,
        "tooltip": ["backbone", "method", "source", alt.Tooltip("top1:Q", format=".2f"), "params_m"],
    }
    paper_layer = alt.Chart(paper_points).mark_line(point=alt.OverlayMarkDef(size=70)).encode(
        detail="line:N", order="params_m:Q", **encoding
    ).transform_calculate(line="datum.attention + datum.family")
    layers = paper_layer
    if not our_points.empty:
        layers += alt.Chart(our_points).mark_square(size=110, filled=False, strokeWidth=2).encode(**encoding)
    # Each paper point labelled; ECA-Net's above and SE's below, where they sit close to another method's.
    labels = alt.layer(*(
        alt.Chart(paper_points[paper_points["attention"].isin(group)])
        .mark_text(align="left", dx=7, dy=dy, fontSize=10)
        .encode(x="params_m:Q", y="top1:Q", color=colour, text="text:N")
        .transform_calculate(text="datum.method + ' ' + format(datum.top1, '.2f')")
        for group, dy in ((["ECA-Net"], -8), (["SE"], 8), (["none", "CBAM"], 0))
    ))  # fmt: skip
    st.altair_chart(
        (layers + labels).properties(height=420, title="Parameters vs top-1, paper (lines) and ours (squares)"),
        width="stretch",
    )
# The same for COCO (Table 5): box AP against parameters, one colour per detector family.
ap_points = ap_figure.ap_params_frame(table)
if not ap_points.empty:
    st.altair_chart(ap_figure.ap_params_chart(ap_points), width="stretch")
    st.caption("Table 5's parameter counts are MMDetection's (trainable parameters only: the frozen stem and first "
               "stage are not counted); ours are the claims' qualifying results on COCO 2017 val.")  # fmt: skip

ECA = "ECA-Net"


@st.cache_data(ttl=data.CACHE_TTL_S, show_spinner=False)
def paired_board(store: Store, pairs: tuple[tuple[str, str, str, str], ...]) -> list[paired.PairedEntry]:
    return paired.paired_comparisons(data.engine_for(store), pairs)


def backbone_pairs(rows: pd.DataFrame) -> list[tuple[str, str, str, float | None]]:
    """(method, baseline model, ECA model, paper's ECA minus baseline) for each baseline of one backbone on one
    data set."""
    eca = rows[rows["method"] == ECA]
    if eca.empty:
        return []
    eca_model, eca_paper = eca.iloc[0]["model"], eca.iloc[0]["paper_value"]
    pairs = []
    baselines = rows[rows["method"] != ECA]
    for r in baselines.set_index("method", drop=False).loc[order(baselines["method"], METHOD_ORDER)].itertuples():
        paper_delta = None if pd.isna(r.paper_value) or pd.isna(eca_paper) else float(eca_paper - r.paper_value)
        pairs.append((str(r.method), str(r.model), str(eca_model), paper_delta))
    return pairs


def images_cell(fingerprint: Mapping[str, Any]) -> str:
    """Which images, short (`imagenet/val, 50,000`); the whole fingerprint on hover."""
    where = "/".join(str(fingerprint.get(key) or "?") for key in ("dataset", "split"))
    samples = fingerprint.get("num_samples")
    shown = f"{where}, {samples:,}" if isinstance(samples, int) else where
    return f'<span title="{escape(describe_fingerprint(fingerprint))}">{escape(shown)}</span>'


def fmt_interval(low: float, high: float) -> str:
    return f"[{low:+.2f}, {high:+.2f}]"


def paired_section(pairs: list[tuple[str, str, str, float | None]], where: tuple[str, str],
                   entries: dict[tuple[str, str, str, str], paired.PairedEntry]) -> None:  # fmt: skip
    """The backbone's paired comparisons on `where` (data set, split): a table, one line for those without
    outcomes there, and per-class charts."""
    compared = []
    missing: dict[str, list[str]] = {}  # why -> the baselines it applies to
    for method, baseline, eca_model, paper_delta in pairs:
        entry = entries[(baseline, eca_model, *where)]
        if entry.comparison is None:
            missing.setdefault(str(entry.missing), []).append(method)
        else:
            compared.append((method, entry.comparison, paper_delta))
    if compared:
        cells = []
        for method, c, paper_delta in compared:
            s = c.stats
            within = "&ndash;" if paper_delta is None else ("yes" if s.ci_low <= paper_delta <= s.ci_high else "no")
            cells.append([
                escape(method),
                images_cell(c.a.fingerprint),
                f"{render.fmt_percent(s.top1_a)} &rarr; {render.fmt_percent(s.top1_b)}",
                render.fmt_delta(s.diff),
                fmt_interval(s.ci_low, s.ci_high),
                escape(fmt_p(s.p_value)),
                f"{s.b_only:,} / {s.a_only:,}",
                render.fmt_delta(paper_delta),
                within,
                f"{render.run_link(c.a.run_id)}<br>{render.run_link(c.b.run_id)}",
            ])  # fmt: skip
        st.markdown(f"**Paired, image by image**: {ECA} minus the baseline on the same images")
        st.html(
            render.table_html(
                ("ECA-Net vs", "Images", "Top-1 base → ECA", "Δ ours", "95% interval", "McNemar p", "Discordant",
                 "Δ paper", "Paper Δ inside", "Runs"),
                cells,
                numeric=(2, 3, 4, 5, 6, 7),
            )
        )  # fmt: skip
        st.caption(
            f"95% interval: paired bootstrap over images ({DEFAULT_RESAMPLES:,} resamples). Discordant: images only "
            "ECA-Net / only the baseline gets right at top-1, the pairs McNemar's exact test weighs. Paper Δ inside: "
            "whether the paper's difference lies in our interval. Runs: the baseline's, then ECA-Net's."
        )
    if missing:
        why = "; ".join(f"with {', '.join(methods)}: {reason}" for reason, methods in missing.items())
        st.caption(f"No paired comparison {render.md(why)}.")
    charts = [class_chart(method, c) for method, c, _ in compared if c.classes]
    for column, chart in zip(st.columns(len(charts)) if charts else [], charts, strict=True):
        with column:
            st.altair_chart(chart, width="stretch")


def class_chart(method: str, comparison: paired.ResultComparison) -> alt.Chart:
    """The classes where ECA-Net and the baseline differ most: ECA-Net minus the baseline, per class top-1."""
    frame = pd.DataFrame(
        {
            "class": [c.class_index for c in comparison.classes],
            "images": [c.images for c in comparison.classes],
            "top1_baseline": [c.acc_a for c in comparison.classes],
            "top1_eca": [c.acc_b for c in comparison.classes],
            "diff": [c.diff for c in comparison.classes],
        }
    )
    frame["better"] = frame["diff"].map(lambda d: ECA if d > 0 else method)
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("diff:Q", title=f"top-1 {ECA} minus {method} (points)"),
            y=alt.Y("class:N", title="class", sort=alt.EncodingSortField(field="diff", order="descending")),
            color=alt.Color("better:N", title="better on the class",
                            scale=alt.Scale(domain=[ECA, method], range=["#e45756", "#4c78a8"])),
            tooltip=["class", "images", alt.Tooltip("top1_baseline:Q", title=f"top-1 {method}", format=".1f"),
                     alt.Tooltip("top1_eca:Q", title=f"top-1 {ECA}", format=".1f"),
                     alt.Tooltip("diff:Q", format="+.1f")],
        )  # fmt: skip
        .properties(height=alt.Step(22), title=f"{ECA} vs {method}: the {len(frame)} classes that differ most")
    )


# Each data set's claims apart, and each metric's (a Mask R-CNN has a box AP and a mask AP claim per backbone).
splits = dict.fromkeys(zip(table["dataset"], table["split"], table["metric"], strict=True))
groups = [(dataset, split, metric, backbone) for (dataset, split, metric) in splits
          for backbone in order(table[(table["dataset"] == dataset) & (table["metric"] == metric)]["backbone"],
                                BACKBONE_ORDER)]  # fmt: skip
group_rows = {g: table[(table["dataset"] == g[0]) & (table["split"] == g[1]) & (table["metric"] == g[2])
                       & (table["backbone"] == g[3])] for g in groups}  # fmt: skip
pairs_by_group = {g: backbone_pairs(rows) for g, rows in group_rows.items()}
all_pairs = tuple(dict.fromkeys((b, e, g[0], g[1]) for g, pairs in pairs_by_group.items() for _, b, e, _ in pairs))
paired_entries = {(e.baseline_model, e.eca_model, *e.dataset.split("/", 1)): e for e in paired_board(store, all_pairs)}

def ours_vs_paper(rows: pd.DataFrame, metric: str) -> str:
    """ECA-Net minus each baseline, the paper's and ours (the claims' qualifying results), for a metric without
    per-image outcomes (COCO AP): "ResNet: paper +1.6, ours +1.5; SENet: paper +0.3, ours –"."""
    eca, digits = rows[rows["method"] == ECA], decimals(metric)
    if eca.empty:
        return ""
    paper_b, ours_b = eca.iloc[0]["paper_value"], eca.iloc[0]["our_value"]
    parts = [f"{r.method}: paper {paper_b - r.paper_value:+.{digits}f}, ours "
             + ("–" if ours_b is None or r.our_value is None else f"{ours_b - r.our_value:+.{digits}f}")
             for r in rows[rows["method"] != ECA].itertuples()]  # fmt: skip
    return f"{ECA} minus each baseline, {metric_name(metric)}: " + "; ".join(parts) + "."


for group in groups:
    dataset, split, metric, backbone = group
    rows = group_rows[group]
    rows = rows.set_index("method").loc[order(rows["method"], METHOD_ORDER)].reset_index()
    rows = rows.astype(object).where(rows.notna(), None)  # missing numbers and runs as None, not NaN
    where, digits, name = f"{dataset_name(dataset)} {split}", decimals(metric), metric_name(metric)
    st.subheader(render.md(f"{backbone} · {where}" + ("" if metric == "top1" else f" · {name}")))
    cells = [
        [
            escape(r.method),
            f"<code>{escape(r.model)}</code>",
            escape(where),
            "&ndash;" if r.params_m is None else f"{r.params_m:.2f}M",
            "&ndash;" if r.flops_g is None else f"{r.flops_g:.2f}G",
            render.fmt_percent(r.paper_value, digits),
            render.fmt_percent(r.our_value, digits),
            render.fmt_delta(r.delta, digits),
            render.status_badge(r.status),
            render.run_link(r.evidence_run_id),
        ]
        for r in rows.itertuples()
    ]
    st.html(
        render.table_html(
            ("Method", "Model", "Data", "Params (paper)", "FLOPs (paper)", f"{name[0].upper()}{name[1:]} paper",
             f"{name[0].upper()}{name[1:]} ours", "Δ", "Status", "Evidence"),
            cells,
            numeric=(3, 4, 5, 6, 7),
        )
    )  # fmt: skip
    if metric != "top1":  # per-image pairing is top-1's; AP is compared on the claims' whole-split results
        st.caption(render.md(ours_vs_paper(rows, metric)))
    paired_section(pairs_by_group[group], (dataset, split), paired_entries)
