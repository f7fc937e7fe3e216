"""Results record their input pipeline: `results.pipeline` ("torchvision", "dali-cpu" or "dali-gpu"), the one
that produced the evaluation's batches (only the reference torchvision pipeline verifies a claim)

Revision ID: 0003_result_pipeline
Revises: 0002_run_heartbeat
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_result_pipeline"
down_revision: str | None = "0002_run_heartbeat"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: results recorded before this revision have no pipeline (read as torchvision, the
    # only pipeline there was then).
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("pipeline", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("pipeline")
