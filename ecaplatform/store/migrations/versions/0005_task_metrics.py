"""Claims name their task and results carry their metrics by name: `claims.task` ("classification" for every claim
so far) and `results.metrics` ({"top1": ..., "top5": ...}, copied from those two columns, which stay: the
ecaplatform versions before this one read them, and read stores migrated since)

Revision ID: 0005_task_metrics
Revises: 0004_result_outcomes
Create Date: 2026-12-12 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_task_metrics"
down_revision: str | None = "0004_result_outcomes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases. The defaults fill the rows there are, and those a run that started before
    # the upgrade still writes with its older ecaplatform (Result.metric_values reads their top1/top5).
    op.add_column("claims", sa.Column("task", sa.String(length=32), nullable=False, server_default="classification"))
    op.add_column("results", sa.Column("metrics", sa.JSON(), nullable=False, server_default="{}"))
    results = sa.table("results", *map(sa.column, ("id", "top1", "top5")), sa.column("metrics", sa.JSON()))
    rows = op.get_bind().execute(sa.select(results.c.id, results.c.top1, results.c.top5)).all()
    metrics = [{"key": key, "metrics": {name: value for name, value in (("top1", top1), ("top5", top5))
                                        if value is not None}} for key, top1, top5 in rows]  # fmt: skip
    if metrics:
        update = results.update().where(results.c.id == sa.bindparam("key"))
        op.get_bind().execute(update.values(metrics=sa.bindparam("metrics", type_=sa.JSON())), metrics)


def downgrade() -> None:
    # DROP COLUMN in place (SQLite 3.35+): a batch copy would drop `results`, and with foreign keys on, dropping it
    # deletes its result_outcomes rows (ON DELETE CASCADE).
    op.execute("ALTER TABLE results DROP COLUMN metrics")
    op.execute("ALTER TABLE claims DROP COLUMN task")
