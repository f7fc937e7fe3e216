"""Runs page: every recorded run, filterable by status, job, model and dataset, each linking to its run page."""

from __future__ import annotations

import streamlit as st

from ecaplatform.store.board import fmt_value
from ecaplatform.store.verification import SHOWN_RUN_STATUSES
from leaderboard import data, render
from leaderboard.queries import MAX_RUNS, filter_runs

MAX_ROWS_SHOWN = 2000  # the newest matching runs; filters narrow the rest down

store = data.store()
runs = data.runs_frame(store)

st.title("Runs")
if runs.empty:
    st.info("No runs recorded yet: `make demo` trains a small model on the CPU and records it here.")
    st.stop()


def options(column: str) -> list[str]:
    return sorted(v for v in runs[column].dropna().unique() if v != "")


filters = st.columns(4)
# Every status a run can show (lost too, before any run is), then any other the store holds.
status_options = [*SHOWN_RUN_STATUSES, *(s for s in options("status") if s not in SHOWN_RUN_STATUSES)]
statuses = filters[0].multiselect("Status", status_options, key="runs_status")
jobs = filters[1].multiselect("Job", options("job"), key="runs_job")
models = filters[2].multiselect("Model", options("model"), key="runs_model")
datasets = filters[3].multiselect("Dataset", options("dataset"), key="runs_dataset")

shown = filter_runs(runs, statuses, jobs, models, datasets)
truncated = f", the newest {MAX_ROWS_SHOWN:,} listed" if len(shown) > MAX_ROWS_SHOWN else ""
read = f" (the store's newest {MAX_RUNS:,})" if len(runs) >= MAX_RUNS else ""
st.caption(f"{len(shown):,} of {len(runs):,} runs{read}{truncated}")
shown = shown.head(MAX_ROWS_SHOWN).copy()
shown["run"] = [render.run_href(run_id) for run_id in shown["id"]]
shown["duration"] = [render.fmt_duration(s) for s in shown["duration_s"]]
shown["top1"] = [fmt_value(None if v is None or v != v else v) for v in shown["top1"]]  # NaN: none; "-", not None

st.dataframe(
    shown[["run", "status", "job", "command", "model", "dataset", "top1", "duration", "created_at", "slurm_job_id",
           "host", "commit", "wandb_url", "wandb", "claim"]],
    hide_index=True,
    width="stretch",
    column_config={
        "run": st.column_config.LinkColumn("Run", display_text=r"run\?run=(.*)"),
        "status": "Status",
        "job": "Job",
        "command": "Command",
        "model": "Model",
        "dataset": "Dataset",
        "top1": st.column_config.TextColumn("Top-1 (%)",
                                            help="A fit run's best val top-1; another run's result's, as `eca runs`"),
        "duration": "Duration",
        "created_at": st.column_config.DatetimeColumn("Created (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "slurm_job_id": "SLURM job",
        "host": "Host",
        "commit": "Commit",
        "wandb_url": st.column_config.LinkColumn("W&B", display_text="open"),
        "wandb": "W&B run (path or offline dir)",
        "claim": "Claim",
    },
)

picked = st.selectbox("Open a run", shown["id"].tolist(), index=None, placeholder="run id")
if picked:
    st.page_link("views/run.py", label=f"Run {render.md(picked)}", icon=":material/open_in_new:",
                 query_params={"run": picked})  # fmt: skip
