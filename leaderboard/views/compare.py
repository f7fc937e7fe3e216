"""Compare page: ECA-Net against its baselines on each backbone, the paper's numbers next to ours (Figure 1), and
paired comparisons image by image (difference with a 95% interval, McNemar's p, the classes that differ most)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from ecaplatform.store.comparison import DEFAULT_RESAMPLES, describe_fingerprint, fmt_p
from ecaplatform.store.database import Store
from leaderboard import data, paired, render

BACKBONE_ORDER = ["ResNet-18", "ResNet-34", "ResNet-50", "ResNet-101", "ResNet-152", "MobileNetV2"]
METHOD_ORDER = ["ResNet", "MobileNetV2", "SENet", "SE (r=8)", "CBAM", "ECA-Net"]

store = data.store()
table = data.compare_frame(store)

st.title("ECA-Net against its baselines")
st.markdown(
    "ImageNet val top-1 per backbone. **Paper** is the claimed number; **ours** is the best recorded result that "
    "qualifies under the verification rule (the whole 50,000-image split, each image counted once), so subset and "
    "demo runs never appear here. **Paired** compares ECA-Net with each baseline on the same images, where both have "
    "a result with per-image outcomes: our difference with its 95% paired bootstrap interval and McNemar's exact p, "
    "next to the paper's difference, and the classes where the two differ most."
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

ECA = "ECA-Net"


@st.cache_data(ttl=data.CACHE_TTL_S, show_spinner=False)
def paired_board(store: Store, pairs: tuple[tuple[str, str], ...]) -> list[paired.PairedEntry]:
    return paired.paired_comparisons(data.engine_for(store), pairs)


def backbone_pairs(rows: pd.DataFrame) -> list[tuple[str, str, str, float | None]]:
    """(method, baseline model, ECA model, paper's ECA minus baseline) for each baseline of one backbone."""
    eca = rows[rows["method"] == ECA]
    if eca.empty:
        return []
    eca_model, eca_paper = eca.iloc[0]["model"], eca.iloc[0]["paper_top1"]
    pairs = []
    baselines = rows[rows["method"] != ECA]
    for r in baselines.set_index("method", drop=False).loc[order(baselines["method"], METHOD_ORDER)].itertuples():
        paper_delta = None if pd.isna(r.paper_top1) or pd.isna(eca_paper) else float(eca_paper - r.paper_top1)
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


def paired_section(pairs: list[tuple[str, str, str, float | None]],
                   entries: dict[tuple[str, str], paired.PairedEntry]) -> None:  # fmt: skip
    """The backbone's paired comparisons: a table, one line for those without outcomes, and per-class charts."""
    compared = []
    missing: dict[str, list[str]] = {}  # why -> the baselines it applies to
    for method, baseline, eca_model, paper_delta in pairs:
        entry = entries[(baseline, eca_model)]
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


backbones = order(table["backbone"], BACKBONE_ORDER)
pairs_by_backbone = {backbone: backbone_pairs(table[table["backbone"] == backbone]) for backbone in backbones}
all_pairs = tuple(dict.fromkeys((b, e) for pairs in pairs_by_backbone.values() for _, b, e, _ in pairs))
paired_entries = {(e.baseline_model, e.eca_model): e for e in paired_board(store, all_pairs)}

for backbone in backbones:
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
    paired_section(pairs_by_backbone[backbone], paired_entries)
