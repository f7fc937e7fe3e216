"""The SQL store's tables (SQLAlchemy 2.0 typed models).

Conventions every writer and reader relies on:
- A result's `metrics` are its final values by name, the names a claim's `metric` uses: "top1" and "top5" for
  classification. Accuracies are percentages, as the paper prints them (77.48, not 0.7748). Its `top1` and `top5`
  columns repeat those two for the ecaplatform versions before `metrics`, which read stores migrated since
  (`Result.metric_values` reads the results such a version writes into one).
- A result's `counts` keep its proportions exactly ({"top1": {"correct": 80, "evaluated": 203}}) and
  `Result.metric_values`, the one accessor every reader uses, derives their percentages from them (100 * 80 / 203,
  not a float32's 39.4088668823). A metric that is no proportion (detection's box AP) has no count, and neither
  has a result an ecaplatform before counts wrote: their value is the one in `metrics`.
- A result's `class_names` are its data set's class names in class-index order (ImageFolder: the sorted folder
  names); NULL where the data module cannot say (readers then name classes by index).
- A run's `status` is one of RUN_STATUSES; `queued` exists only for SLURM submissions not yet started.
  A `running` run whose `heartbeat_at` is too old is shown as `lost` (its process died without recording an
  end); that is derived when the store is read (tracking.verification.run_status), never stored.
- A result's `fingerprint` is the data module's dataset fingerprint for the split it evaluated:
  {"dataset": "imagenet", "split": "val", "num_samples": 50000, "num_classes": 1000, "hash": "<sha256>"}.
  `samples_evaluated` is how many samples the metric actually saw, summed over all ranks.
- A result's `pipeline` is the input pipeline that produced the evaluation's batches, one of
  ecaplatform.store.pipelines.PIPELINES ("torchvision", "dali-cpu", "dali-gpu"). NULL: recorded before pipelines were
  recorded; every such result came from the torchvision pipeline, the only one then.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "interrupted")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def percent(correct: int, evaluated: int) -> float:
    """correct of evaluated in percent, rounded once (integer product, correctly rounded division)."""
    return 100 * int(correct) / int(evaluated)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Claim(Base):
    """One number the paper claims, e.g. ECA-Net ResNet-50 ImageNet val top-1 = 77.48."""

    __tablename__ = "claims"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # e.g. "eca_resnet50-imagenet-top1"
    paper: Mapped[str] = mapped_column(String(64))  # "arXiv:1910.03151"
    label: Mapped[str] = mapped_column(String(128))  # "ECA-Net (ResNet-50)"
    backbone: Mapped[str] = mapped_column(String(32))  # "ResNet-50"
    method: Mapped[str] = mapped_column(String(32))  # "ECA-Net", "SENet", "ResNet", ...
    model: Mapped[str] = mapped_column(String(64), index=True)  # registry name, "eca_resnet50"
    task: Mapped[str] = mapped_column(String(32))  # "classification"; says which metrics the claim can name
    dataset: Mapped[str] = mapped_column(String(32))  # "imagenet"
    split: Mapped[str] = mapped_column(String(16))  # "val"
    expected_samples: Mapped[int] = mapped_column(Integer)  # 50000: a verifying result counts all of them
    expected_classes: Mapped[int] = mapped_column(Integer)  # 1000
    metric: Mapped[str] = mapped_column(String(16))  # a name in its results' `metrics`: "top1", "top5"
    claimed: Mapped[float] = mapped_column(Float)  # percent
    tolerance: Mapped[float] = mapped_column(Float)  # percentage points below `claimed` still verifying
    source: Mapped[str] = mapped_column(String(128))  # "Table 3, p. 7"
    public: Mapped[bool] = mapped_column(Boolean, default=False)  # one of the four on the public page
    position: Mapped[int] = mapped_column(Integer, default=0)  # display order


class Run(Base):
    """One `eca fit|validate|test` invocation (all its ranks, all its requeues)."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # stable across resume/requeue
    job_name: Mapped[str] = mapped_column(String(128), index=True)
    claim_id: Mapped[str | None] = mapped_column(ForeignKey("claims.id"), nullable=True, index=True)
    command: Mapped[str] = mapped_column(String(16))  # fit | validate | test
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    dataset_name: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Refreshed by the running process (rank 0) every few tens of seconds; see verification.run_status.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    # provenance
    git_commit: Mapped[str | None] = mapped_column(String(40), nullable=True)
    git_dirty: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the resolved LightningCLI config
    config_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    versions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # python, torch, lightning, ...
    host: Mapped[str | None] = mapped_column(String(128), nullable=True)
    accelerator: Mapped[str | None] = mapped_column(String(64), nullable=True)  # "cpu", "cuda:NVIDIA H100"
    num_nodes: Mapped[int] = mapped_column(Integer, default=1)
    world_size: Mapped[int] = mapped_column(Integer, default=1)
    wandb_path: Mapped[str | None] = mapped_column(String(256), nullable=True)  # entity/project/id or dir
    wandb_mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    wandb_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    checkpoint_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    slurm_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    best_top1: Mapped[float | None] = mapped_column(Float, nullable=True)  # best val top-1 seen, percent

    metrics: Mapped[list[EpochMetric]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="EpochMetric.epoch"
    )
    results: Mapped[list[Result]] = relationship(back_populates="run", cascade="all, delete-orphan")


class EpochMetric(Base):
    """One logged scalar at the end of one epoch (long format: one row per name)."""

    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("run_id", "epoch", "name", name="uq_epoch_metric"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))  # "train_loss", "val_top1", "val_top5", ...
    value: Mapped[float] = mapped_column(Float)

    run: Mapped[Run] = relationship(back_populates="metrics")


class Result(Base):
    """A final evaluation: the numbers a claim is checked against."""

    __tablename__ = "results"
    __table_args__ = (Index("ix_results_model_dataset", "model_name", "dataset", "split"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(64))  # copied from the run for fast claim look-ups
    dataset: Mapped[str] = mapped_column(String(32))
    split: Mapped[str] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"top1": 77.48, "top5": 93.6}
    top1: Mapped[float | None] = mapped_column(Float, nullable=True)  # metrics["top1"], for older readers
    top5: Mapped[float | None] = mapped_column(Float, nullable=True)  # metrics["top5"], for older readers
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    samples_evaluated: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    pipeline: Mapped[str | None] = mapped_column(String(32), nullable=True)  # "torchvision", "dali-gpu", ...
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # {"top1": {"correct", "evaluated"}}
    # ["n01440764", ...] (NULL: unknown); deferred: a thousand names per result that listings and claims never read
    class_names: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True, deferred=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    run: Mapped[Run] = relationship(back_populates="results")

    @property
    def metric_values(self) -> dict[str, float]:
        """Its metrics by name, a proportion's exactly from its counts. A result that an older ecaplatform wrote
        into a store migrated since (a run started before the upgrade) has only the top1/top5 columns, all that
        version knew."""
        if self.metrics:
            values = dict(self.metrics)
        else:
            values = {name: value for name, value in (("top1", self.top1), ("top5", self.top5)) if value is not None}
        for name, count in (self.counts or {}).items():
            values[name] = percent(count["correct"], count["evaluated"])
        return values


class ResultOutcome(Base):
    """A result's per-image outcomes (tracking.outcomes: encode/decode), in the fingerprint's file order. A row of
    its own, read only when asked for: listings and claims never load the blobs."""

    __tablename__ = "result_outcomes"

    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), primary_key=True)
    num_samples: Mapped[int] = mapped_column(Integer)
    class_dtype: Mapped[str] = mapped_column(String(8))
    target: Mapped[bytes] = mapped_column(LargeBinary)
    predicted: Mapped[bytes] = mapped_column(LargeBinary)
    top1_bits: Mapped[bytes] = mapped_column(LargeBinary)
    top5_bits: Mapped[bytes] = mapped_column(LargeBinary)
