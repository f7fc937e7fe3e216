"""Run page (`run?run=<id>`): provenance, results, learning curves and the resolved config of one run."""

from __future__ import annotations

import altair as alt
import streamlit as st
import yaml

from ecaplatform.store.verification import LOST
from leaderboard import data, queries, render

store = data.store()
run_id = st.query_params.get("run")

st.title("Run")
if not run_id:
    runs = data.runs_frame(store)
    if runs.empty:
        st.info("No runs recorded yet: `make demo` trains a small model on the CPU and records it here.")
        st.stop()
    run_id = st.selectbox("Run", runs["id"].tolist(), index=0, key="run_pick")
    st.query_params["run"] = run_id

detail = data.run_detail(store, run_id)
if detail is None:
    st.error(f"No run with id {render.md(repr(run_id))} in the store {render.md(store.display_url)}. "
             "Pick one on the Runs page.")  # fmt: skip
    st.page_link("views/runs.py", label="All runs", icon=":material/list:")
    st.stop()

run = detail.run
st.html(render.run_heading_html(run))  # every value escaped: ids and names are user input (see render.py)
if run["status"] == LOST:  # stored as running, but its process stopped beating
    last_seen = run["heartbeat_at"] or run["started_at"] or run["created_at"]
    st.warning(
        f"Lost: its process stopped reporting at {render.md(f'{last_seen:%Y-%m-%d %H:%M:%S}')} UTC (killed, out of "
        "memory or a lost node). `eca submit JOB -- --ckpt_path last`, with this run's job YAML, continues it from "
        "its last checkpoint."
    )
if detail.evidence_for:
    claims = "; ".join(f"**{render.md(claim)}**" for claim in detail.evidence_for)
    st.success(f"This run is the evidence for the claim(s) {claims}.")
if run.get("error"):
    st.error("The run failed:")
    st.code(run["error"], language=None, wrap_lines=True)  # as recorded: plain text, line breaks kept

summary = st.columns(4)
summary[0].metric("Best val top-1", "-" if run["best_top1"] is None else f"{run['best_top1']:.2f}%")
summary[1].metric("Duration", render.fmt_duration(run["duration_s"]))
nodes = run["num_nodes"]
summary[2].metric("World size", render.md(f"{run['world_size']} on {nodes} node{'s' if nodes != 1 else ''}"))
summary[3].metric("Results", len(detail.results))

st.subheader("Learning curves")
curves = detail.curves
if curves.empty:
    st.caption("No per-epoch metrics recorded for this run (validate/test runs log none).")
else:

    def curve_chart(names: tuple[str, ...], title: str, y_title: str) -> alt.Chart | None:
        part = curves[curves["name"].isin(names)]
        if part.empty:
            return None
        return (
            alt.Chart(part, title=title)
            .mark_line(point=True)
            .encode(
                x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1)),
                y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
                color=alt.Color("name:N", title=None),
                tooltip=["epoch", "name", alt.Tooltip("value:Q", format=".4f")],
            )
        )

    charts = [
        curve_chart(queries.LOSS_CURVES, "Loss", "cross-entropy"),
        curve_chart(queries.ACCURACY_CURVES, "Accuracy", "percent"),
    ]
    chart_columns = st.columns(2)
    for column, chart in zip(chart_columns, charts, strict=True):
        if chart is not None:
            column.altair_chart(chart, width="stretch")
    with st.expander("Per-epoch values"):
        st.dataframe(curves.pivot_table(index="epoch", columns="name", values="value"), width="stretch")

st.subheader("Results")
if detail.results.empty:
    st.caption("No final evaluation recorded.")
else:
    st.table(render.md_frame(detail.results))  # st.table renders cells as Markdown

st.subheader("Provenance")
wandb = run["wandb_url"] or run["wandb_path"]
if run["wandb_mode"] == "offline" and run["wandb_path"]:
    wandb = f"{run['wandb_path']} (offline; `wandb sync {run['wandb_path']}` uploads it)"
st.html(
    render.key_value_html(
        [
            ("Git commit", f"{run['git_commit'] or '-'}{' (dirty working tree)' if run['git_dirty'] else ''}"),
            ("Config hash", run["config_hash"]),
            ("Claim", run["claim_id"]),
            ("Created (UTC)", run["created_at"]),
            ("Started (UTC)", run["started_at"]),
            ("Ended (UTC)", run["ended_at"]),
            ("Last heartbeat (UTC)", run["heartbeat_at"]),
            ("Host", run["host"]),
            ("Accelerator", run["accelerator"]),
            ("Nodes / world size", f"{run['num_nodes']} / {run['world_size']}"),
            ("SLURM job", run["slurm_job_id"]),
            (f"W&B ({run['wandb_mode'] or 'unknown mode'})", wandb),
            ("Checkpoint", run["checkpoint_path"]),
            ("Checkpoint sha256", run["checkpoint_sha256"]),
        ]
    )
)
if run["versions"]:
    st.html(render.key_value_html(sorted(run["versions"].items())))

st.subheader("Resolved config")
st.caption("What `eca <command> --print_config` showed for this run; rerun it with `eca submit` or `eca fit --config`.")
st.code(yaml.safe_dump(run["config"] or {}, sort_keys=False), language="yaml")
