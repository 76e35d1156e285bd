"""weekly runs hold a lease and name their aggregation

A run's owner renews ``heartbeat_at`` while it works; the next run of the week abandons a
run whose owner is gone instead of waiting for it for ever. Each run aggregates into a
folder of its own (``aggregation``), so a killed re-run never touches the aggregates of
the week's published run.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("weekly_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("aggregation", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # Abandoned runs become failed ones: the old code knows no such status.
    op.execute("UPDATE weekly_runs SET status = 'failed' WHERE status = 'abandoned'")
    with op.batch_alter_table("weekly_runs", schema=None) as batch_op:
        batch_op.drop_column("aggregation")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("owner")
