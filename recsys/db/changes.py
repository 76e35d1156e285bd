"""Change announcements for readers that cache: PostgreSQL ``NOTIFY`` on one channel.

Writers announce, in their own transaction, what a cached read may no longer show:

- ``user <user_id>``: the listener's thumbs, or a published playlist of theirs, changed;
- ``token <token_id>``: a token was revoked;
- ``all``: a week was published (every listener's newest playlist changed).

The web app writes a thumb and its announcement in one transaction too.

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


#: TCP keepalives of the listening connection: a connection the network dropped without a
#: word (a NAT or firewall timeout) fails within about 30 s instead of going quiet for good.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def listen(engine: Engine) -> Any:
    """A psycopg connection of its own, in autocommit, listening on the channel.

    Read what arrived, without waiting, with ``connection.notifies(timeout=0)``; each
    notification's ``payload`` is ``"<kind> <key>"``. It must reach PostgreSQL itself:
    ``LISTEN`` does not work through a pooler in transaction mode (PgBouncer).
    """
    import psycopg
    from psycopg.conninfo import make_conninfo

    url = engine.url
    conninfo = make_conninfo(
        "",
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
        **{key: str(value) for key, value in url.query.items()},
        **KEEPALIVES,
    )
    connection = psycopg.connect(conninfo, autocommit=True)
    connection.execute(f"LISTEN {CHANNEL}")
    return connection
