"""HTML for the tables whose text must be real text on the page (st.dataframe draws into a canvas), and the
escaping every page uses.

Everything from the store is user input: run ids, job and model names, error messages, W&B paths, configs and
claim fields may hold HTML or Markdown. The rule, for every page:
- in HTML (st.html): `escape()` every value, and build links with `run_href`/`run_link` (URL-quoted, escaped);
- in anything Streamlit renders as Markdown (st.markdown, st.caption, st.error/success/info, headers, metric
  values, link labels, st.table cells): `md()` every value; never `unsafe_allow_html`;
- otherwise only APIs that show text as text: st.code, st.dataframe, select options, chart data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

import pandas as pd

from ecaplatform.store.board import BoardRow, dataset_name, decimals, metric_name
from ecaplatform.store.verification import LOST, NOT_REPRODUCED, RUNNING, UNVERIFIED, VERIFIED

RUN_PAGE = "run"  # the Run page's url_path (see app.py)

SHORT_ID = 14  # longer run ids show as head…tail, the whole id on hover (and in the link)
# Claim statuses and run statuses share the badge colours: green good, red bad, blue in progress, grey nothing yet;
# orange for a lost run (stored as running, its process stopped reporting: killed, out of memory, a lost node).
STATUS_CLASSES = {
    VERIFIED: "verified",
    NOT_REPRODUCED: "not-reproduced",
    UNVERIFIED: "unverified",
    RUNNING: "running",
    "succeeded": "verified",
    "failed": "not-reproduced",
    "running": "running",
    "queued": "running",
    "interrupted": "unverified",
    LOST: "lost",
}

STYLE = """
<style>
table.eca { border-collapse: collapse; width: 100%; font-size: 0.92rem; }
table.eca th { text-align: left; font-weight: 600; padding: 0.4rem 0.45rem; border-bottom: 2px solid #d0d4dc;
  vertical-align: bottom; }
table.eca td { padding: 0.4rem 0.45rem; border-bottom: 1px solid #eceef2; vertical-align: top; white-space: nowrap; }
table.eca td.wrap { white-space: normal; min-width: 12rem; }
table.eca td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.eca tr:hover td { background: #f7f8fa; }
table.eca .note { color: #6b7280; font-size: 0.82rem; white-space: normal; }
table.eca tr.has-note td { border-bottom: none; }
table.eca tr.note-row td { padding-top: 0; }
table.eca a { color: #1d4ed8; text-decoration: none; }
table.eca a:hover { text-decoration: underline; }
table.eca code { font-size: 0.85rem; }
.eca-status { display: inline-block; padding: 0.1rem 0.55rem; border-radius: 0.8rem; font-size: 0.8rem;
  font-weight: 600; white-space: nowrap; }
.eca-status.verified { background: #dcfce7; color: #166534; }
.eca-status.not-reproduced { background: #fee2e2; color: #991b1b; }
.eca-status.unverified { background: #eef0f3; color: #4b5563; }
.eca-status.running { background: #dbeafe; color: #1e40af; }
.eca-status.lost { background: #ffedd5; color: #9a3412; }
h3.eca-run-heading { font-size: 1.5rem; font-weight: 600; margin: 0.2rem 0 0.4rem 0; overflow-wrap: anywhere; }
p.eca-run-summary { margin: 0 0 0.6rem 0; overflow-wrap: anywhere; }
.eca-badge { display: inline-block; padding: 0.1rem 0.55rem; border-radius: 0.8rem; font-size: 0.8rem;
  background: #eef2ff; color: #3730a3; font-weight: 600; margin-right: 0.3rem; }
.delta-pos { color: #166534; }
.delta-neg { color: #991b1b; }
</style>
"""


# Markdown that can start anywhere in a line (emphasis, code, links and images, math, Streamlit's :colour[...] and
# :emoji: directives, tables), and what only starts a line (headings, lists, setext lines).
_MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]$:~|])")
_MARKDOWN_LINE_START = re.compile(r"^(\d*)([#+=.)-])(?=\s|$)")


def md(value: Any) -> str:
    """`value` as literal text inside Markdown: one line, every Markdown construct backslash-escaped, and HTML
    escaped (Markdown shows `&lt;` as `<`), so Streamlit shows exactly the characters of the value."""
    text = " ".join(str(value).split())
    text = _MARKDOWN_INLINE.sub(r"\\\1", text)
    text = _MARKDOWN_LINE_START.sub(r"\1\\\2", text)
    return escape(text, quote=True)


def md_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` with every text cell through `md()`, for st.table (which renders cells as Markdown)."""
    frame = frame.copy()
    for column in frame.columns:
        if any(isinstance(value, str) for value in frame[column]):
            frame[column] = [md(value) if isinstance(value, str) else value for value in frame[column]]
    return frame


def run_heading_html(run: Mapping[str, Any]) -> str:
    """The run page's heading and one-line summary: id and status badge; job, command, model and data set."""
    return (
        f'<h3 class="eca-run-heading"><code>{escape(str(run["id"]))}</code> {status_badge(run["status"])}</h3>'
        f'<p class="eca-run-summary"><strong>{escape(str(run["job_name"]))}</strong>: '
        f"<code>eca {escape(str(run['command']))}</code> of <code>{escape(str(run['model_name']))}</code> on "
        f"<code>{escape(str(run['dataset_name'] or '?'))}</code></p>"
    )


def run_href(run_id: str) -> str:
    """A link to the Run page, relative so that it also works behind a proxy path."""
    return f"{RUN_PAGE}?run={quote(run_id, safe='')}"


def short_id(run_id: str) -> str:
    """`20261126-013012-1a2b3c4d` as `20261126-…3c4d`: tables stay narrow; the link and its hover keep the id."""
    return run_id if len(run_id) <= SHORT_ID else f"{run_id[:9]}…{run_id[-4:]}"


def run_link(run_id: str | None) -> str:
    if not run_id:
        return "&ndash;"
    return (f'<a href="{escape(run_href(run_id))}" target="_self" title="{escape(run_id)}">'
            f"<code>{escape(short_id(run_id))}</code></a>")  # fmt: skip


def claim_href(claim_id: str) -> str:
    """A link to the claim's Reproduce page."""
    return f"reproduce?claim={quote(claim_id, safe='')}"


def fmt_time(moment: Any) -> str:
    """A time to the second, in UTC (the store writes UTC): `2026-11-20 08:00:00 UTC`; a dash for none."""
    if moment is None or (isinstance(moment, float) and math.isnan(moment)) or moment is pd.NaT:
        return "-"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def status_badge(status: str) -> str:
    css = STATUS_CLASSES.get(status, "unverified")
    return f'<span class="eca-status {css}">{escape(str(status))}</span>'


def fmt_percent(value: float | None, digits: int = 2) -> str:
    return "&ndash;" if value is None else f"{value:.{digits}f}"


def fmt_delta(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "&ndash;"
    css = "delta-pos" if value >= 0 else "delta-neg"
    return f'<span class="{css}">{value:+.{digits}f}</span>'


def fmt_count(value: int | None, of: int | None = None) -> str:
    if value is None:
        return "&ndash;"
    return f"{value:,} / {of:,}" if of else f"{value:,}"


def table_html(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = (),
               wrap: Sequence[int] = ()) -> str:  # fmt: skip
    """A table from already-escaped cell HTML; columns listed in `numeric` are right-aligned, those in `wrap` may
    wrap their text (every other cell stays on one line)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    css = {**{i: ' class="num"' for i in numeric}, **{i: ' class="wrap"' for i in wrap}}
    body = []
    for row in rows:
        cells = "".join(f"<td{css.get(i, '')}>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="eca"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


CLAIM_HEADERS = ("Model", "Dataset", "Metric", "Claimed", "Verified", "Δ", "Status", "Samples evaluated", "Evidence")


def claim_cells(row: BoardRow) -> list[str]:
    """The claim's model links to its Reproduce page (the commands that verify it)."""
    claim, digits = row.claim, decimals(row.claim.metric)  # AP with one decimal, as Tables 5 and 6
    return [
        f'<a href="{escape(claim_href(claim.id))}" target="_self">{escape(claim.label)}</a>',
        escape(f"{dataset_name(claim.dataset)} {claim.split}"),
        escape(metric_name(claim.metric)),
        fmt_percent(claim.claimed, digits),
        fmt_percent(row.verified_value, digits),
        fmt_delta(row.delta, digits),
        status_badge(row.status),
        fmt_count(row.samples_evaluated, claim.expected_samples if row.samples_evaluated is not None else None),
        run_link(row.evidence_run_id),
    ]


def claim_note(row: BoardRow) -> str | None:
    """Why the best result on record does not count, when there is one and the claim is not verified."""
    if row.best_other_value is None or row.status == VERIFIED:
        return None
    return (
        f"&#8627; best non-qualifying result: {row.best_other_value:.{decimals(row.claim.metric)}f} in "
        f"{run_link(row.best_other_run_id)}, "
        f"not evidence: {escape(row.best_other_reason or 'it does not qualify')}"
    )


def key_value_html(items: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of provenance fields; values are escaped, None shows as a dash."""
    rows = []
    for key, value in items:
        shown = "&ndash;" if value is None or value == "" else escape(str(value))
        rows.append([escape(key), shown])
    return table_html(("Field", "Value"), rows)


def fmt_duration(seconds: float | None) -> str:
    # NaN: a missing duration in a pandas column that also holds numbers (a queued run beside finished ones).
    if seconds is None or math.isnan(seconds):
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def reproductions_html(runs: pd.DataFrame) -> str:
    """The runs that tried a claim (queries.reproductions): newest first, who and where, what, the result, and
    whether it counts and why not."""
    rows = []
    for r in runs.itertuples():
        where = " · ".join(filter(None, [r.host, f"SLURM {r.slurm_job_id}" if r.slurm_job_id else ""])) or "-"
        seed = "" if r.seed is None or r.seed != r.seed else f", seed {r.seed}"
        value = "&ndash;" if r.value is None or r.value != r.value \
            else f"{r.value:.{decimals(r.metric)}f} {escape(metric_name(r.metric))}"  # fmt: skip
        counts = f'<span class="eca-status {"verified" if r.counts else "unverified"}">{"counts" if r.counts else "no"}'
        rows.append([
            f'{run_link(r.id)}<div class="note">{escape(fmt_time(r.created_at))}</div>',
            status_badge(r.status),
            escape(where),
            f"<code>{escape(r.model)}</code><div class=\"note\">{escape(f'{r.job} ({r.command}{seed})')}</div>",
            escape(dataset_name(r.dataset) if r.dataset else "?") + f'<div class="note">{escape(r.pipeline)}</div>',
            value,
            f'{counts}</span> <span class="note">{escape(r.why.removeprefix("counts: "))}</span>',
        ])  # fmt: skip
    headers = ("Run (UTC)", "Status", "Where", "Model and job", "Data, pipeline", "Result", "Counts for a claim?")
    return table_html(headers, rows, numeric=(5,), wrap=(6,))
