"""Results keep their proportions as exact counts (`results.counts`: {"top1": {"correct": 80, "evaluated": 203}}, from
which readers derive the percentage) and their data set's class names (`results.class_names`, NULL: unknown)

Revision ID: 0006_result_counts
Revises: 0005_task_metrics
Create Date: 2026-12-13 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_result_counts"
down_revision: str | None = "0005_task_metrics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROPORTIONS = ("top1", "top5")


def _count(value: float, evaluated: int) -> int | None:
    # The stored percentages came from float32 (torchmetrics): within ~1.2e-7 of the true share relatively, so
    # round(pct * n / 100) is the exact count for n <= 50,000 (ImageNet val) and in fact for up to millions of
    # images. A value that is no whole number of the samples (1e-6 * n off or more) gets no count and stays as is.
    share = value * evaluated / 100
    correct = round(share)
    return correct if 0 <= correct <= evaluated and abs(share - correct) <= 1e-6 * evaluated else None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases; NULL is what a run that started before the upgrade still writes with its
    # older ecaplatform (Result.metric_values then reads `metrics` or top1/top5, as before).
    op.add_column("results", sa.Column("counts", sa.JSON(), nullable=True))
    op.add_column("results", sa.Column("class_names", sa.JSON(), nullable=True))
    results = sa.table("results", *map(sa.column, ("id", "top1", "top5", "samples_evaluated")),
                       sa.column("metrics", sa.JSON()), sa.column("counts", sa.JSON()))  # fmt: skip
    query = sa.select(results.c.id, results.c.metrics, results.c.top1, results.c.top5, results.c.samples_evaluated)
    updates = []
    for key, metrics, top1, top5, evaluated in op.get_bind().execute(query).all():
        values = metrics or {"top1": top1, "top5": top5}  # `{}`: written by a version before `metrics`
        counts = {name: _count(float(values[name]), evaluated) for name in PROPORTIONS
                  if values.get(name) is not None and evaluated and evaluated > 0}  # fmt: skip
        exact = {name: {"correct": c, "evaluated": evaluated} for name, c in counts.items() if c is not None}
        if exact:
            updates.append({"key": key, "counts": exact})
    if updates:
        update = results.update().where(results.c.id == sa.bindparam("key"))
        op.get_bind().execute(update.values(counts=sa.bindparam("counts", type_=sa.JSON())), updates)


def downgrade() -> None:
    # DROP COLUMN in place (SQLite 3.35+), as 0005: a batch copy would drop `results` and, with foreign keys on,
    # its result_outcomes rows with it. The percentages in `metrics` and top1/top5 stay.
    op.execute("ALTER TABLE results DROP COLUMN class_names")
    op.execute("ALTER TABLE results DROP COLUMN counts")
