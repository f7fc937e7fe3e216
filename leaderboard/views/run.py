"""Run page (`run?run=<id>`): provenance, results, learning curves and the resolved config of one run."""

from __future__ import annotations

import altair as alt
import streamlit as st
import yaml

from ecaplatform.store.board import fmt_value
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
job_file = f"jobs/{run['job_name']}.yaml"  # jobs are named after their file (jobs/<name>.yaml)
resume = f"eca submit {job_file} -- --ckpt_path last --from_run {run['id']}"
if run["status"] == LOST:  # stored as running, but its process stopped beating
    last_seen = run["heartbeat_at"] or run["started_at"] or run["created_at"]
    st.warning(f"Lost: its process stopped reporting at {render.md(render.fmt_time(last_seen))} (killed, out of "
               "memory or a lost node). This continues this run from its last checkpoint (the job YAML it was "
               "started from):")  # fmt: skip
    st.code(resume, language="bash")
elif run["status"] == "interrupted":  # stopped on purpose (SIGTERM, a SLURM preemption or time limit): no failure
    st.info("Interrupted: it was stopped before it finished (a signal, a preemption or its time limit), not by an "
            "error; a SLURM requeue continues it by itself. By hand, from its last checkpoint:")  # fmt: skip
    st.code(resume, language="bash")
    if run.get("error"):
        st.caption(f"Recorded: {render.md(run['error'])}")
elif run.get("error"):
    st.error("The run failed:")
    st.code(run["error"], language=None, wrap_lines=True)  # as recorded: plain text, line breaks kept
if detail.evidence_for:
    claims = "; ".join(f"**{render.md(claim)}**" for claim in detail.evidence_for)
    st.success(f"This run is the evidence for the claim(s) {claims}.")
for note in detail.partial:
    st.warning(render.md(note))

summary = st.columns(4)
summary[0].metric("Best val top-1" if run["command"] == "fit" else "Top-1", fmt_value(run["top1"]))
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
                x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d")),
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
    st.table(render.md_frame(detail.results.astype(object).where(detail.results.notna(), "-")))  # cells: Markdown

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
            ("Created", render.fmt_time(run["created_at"])),
            ("Started", render.fmt_time(run["started_at"])),
            ("Ended", render.fmt_time(run["ended_at"])),
            ("Last heartbeat", render.fmt_time(run["heartbeat_at"])),
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

config = yaml.safe_dump(run["config"] or {}, sort_keys=False)
with st.expander(f"Resolved config ({config.count(chr(10))} lines)"):
    st.caption("What `eca <command> --print_config` showed for this run; rerun it with `eca submit` or "
               "`eca fit --config`.")  # fmt: skip
    st.code(config, language="yaml")
