"""playlists keep their tracks rendered as JSON

A playlist read is then one row instead of a join of its tracks, their titles and artists.
Existing playlists are rendered from their rows here, in batches.

Revision ID: 0004
Revises: 0003
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("playlists", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tracks_json", sa.Text(), nullable=True))
    bind = op.get_bind()
    playlists = sa.table("playlists", sa.column("id", sa.Integer), sa.column("tracks_json"))
    rows = sa.text(
        "SELECT pt.playlist_id, pt.position, pt.track_id, t.title, t.artist_id, a.name,"
        " t.duration_ms, pt.score, pt.reason"
        " FROM playlist_tracks pt"
        " JOIN tracks t ON t.track_id = pt.track_id"
        " JOIN artists a ON a.artist_id = t.artist_id"
        " WHERE pt.playlist_id > :after AND pt.playlist_id <= :upto"
        " ORDER BY pt.playlist_id, pt.position"
    )
    after = 0
    while True:
        ids = [
            row[0]
            for row in bind.execute(
                sa.text("SELECT id FROM playlists WHERE id > :after ORDER BY id LIMIT :n"),
                {"after": after, "n": BATCH},
            )
        ]
        if not ids:
            break
        rendered: dict[int, list[dict[str, object]]] = {pid: [] for pid in ids}
        for (
            pid,
            position,
            track_id,
            title,
            artist_id,
            artist,
            duration,
            score,
            reason,
        ) in bind.execute(rows, {"after": after, "upto": ids[-1]}):
            rendered[pid].append(
                {
                    "position": position,
                    "track_id": track_id,
                    "title": title,
                    "artist_id": artist_id,
                    "artist": artist,
                    "duration_ms": int(duration),
                    "score": round(float(score), 6),
                    "reason": reason,
                    "thumb": None,
                }
            )
        bind.execute(
            playlists.update().where(playlists.c.id == sa.bindparam("pid")),
            [
                {"pid": pid, "tracks_json": json.dumps(tracks, separators=(",", ":"))}
                for pid, tracks in rendered.items()
            ],
        )
        after = ids[-1]
    with op.batch_alter_table("playlists", schema=None) as batch_op:
        batch_op.alter_column("tracks_json", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("playlists", schema=None) as batch_op:
        batch_op.drop_column("tracks_json")
