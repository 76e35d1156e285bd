"""the catalog's album, cover, preview and links on tracks; playlists' length

Optional catalog columns the pages and the API show: the album, a cover image, an audio
preview, a link to where the track plays, its MusicBrainz recording id and its ISRC. Each
playlist keeps its total length and its count of new releases for its description (null
for playlists published before: the readers count them from the tracks then).

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("album", sa.String(length=512)),
    ("image_url", sa.String(length=2048)),
    ("preview_url", sa.String(length=2048)),
    ("external_url", sa.String(length=2048)),
    ("musicbrainz_recording_id", sa.String(length=36)),
    ("isrc", sa.String(length=12)),
)


def upgrade() -> None:
    with op.batch_alter_table("tracks", schema=None) as batch_op:
        for name, type_ in _COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("playlists", schema=None) as batch_op:
        batch_op.add_column(sa.Column("duration_ms", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("new_releases", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("playlists", schema=None) as batch_op:
        batch_op.drop_column("new_releases")
        batch_op.drop_column("duration_ms")
    with op.batch_alter_table("tracks", schema=None) as batch_op:
        for name, _type in reversed(_COLUMNS):
            batch_op.drop_column(name)
