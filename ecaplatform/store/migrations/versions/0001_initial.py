"""Initial schema: claims, runs, epoch metrics, results (exactly ecaplatform/store/schema.py at 0.1.0)

Revision ID: 0001_initial
Revises: (none)
Create Date: 2026-11-26 01:17:18.819058
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("paper", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("backbone", sa.String(length=32), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=32), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("expected_samples", sa.Integer(), nullable=False),
        sa.Column("expected_classes", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("claimed", sa.Float(), nullable=False),
        sa.Column("tolerance", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_claims_model", "claims", ["model"])

    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_name", sa.String(length=128), nullable=False),
        sa.Column("claim_id", sa.String(length=64), nullable=True),
        sa.Column("command", sa.String(length=16), nullable=False),
        sa.Column("model_name", sa.String(length=64), nullable=False),
        sa.Column("dataset_name", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("git_commit", sa.String(length=40), nullable=True),
        sa.Column("git_dirty", sa.Boolean(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=True),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("host", sa.String(length=128), nullable=True),
        sa.Column("accelerator", sa.String(length=64), nullable=True),
        sa.Column("num_nodes", sa.Integer(), nullable=False),
        sa.Column("world_size", sa.Integer(), nullable=False),
        sa.Column("wandb_path", sa.String(length=256), nullable=True),
        sa.Column("wandb_mode", sa.String(length=16), nullable=True),
        sa.Column("wandb_id", sa.String(length=64), nullable=True),
        sa.Column("checkpoint_path", sa.Text(), nullable=True),
        sa.Column("checkpoint_sha256", sa.String(length=64), nullable=True),
        sa.Column("slurm_job_id", sa.String(length=32), nullable=True),
        sa.Column("best_top1", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["claim_id"],
            ["claims.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_runs_claim_id", "runs", ["claim_id"])
    op.create_index("ix_runs_job_name", "runs", ["job_name"])
    op.create_index("ix_runs_model_name", "runs", ["model_name"])
    op.create_index("ix_runs_slurm_job_id", "runs", ["slurm_job_id"])
    op.create_index("ix_runs_status", "runs", ["status"])

    op.create_table(
        "epoch_metrics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "epoch", "name", name="uq_epoch_metric"),
    )
    op.create_index("ix_epoch_metrics_run_id", "epoch_metrics", ["run_id"])

    op.create_table(
        "results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("model_name", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=32), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("top1", sa.Float(), nullable=True),
        sa.Column("top5", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("samples_evaluated", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_results_model_dataset", "results", ["model_name", "dataset", "split"])
    op.create_index("ix_results_run_id", "results", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_results_run_id", table_name="results")
    op.drop_index("ix_results_model_dataset", table_name="results")

    op.drop_table("results")
    op.drop_index("ix_epoch_metrics_run_id", table_name="epoch_metrics")

    op.drop_table("epoch_metrics")
    op.drop_index("ix_runs_status", table_name="runs")
    op.drop_index("ix_runs_slurm_job_id", table_name="runs")
    op.drop_index("ix_runs_model_name", table_name="runs")
    op.drop_index("ix_runs_job_name", table_name="runs")
    op.drop_index("ix_runs_claim_id", table_name="runs")

    op.drop_table("runs")
    op.drop_index("ix_claims_model", table_name="claims")

    op.drop_table("claims")
