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
from sqlalchemy import Engine, update
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from ecaplatform.cli.leaderboard import app_path
from ecaplatform.store.claims import sync_claims
from ecaplatform.store.database import Store, session_scope
from ecaplatform.store.schema import Base, EpochMetric, Result, Run

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


COCO_VAL_SIZE = 5_000


def coco_val_fingerprint(num_samples: int = COCO_VAL_SIZE) -> dict:
    """What the COCO data module reports for val2017: its split's role (val), the folder, 80 categories."""
    return {"dataset": "coco2017", "split": "val", "folder": "val2017", "num_samples": num_samples, "num_classes": 80,
            "hash": f"{num_samples:064x}"}  # fmt: skip


def create_store(url: str, *, with_claims: bool = True) -> Engine:
    """A writable engine on a new store with every table, and the paper's claims loaded from claims/eca_net.yaml."""
    engine = Store.at(url).engine()
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
    dataset: str | None = "imagenet"  # None: not recorded yet (a queued SLURM job)
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
    metrics: dict | None = None  # a result's metrics other than top-1/top-5 (COCO: box_ap, mask_ap, ...)


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
        best_top1=spec.top1 if spec.command == "fit" else None,  # a validate run logs no epochs
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
    fingerprints = {"imagenet": imagenet_val_fingerprint, "coco2017": coco_val_fingerprint}
    if spec.top1 is not None or spec.metrics:
        rows.append(
            Result(
                run_id=spec.id,
                model_name=spec.model,
                dataset=spec.dataset,
                split="val",
                metrics=spec.metrics or {n: v for n, v in (("top1", spec.top1), ("top5", spec.top5)) if v is not None},
                top1=spec.top1,
                top5=spec.top5,
                loss=1.0,
                samples_evaluated=spec.samples_evaluated,
                fingerprint=fingerprints[spec.dataset](spec.split_size) if spec.dataset in fingerprints
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


# The keys the tests name claims by (written before the Metric column said `top-1`).
METRIC_KEYS = {"top-1": "Top-1 Accuracy", "top-5": "Top-5 Accuracy"}


def claim_rows(at: AppTest) -> dict[str, dict[str, tuple[str, list[str]]]]:
    """The claims tables keyed by "Model/Metric" (e.g. "ECA-Net (ResNet-50)/Top-1 Accuracy"), in page order."""
    rows = {}
    for table in html_tables(at):
        for row in table:
            if "Claimed" in row:
                rows[f"{row['Model'][0]}/{METRIC_KEYS.get(row['Metric'][0], row['Metric'][0])}"] = row
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
    from ecaplatform.store.schema import Claim

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


# ------------------------------------------------------------------------------------------ per-image outcomes

import numpy as np  # noqa: E402  (appended section: these helpers only)

from ecaplatform.store.outcomes import Outcomes, encode  # noqa: E402
from ecaplatform.store.schema import ResultOutcome  # noqa: E402


def image_outcomes(top1: float, seed: int, n: int = IMAGENET_VAL_SIZE, classes: int = 1000,
                   independence: float = 0.3, images_seed: int = 2026) -> Outcomes:  # fmt: skip
    """Outcomes of one model on a shared set of images (ImageNet-like: `classes` sorted blocks): exactly
    round(top1 * n) right. Models share a per-image difficulty (`images_seed`) and differ by their own noise
    (`seed`, weight `independence`), so two models agree on most images, as real ones do."""
    target = np.repeat(np.arange(classes), -(-n // classes))[:n]
    difficulty = np.random.default_rng(images_seed).random(n)
    own = np.random.default_rng(seed)
    score = (1 - independence) * difficulty + independence * own.random(n)
    right = np.zeros(n, dtype=bool)
    right[np.argsort(score, kind="stable")[: round(top1 * n)]] = True
    predicted = np.where(right, target, (target + own.integers(1, classes, n)) % classes)
    top5 = right | (own.random(n) < 0.6)
    return Outcomes(target=target, predicted=predicted, top1=right, top5=top5)


def add_outcome_run(engine: Engine, run_id: str, model: str, outcomes: Outcomes, **spec: object) -> int:
    """A succeeded validate run of `model` whose val result (on the ImageNet-like fingerprint of outcomes' size)
    carries `outcomes`; `spec` overrides RunSpec fields. Returns the result's id."""
    n = outcomes.num_samples
    fields = dict(top1=outcomes.top1_percent, top5=outcomes.top5_percent, samples_evaluated=n, split_size=n)
    rows = run_rows(RunSpec(id=run_id, model=model, **{"job": f"verify-{model}", **fields, **spec}))  # type: ignore[arg-type]
    with session_scope(engine) as session:
        session.add_all(rows)
        session.flush()
        result = next(row for row in rows if isinstance(row, Result))
        stored = encode(outcomes)
        session.add(ResultOutcome(
            result_id=result.id, num_samples=stored.num_samples, class_dtype=stored.class_dtype,
            target=stored.target, predicted=stored.predicted, top1_bits=stored.top1_bits, top5_bits=stored.top5_bits,
        ))  # fmt: skip
        return result.id


# ------------------------------------------------------------------------------------------ seed spread


def fit_config(seed: int, model: str = "eca_resnet50", lr: float = 0.1, run_dir: str = "runs/x") -> dict:
    """A resolved fit config as LightningCLI records it: the seed twice (seed_everything, data seed) and run-local
    fields (job name, default_root_dir, checkpoint dir, workers) that differ between runs of one recipe."""
    return {
        "seed_everything": seed,
        "model": {"model_name": model, "lr": lr, "momentum": 0.9, "weight_decay": 1e-4, "num_classes": 1000},
        "data": {"class_path": "ecaplatform.datamodules.ImageNetDataModule",
                 "init_args": {"root": "/data/imagenet", "batch_size": 256, "seed": seed, "num_workers": 8 + seed}},
        "trainer": {"max_epochs": 100, "devices": 8, "precision": "16-mixed", "default_root_dir": run_dir},
        "job": {"name": f"{model}-seed{seed}", "launcher": "slurm"},
        "checkpoint": {"dirpath": f"{run_dir}/checkpoints"},
        "ckpt_path": None,
    }  # fmt: skip


def add_seed_runs(engine: Engine, values: Iterable[float], *, prefix: str = "seed", model: str = "eca_resnet50",
                  lr: float = 0.1, first_seed: int = 0) -> list[str]:  # fmt: skip
    """One succeeded fit run per value, same recipe, seeds first_seed, first_seed + 1, ...; their run ids."""
    specs = [RunSpec(id=f"{prefix}-{first_seed + i}", model=model, command="fit", job=f"train-{model}", top1=value,
                     config=fit_config(first_seed + i, model, lr, run_dir=f"runs/{prefix}-{i}"))
             for i, value in enumerate(values)]  # fmt: skip
    add_runs(engine, specs)
    return [spec.id for spec in specs]


# ------------------------------------------------------------------------------------------ a reproducer's store

DEMO_SPLIT = 360  # the digits demo's held-out images


def add_reproducer_runs(engine: Engine) -> None:
    """What a reproducer's store holds: a verifying validate, a fit below tolerance, the CPU digits demo still
    running (eca_resnet18) with finished digits runs of ResNet-18 and ECA-ResNet-18 that have per-image outcomes, a
    lost run, a SLURM-preempted (interrupted) run, a failed run, a partial ImageNet validation, and a COCO val2017
    validation of the released Mask R-CNN ECA-ResNet-50 that verifies its box AP and mask AP claims."""
    add_runs(
        engine,
        [
            RunSpec(id="verify-r50-7f3c9a2e1b", top1=77.43, top5=93.65, job="verify_eca_resnet50",
                    claim_id="eca_resnet50-imagenet-top1", config=fit_config(0)),
            RunSpec(id="fit-r101-5d1e8b7c44", model="eca_resnet101", command="fit", job="eca_resnet101", top1=78.21,
                    top5=94.0, epochs=6, claim_id="eca_resnet101-imagenet-top1", started=T0 + timedelta(hours=1)),
            RunSpec(id="demo-live-00aa11bb22", model="eca_resnet18", status="running", command="fit", job="demo_cpu",
                    dataset="digits", epochs=2, started=datetime.now(timezone.utc) - timedelta(minutes=2)),
            RunSpec(id="lost-r152-9e8d7c6b5a", model="eca_resnet152", status="running", command="fit",
                    job="eca_resnet152", epochs=3, heartbeat=T0 + timedelta(hours=5), claim_id=None),
            RunSpec(id="preempted-mbv2-4c3b2a", model="eca_mobilenet_v2", status="interrupted", command="fit",
                    job="eca_mobilenet_v2", epochs=3),
            RunSpec(id="failed-r34-0f0e0d0c", model="eca_resnet34", status="failed", command="fit", job="eca_resnet34",
                    epochs=1),
            RunSpec(id="partial-r34-1a2b3c4d", model="eca_resnet34", job="verify_eca_resnet34", top1=74.90,
                    samples_evaluated=12_800, split_size=IMAGENET_VAL_SIZE),
            RunSpec(id="verify-mrcnn50-3c9d2e", model="mask_rcnn_eca_resnet50_fpn", dataset="coco2017",
                    job="verify_coco_mask_rcnn_eca_resnet50_fpn", claim_id="mask_rcnn_eca_resnet50_fpn-coco-box_ap",
                    samples_evaluated=COCO_VAL_SIZE, split_size=COCO_VAL_SIZE, started=T0 + timedelta(hours=2),
                    metrics={"box_ap": 38.93, "box_ap50": 61.2, "box_ap75": 42.0, "box_aps": 24.1, "box_apm": 42.7,
                             "box_apl": 49.8, "mask_ap": 35.54, "mask_ap50": 58.0, "mask_ap75": 37.6,
                             "mask_aps": 17.5, "mask_apm": 38.9, "mask_apl": 51.7}),
        ],
    )  # fmt: skip
    demo = dict(dataset="digits", command="fit", job="demo_cpu", samples_evaluated=DEMO_SPLIT, split_size=DEMO_SPLIT)
    add_outcome_run(engine, "demo-r18-aaaa", "resnet18", image_outcomes(0.50, seed=1, n=DEMO_SPLIT, classes=10),
                    **demo)  # fmt: skip
    add_outcome_run(engine, "demo-eca18-bbbb", "eca_resnet18", image_outcomes(0.87, seed=2, n=DEMO_SPLIT, classes=10),
                    **demo)  # fmt: skip
    with session_scope(engine) as session:
        session.execute(update(Run).where(Run.id == "preempted-mbv2-4c3b2a").values(
            error="preempted at epoch 3, step 4200: requeued by SLURM (signal 10); the requeued job continues it",
            slurm_job_id="81234"))  # fmt: skip
        session.execute(update(Run).where(Run.id == "failed-r34-0f0e0d0c").values(
            error="CUDA out of memory. Tried to allocate 2.00 GiB"))  # fmt: skip
        session.execute(update(Run).where(Run.id == "verify-r50-7f3c9a2e1b").values(slurm_job_id="81200",
                                                                                     host="gpu-node07"))  # fmt: skip
