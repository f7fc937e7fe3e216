"""Leaderboard test helpers: build run stores (real tables, the real claims YAML, chosen runs) and read pages.

The leaderboard only reads; the builders here are the writer side, through a normal (writable) engine. The
readers run the app with Streamlit's AppTest and parse the HTML tables it renders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pandas as pd
import streamlit as st
from sqlalchemy import Engine
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from ecaplatform.leaderboard_launcher import app_path
from ecaplatform.tracking.claims import sync_claims
from ecaplatform.tracking.schema import Base, EpochMetric, Result, Run
from ecaplatform.tracking.store import make_engine, session_scope

APP = str(app_path())  # the installed `leaderboard` package's, as `eca leaderboard` runs it
IMAGENET_VAL_SIZE = 50_000
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


def imagenet_val_fingerprint(num_samples: int = IMAGENET_VAL_SIZE) -> dict:
    """What the ImageNet data module reports for its val split; a subset has fewer samples and another hash."""
    return {
        "dataset": "imagenet",
        "split": "val",
        "num_samples": num_samples,
        "num_classes": 1000,
        "hash": f"{num_samples:064x}",
    }


def create_store(url: str, *, with_claims: bool = True) -> Engine:
    """A writable engine on a new store with every table, and the paper's claims loaded from claims/eca_net.yaml."""
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    if with_claims:
        with session_scope(engine) as session:
            sync_claims(session)
    return engine


@dataclass
class RunSpec:
    """One run to insert; `top1` None means no final result (e.g. a run still going)."""

    id: str
    model: str = "eca_resnet50"
    status: str = "succeeded"
    job: str = "verify-eca_resnet50"
    command: str = "validate"
    dataset: str = "imagenet"
    top1: float | None = None
    top5: float | None = None
    samples_evaluated: int = IMAGENET_VAL_SIZE
    split_size: int = IMAGENET_VAL_SIZE
    epochs: int = 0  # >0 adds train_loss/val_loss/val_top1/val_top5 per epoch
    claim_id: str | None = None
    started: datetime = T0
    minutes: float = 12.0
    config: dict = field(default_factory=dict)
    wandb_path: str | None = None
    wandb_mode: str | None = "offline"
    heartbeat: datetime | None = None  # a queued or running run beats now unless given (an old beat: lost)


def curve_values(epochs: int, final_top1: float) -> list[dict[str, float]]:
    """Plausible learning curves that end at `final_top1`: loss falls, accuracy rises, every epoch distinct."""
    values = []
    for epoch in range(epochs):
        progress = (epoch + 1) / epochs
        top1 = final_top1 * (0.4 + 0.6 * progress)
        values.append(
            {
                "train_loss": 4.0 * (1.0 - 0.8 * progress),
                "val_loss": 3.5 * (1.0 - 0.7 * progress),
                "val_top1": top1,
                "val_top5": min(top1 + 15.0, 100.0),
            }
        )
    return values


def run_rows(spec: RunSpec) -> list[object]:
    """The ORM rows (run, its epoch metrics, its result) of one RunSpec."""
    ended = spec.started + timedelta(minutes=spec.minutes) if spec.status not in ("queued", "running") else None
    run = Run(
        id=spec.id,
        job_name=spec.job,
        claim_id=spec.claim_id,
        command=spec.command,
        model_name=spec.model,
        dataset_name=spec.dataset,
        status=spec.status,
        created_at=spec.started,
        started_at=spec.started,
        ended_at=ended,
        git_commit="0123456789abcdef0123456789abcdef01234567",
        git_dirty=False,
        config=spec.config or {"model": {"model_name": spec.model}, "trainer": {"max_epochs": spec.epochs}},
        config_hash="c" * 64,
        versions={"python": "3.11", "torch": "2.14.1"},
        host="node01",
        accelerator="cpu",
        world_size=1,
        wandb_path=spec.wandb_path,
        wandb_mode=spec.wandb_mode,
        best_top1=spec.top1,
    )
    if spec.heartbeat is not None:
        run.heartbeat_at = spec.heartbeat
    elif spec.status in ("queued", "running") and hasattr(Run, "heartbeat_at"):
        run.heartbeat_at = datetime.now(timezone.utc)  # alive: a running run that stopped beating shows as lost
    rows: list[object] = [run]
    final_top1 = spec.top1 if spec.top1 is not None else 50.0
    for epoch, metrics in enumerate(curve_values(spec.epochs, final_top1)):
        for name, value in metrics.items():
            rows.append(EpochMetric(run_id=spec.id, epoch=epoch, step=(epoch + 1) * 100, name=name, value=value))
    if spec.top1 is not None:
        rows.append(
            Result(
                run_id=spec.id,
                model_name=spec.model,
                dataset=spec.dataset,
                split="val",
                top1=spec.top1,
                top5=spec.top5,
                loss=1.0,
                samples_evaluated=spec.samples_evaluated,
                fingerprint=imagenet_val_fingerprint(spec.split_size)
                if spec.dataset == "imagenet"
                else {"dataset": spec.dataset, "split": "val", "num_samples": spec.split_size, "num_classes": 10},
                created_at=ended or spec.started,
            )
        )
    return rows


def add_runs(engine: Engine, specs: Iterable[RunSpec]) -> None:
    with session_scope(engine) as session:
        for spec in specs:
            session.add_all(run_rows(spec))


# ------------------------------------------------------------------------------------------ reading pages


def clear_app_caches() -> None:
    """st.cache_data lives for the whole process; each test has its own store and must not see another's."""
    st.cache_data.clear()
    st.cache_resource.clear()


class _TableParser(HTMLParser):
    """Collects the text of every table cell, and the hrefs inside it, from the HTML the app renders."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, list[str]]]]] = []
        self._cell: list[str] | None = None
        self._links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._links = [], []
        elif tag == "a" and self._cell is not None:
            self._links.append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append((" ".join("".join(self._cell).split()), self._links))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_tables(at: AppTest) -> list[list[dict[str, tuple[str, list[str]]]]]:
    """Every HTML table on the page as a list of {header: (cell text, links)} rows."""
    parser = _TableParser()
    for element in at.html:
        parser.feed(element.value)
    tables = []
    for table in parser.tables:
        header = [text for text, _ in table[0]]
        rows: list[dict[str, tuple[str, list[str]]]] = []
        for cells in table[1:]:
            if len(cells) == 1 and len(header) > 1:  # a note row spanning the table belongs to the row above
                rows[-1]["note"] = cells[0]
            else:
                rows.append(dict(zip(header, cells, strict=True)))
        tables.append(rows)
    return tables


def claim_rows(at: AppTest) -> dict[str, dict[str, tuple[str, list[str]]]]:
    """The claims tables keyed by "Model/Metric" (e.g. "ECA-Net (ResNet-50)/Top-1 Accuracy"), in page order."""
    rows = {}
    for table in html_tables(at):
        for row in table:
            if "Claimed" in row:
                rows[f"{row['Model'][0]}/{row['Metric'][0]}"] = row
    return rows


def run_app(page: str | None = None, query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    if page:
        at.switch_page(page)
        at.query_params.update(query or {})
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_data(at: AppTest) -> list[pd.DataFrame]:
    """The data behind each Vega-Lite (Altair) chart on the page."""
    return [convert_arrow_bytes_to_pandas_df(c.proto.datasets[0].data.data) for c in at.get("vega_lite_chart")]


# ------------------------------------------------------------------------------------------ hostile data

# What a careless or malicious writer may leave in the store: HTML that runs script when rendered raw, a backtick
# that closes a Markdown code span, quotes that close an attribute, and a Markdown image that loads a tracker.
XSS_TAG = "<img src=x onerror=alert(1)>"
HOSTILE = f"x`'\"{XSS_TAG}"
MARKDOWN_IMAGE = "![t](https://tracker.invalid/t.png)"
HOSTILE_RUN_IDS = (HOSTILE, f"subset-{HOSTILE}", f"model-{HOSTILE}")


def add_hostile_runs(engine: Engine) -> None:
    """Three runs whose every text field is hostile, reaching every page: the evidence of the ResNet-50 top-1
    claim (claims, compare and run pages), a subset result shown as a claim's note, and a failed run of a
    hostile model with an error, W&B path, config and versions. Two claims get hostile labels and groups."""
    from sqlalchemy import update

    from ecaplatform.tracking.schema import Claim

    evidence, subset, failed = HOSTILE_RUN_IDS
    add_runs(
        engine,
        [
            RunSpec(id=evidence, top1=77.6, top5=93.8, epochs=2, command="fit", job=f"{HOSTILE} {MARKDOWN_IMAGE}",
                    wandb_path=f"ent/proj/{HOSTILE}", wandb_mode="online", config={HOSTILE: HOSTILE}),
            RunSpec(id=subset, model="eca_resnet101", top1=80.0, samples_evaluated=500, split_size=500),
            RunSpec(id=failed, model=HOSTILE, dataset=HOSTILE, status="failed", job=f"{HOSTILE} {MARKDOWN_IMAGE}",
                    top1=10.0, epochs=2, wandb_path=HOSTILE, wandb_mode="offline"),
        ],
    )  # fmt: skip
    with session_scope(engine) as session:
        session.execute(
            update(Result).where(Result.run_id == subset).values(dataset=HOSTILE, split=HOSTILE)
        )
        session.execute(
            update(Run)
            .where(Run.id.in_(HOSTILE_RUN_IDS))
            .values(error=f"{HOSTILE} {MARKDOWN_IMAGE}\nsecond line", git_commit=HOSTILE, host=HOSTILE,
                    accelerator=HOSTILE, checkpoint_path=HOSTILE, versions={HOSTILE: HOSTILE})
        )  # fmt: skip
        session.execute(
            update(Claim).where(Claim.id == "eca_resnet50-imagenet-top1").values(label=f"{HOSTILE} {MARKDOWN_IMAGE}")
        )
        session.execute(
            update(Claim).where(Claim.id == "eca_resnet152-imagenet-top1").values(backbone=HOSTILE, method=HOSTILE)
        )


# Elements whose text Streamlit shows as text, never as HTML or Markdown: st.dataframe (drawn in a canvas),
# st.code, select options and Vega charts (whose tooltips escape HTML).
PLAIN_TEXT_ELEMENTS = {"dataframe", "code", "selectbox", "multiselect", "vega_lite_chart", "text"}


def unsafe_markup(at: AppTest) -> list[str]:
    """Every element of the page that would render a hostile string as markup: HTML from the store in anything
    but a plain-text element, or a Markdown image in anything Streamlit renders as Markdown (all but st.html)."""
    found = []
    for root in (at.main, at.sidebar):
        for node in root:
            if node.type in PLAIN_TEXT_ELEMENTS or node.proto is None:
                continue
            text = str(node.proto)
            if XSS_TAG in text:
                found.append(f"{node.type}: {text[:300]}")
            elif node.type != "html" and MARKDOWN_IMAGE in text:
                found.append(f"{node.type} (Markdown): {text[:300]}")
    return found
