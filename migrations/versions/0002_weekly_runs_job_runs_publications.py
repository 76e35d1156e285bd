"""weekly runs, job runs, publications

Playlists now belong to a weekly run; readers see the run a week is published with.
Existing playlists are attached to one synthetic, published run per week.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "weekly_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("data_dir", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_weekly_runs")),
    )
    with op.batch_alter_table("weekly_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_weekly_runs_week_start"), ["week_start"], unique=False)
        batch_op.create_index(
            "uq_weekly_runs_active_week",
            ["week_start"],
            unique=True,
            postgresql_where=sa.text("status IN ('running', 'cancelling')"),
            sqlite_where=sa.text("status IN ('running', 'cancelling')"),
        )

    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("weekly_run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["weekly_run_id"],
            ["weekly_runs.id"],
            name=op.f("fk_job_runs_weekly_run_id_weekly_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_runs")),
        sa.UniqueConstraint(
            "weekly_run_id", "step", "chunk", name=op.f("uq_job_runs_weekly_run_id")
        ),
    )
    op.create_table(
        "week_publications",
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("weekly_run_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version"],
            ["model_versions.version"],
            name=op.f("fk_week_publications_model_version_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["weekly_run_id"],
            ["weekly_runs.id"],
            name=op.f("fk_week_publications_weekly_run_id_weekly_runs"),
        ),
        sa.PrimaryKeyConstraint("week_start", name=op.f("pk_week_publications")),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gate_reason", sa.Text(), nullable=True))

    with op.batch_alter_table("playlists", schema=None) as batch_op:
        batch_op.add_column(sa.Column("weekly_run_id", sa.Integer(), nullable=True))
    op.execute(
        "INSERT INTO weekly_runs (week_start, status, trigger, data_dir, started_at, finished_at,"
        " model_version) SELECT week_start, 'succeeded', 'migration', '', MIN(created_at),"
        " MAX(created_at), MAX(model_version) FROM playlists GROUP BY week_start"
    )
    op.execute(
        "UPDATE playlists SET weekly_run_id = (SELECT id FROM weekly_runs"
        " WHERE weekly_runs.week_start = playlists.week_start AND trigger = 'migration')"
    )
    op.execute(
        "INSERT INTO week_publications (week_start, weekly_run_id, model_version, published_at)"
        " SELECT week_start, id, model_version, finished_at FROM weekly_runs"
        " WHERE trigger = 'migration'"
    )
    op.execute(
        "UPDATE model_versions SET status = 'published'"
        " WHERE version IN (SELECT model_version FROM week_publications)"
    )
    with op.batch_alter_table("playlists", schema=None) as batch_op:
        batch_op.alter_column("weekly_run_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_constraint(batch_op.f("uq_playlists_user_id"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_playlists_user_id"), ["user_id", "week_start", "weekly_run_id"]
        )
        batch_op.create_index(
            batch_op.f("ix_playlists_weekly_run_id"), ["weekly_run_id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_playlists_weekly_run_id_weekly_runs"),
            "weekly_runs",
            ["weekly_run_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    # One playlist per (user, week) again: keep only the published runs' playlists.
    unpublished = (
        "SELECT id FROM playlists WHERE weekly_run_id NOT IN"
        " (SELECT weekly_run_id FROM week_publications)"
    )
    op.execute(f"DELETE FROM playlist_tracks WHERE playlist_id IN ({unpublished})")
    op.execute(
        "DELETE FROM playlists WHERE weekly_run_id NOT IN"
        " (SELECT weekly_run_id FROM week_publications)"
    )
    with op.batch_alter_table("playlists", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_playlists_weekly_run_id_weekly_runs"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_playlists_weekly_run_id"))
        batch_op.drop_constraint(batch_op.f("uq_playlists_user_id"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_playlists_user_id"), ["user_id", "week_start"]
        )
        batch_op.drop_column("weekly_run_id")

    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("gate_reason")

    op.drop_table("week_publications")
    op.drop_table("job_runs")
    with op.batch_alter_table("weekly_runs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_weekly_runs_active_week",
            postgresql_where=sa.text("status IN ('running', 'cancelling')"),
            sqlite_where=sa.text("status IN ('running', 'cancelling')"),
        )
        batch_op.drop_index(batch_op.f("ix_weekly_runs_week_start"))

    op.drop_table("weekly_runs")
