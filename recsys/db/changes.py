"""Change announcements for readers that cache: PostgreSQL ``NOTIFY`` on one channel.

Writers announce, in their own transaction, what a cached read may no longer show:

- ``user <user_id>``: the listener's thumbs changed;
- ``token <token_id>``: a token was revoked;
- ``all``: a week was published (every listener's newest playlist changed).

PostgreSQL delivers a notification only when its transaction commits, so a reader never
hears of a change it cannot yet see. SQLite has no such channel: there, nothing announces
and readers do not cache (see :mod:`webapp.cache`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

CHANNEL = "cratedigger_changes"
USER = "user"
TOKEN = "token"
ALL = "all"


def announce(session: Session, kind: str, key: str | int = "") -> None:
    """Announce a change when the session's transaction commits (PostgreSQL only)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(select(func.pg_notify(CHANNEL, f"{kind} {key}".strip())))


def can_listen(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def listen(engine: Engine) -> Any:
    """A connection of its own (outside the pool), in autocommit, listening on the channel.

    Read what arrived, without waiting, with ``connection.notifies(timeout=0)``; each
    notification's ``payload`` is ``"<kind> <key>"``.
    """
    pooled = engine.raw_connection()
    connection = pooled.driver_connection
    assert connection is not None
    pooled.detach()  # this connection is the listener's for good, never back in the pool
    connection.autocommit = True
    connection.execute(f"LISTEN {CHANNEL}")
    return connection
