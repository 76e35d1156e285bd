"""Database sessions for the jobs: one engine (connection pool) per database and process."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Engine

from recsys.db.engine import make_engine, make_session_factory
from recsys.settings import Settings


@functools.lru_cache(maxsize=4)
def _engine(database_url: str) -> Engine:
    """One engine (connection pool) per database and process."""
    return make_engine(database_url)


def sessions(settings: Settings) -> Any:
    return make_session_factory(_engine(settings.database_url))
