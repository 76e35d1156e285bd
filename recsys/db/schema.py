"""The schema revision this code needs, and the one a database has: checks, never migrations.

The migrations (``migrations/``) are run by ``cratedigger db upgrade`` and the containers'
entry point; the web app's readiness and the weekly run only check the revision here, with
plain SQLAlchemy.
"""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

#: The newest revision in ``migrations/versions/``: a new revision bumps it (a test compares
#: the two). Revision ids are zero-padded sequence numbers, so they also compare as strings.
SCHEMA_REVISION = "0008"
#: Where Alembic records a database's revision.
VERSION_TABLE = "alembic_version"


def current_revision(engine: Engine) -> str | None:
    """The database's revision; None when no migration was applied (or all were undone)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        revision = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    return None if revision is None else str(revision)


def is_up_to_date(engine: Engine) -> bool:
    """Whether the database is at :data:`SCHEMA_REVISION`."""
    return current_revision(engine) == SCHEMA_REVISION
