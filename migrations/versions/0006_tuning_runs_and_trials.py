"""self-tuning searches and their trials

The weekly run searches ALS parameters on its own every few weeks; each search and every
configuration it tried are kept for the operator page ``/operator/tuning``.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tuning_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("weekly_run_id", sa.Integer(), nullable=True),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("split", sa.Text(), nullable=True),
        sa.Column("listeners", sa.Integer(), nullable=True),
        sa.Column("current_score", sa.Float(), nullable=True),
        sa.Column("best_score", sa.Float(), nullable=True),
        sa.Column("holdout_current", sa.Float(), nullable=True),
        sa.Column("holdout_best", sa.Float(), nullable=True),
        sa.Column("best_params", sa.JSON(), nullable=True),
        sa.Column("adopted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["weekly_run_id"],
            ["weekly_runs.id"],
            name=op.f("fk_tuning_runs_weekly_run_id_weekly_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tuning_runs")),
    )
    with op.batch_alter_table("tuning_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tuning_runs_week_start"), ["week_start"])
        batch_op.create_index(batch_op.f("ix_tuning_runs_weekly_run_id"), ["weekly_run_id"])
    op.create_table(
        "tuning_trials",
        sa.Column("tuning_run_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["tuning_run_id"],
            ["tuning_runs.id"],
            name=op.f("fk_tuning_trials_tuning_run_id_tuning_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tuning_run_id", "number", name=op.f("pk_tuning_trials")),
    )


def downgrade() -> None:
    op.drop_table("tuning_trials")
    with op.batch_alter_table("tuning_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tuning_runs_weekly_run_id"))
        batch_op.drop_index(batch_op.f("ix_tuning_runs_week_start"))
    op.drop_table("tuning_runs")
