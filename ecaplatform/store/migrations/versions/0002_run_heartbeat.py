"""Runs get a heartbeat: `runs.heartbeat_at`, refreshed while the run's process lives (a run whose heartbeat
stopped is shown as lost)

Revision ID: 0002_run_heartbeat
Revises: 0001_initial
Create Date: 2026-11-26 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_run_heartbeat"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: runs recorded before this revision have no heartbeat (read as their start time).
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
