"""Per-image outcomes of a result (`result_outcomes`): each image's true and predicted class and whether top-1 and
top-5 were right, in the fingerprint's file order, so results on one fingerprint can be compared image by image

Revision ID: 0004_result_outcomes
Revises: 0003_result_pipeline
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_result_outcomes"
down_revision: str | None = "0003_result_pipeline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Results recorded before this revision simply have no row here.
    op.create_table(
        "result_outcomes",
        sa.Column("result_id", sa.Integer(), sa.ForeignKey("results.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("num_samples", sa.Integer(), nullable=False),
        sa.Column("class_dtype", sa.String(length=8), nullable=False),
        sa.Column("target", sa.LargeBinary(), nullable=False),
        sa.Column("predicted", sa.LargeBinary(), nullable=False),
        sa.Column("top1_bits", sa.LargeBinary(), nullable=False),
        sa.Column("top5_bits", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("result_outcomes")
