"""exports of published weeks to the warehouse

After a week publishes, its playlists go to a BigQuery table; the state of each week's
export (attempts, rows, the last error) is kept for ``status`` and ``/operator/runs``.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "playlist_exports",
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("destination", sa.String(length=3100), nullable=False),
        sa.Column("weekly_run_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["weekly_run_id"],
            ["weekly_runs.id"],
            name=op.f("fk_playlist_exports_weekly_run_id_weekly_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("week_start", "destination", name=op.f("pk_playlist_exports")),
    )
    with op.batch_alter_table("playlist_exports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_playlist_exports_weekly_run_id"), ["weekly_run_id"])


def downgrade() -> None:
    with op.batch_alter_table("playlist_exports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_playlist_exports_weekly_run_id"))
    op.drop_table("playlist_exports")
