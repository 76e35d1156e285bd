"""Database sessions for the jobs, and the schema check a weekly run starts with.

The jobs never migrate: a Celery worker or a run finding the database at another schema
revision than this version needs refuses it (:func:`require_schema`).
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Engine

from recsys.db.engine import make_engine, make_session_factory
from recsys.db.schema import SCHEMA_REVISION, current_revision
from recsys.settings import Settings


class SchemaOutdated(RuntimeError):
    """The database is not at the schema revision this version of cratedigger needs."""


@functools.lru_cache(maxsize=4)
def _engine(database_url: str) -> Engine:
    """One engine (connection pool) per database and process."""
    return make_engine(database_url)


def sessions(settings: Settings) -> Any:
    return make_session_factory(_engine(settings.database_url))


def require_schema(settings: Settings) -> None:
    """Raise :class:`SchemaOutdated`, with the one line to show, unless the database is at
    :data:`recsys.db.schema.SCHEMA_REVISION`."""
    engine = _engine(settings.database_url)
    current = current_revision(engine)
    if current == SCHEMA_REVISION:
        return
    database = f"the database at {engine.url.render_as_string(hide_password=True)}"
    if current is not None and current > SCHEMA_REVISION:
        raise SchemaOutdated(
            f"{database} has schema revision {current}, newer than this version of "
            f"cratedigger needs ({SCHEMA_REVISION}): run the version that upgraded it"
        )
    has = f"schema revision {current}" if current else "no schema"
    raise SchemaOutdated(
        f"{database} has {has}, this version needs {SCHEMA_REVISION}: run `cratedigger db upgrade`"
    )
