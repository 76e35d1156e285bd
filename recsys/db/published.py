"""The published answers in Redis: the API's miss path as one key-value round trip.

A listener who opens the app once a day misses every web worker's own cache
(:mod:`webapp.cache`). This store keeps, shared by every worker and written at publication,
what such a request would otherwise read from the database: the listener's newest
published playlist row (with their thumbs on it) and the principal of their token. The
database stays the source of truth: a key that is missing, unreadable or stale is read from
the database and written back; Redis that is down, flushed or restarted costs speed only.

Keys (prefix ``cd:serve:``; every key expires after :data:`TTL_SECONDS`):

- ``e<epoch>:latest:<user_id>``: the row of :data:`recsys.db.repository.LATEST_PLAYLIST`
  as JSON, with the listener's stamp ``s`` (below), as publication writes it; or, once a
  web worker has rendered it, the response body and its ETag with the same stamp.
  ``<epoch>`` names the state of every week's publication (:func:`epoch`), read from the
  database.
- ``tok:<digest>``: a token's principal, with the token stamp.
- ``u:<user_id>``: the listener's stamp, a random value replaced on every change to what
  their answer shows (a thumb, an undo, a playlist rewritten after publication).
- ``tgen``: the token stamp, replaced on every revocation.
- ``gen``: the global stamp, part of every other: a worker that heard of a change but could
  not replace its stamp (Redis away) replaces this one before it reads the store again.

Why nothing goes wrong:

1. **A week switches atomically.** A reader takes its epoch from the database (when its
   change listener connects and when a publication is announced), never from Redis, so a
   request reads keys of exactly one publication state. The publisher writes the new
   epoch's keys only after its transaction committed; a reader that already switched and
   finds no key reads the database. The old epoch's keys are never read again and expire.
2. **A crash between the database commit and the Redis write** (or a write cut short) leaves
   the new epoch's keys missing, never wrong: those requests read the database and write
   back. The next publication writes a new epoch whole.
3. **A thumb, an undo or a revocation is visible at once.** Every change is announced in
   the writer's transaction (:mod:`recsys.db.changes`). Each web worker drains the
   announcements before every request, and replaces the stamp of what changed (``u:<id>``
   or ``tgen``) before it reads Redis; the worker that records a thumb replaces it at once.
   An entry is served only if its stamp equals the current one. A request that read the
   database before a change and writes back after it stamps its entry with the stamp it
   read *before* its database read, so the entry is dead on arrival.
4. **Stamps are random, not counters**, and every read first sets a missing stamp
   (``SET NX``) in the same ``MULTI`` as the ``MGET``: a stamp that was evicted or flushed
   comes back as a new value, so no old entry can match it again.
5. **A worker that cannot trust its announcements** (no live listening connection) neither
   reads nor writes the store (:meth:`webapp.cache.ReadCache.sync` returns None).

What is not covered: a change committed while no web worker listens at all (every web
worker down, and a CLI revocation or a regeneration meanwhile) is heard by nobody; such a
change must be followed by a publication or ``redis-cli --scan --pattern 'cd:serve:*'``
deleted, as the README says. A writer process that has the store configured (the web app,
the weekly run) replaces the stamps itself after its commit (:func:`forget_after_commit`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from recsys.db.models import ApiToken, WeekPublication
from recsys.db.tokens import Principal

log = logging.getLogger(__name__)

PREFIX = "cd:serve:"
#: every key expires after this long (two weeks: an old epoch is read for one at most)
TTL_SECONDS = 14 * 24 * 3600
#: Redis that does not answer within this long counts as down for this request
SOCKET_TIMEOUT = 0.25
#: after a failed call, the store is not asked again for this long (requests read the DB)
RETRY_SECONDS = 1.0
#: publication writes this many listeners' keys per round trip
WRITE_BATCH = 1000


def epoch(session: Session) -> str:
    """The state of every week's publication, from the database: changes with each
    publication (a new week, or a week published again with another run)."""
    count, newest = session.execute(
        select(func.count(), func.max(WeekPublication.published_at))
    ).one()
    stamp = newest.isoformat() if isinstance(newest, dt.datetime) else str(newest)
    return f"{count}.{stamp}".replace(" ", "T")


def touch_tokens(session: Session, token_ids: Sequence[int]) -> None:
    """Record that these tokens were used now (and commit): the uses of tokens that
    requests read from a cache, written a batch at a time."""
    now = dt.datetime.now(dt.UTC)
    session.execute(
        update(ApiToken).where(ApiToken.id.in_(list(token_ids))).values(last_used_at=now)
    )
    session.commit()


def _stamp() -> str:
    return secrets.token_hex(8)


def _user_key(user_id: str) -> str:
    return f"{PREFIX}u:{user_id}"


def _latest_key(epoch_: str, user_id: str) -> str:
    return f"{PREFIX}e{epoch_}:latest:{user_id}"


def _token_key(digest: str) -> str:
    return f"{PREFIX}tok:{digest}"


#: what starts a rendered entry (stamp, ETag, body) rather than a row's JSON
RENDERED = b"R"
TOKENS_KEY = f"{PREFIX}tgen"
EVERYTHING_KEY = f"{PREFIX}gen"


def encode_row(row: Sequence[Any], stamp: str) -> str:
    """A :data:`~recsys.db.repository.LATEST_PLAYLIST` row as the stored JSON."""
    values = list(row)
    values[2] = values[2].isoformat()  # week_start
    return json.dumps({"s": stamp, "r": values}, separators=(",", ":"))


def decode_row(text: str | bytes) -> tuple[str, tuple[Any, ...]]:
    """(stamp, row) of :func:`encode_row`'s JSON."""
    document = json.loads(text)
    values = document["r"]
    values[2] = dt.date.fromisoformat(values[2])
    return document["s"], tuple(values)


@dataclass(frozen=True)
class Lookup:
    """What one read found: entries already checked against their stamps (None: absent or
    stale), and the stamps to write back with."""

    principal: Principal | None
    row: tuple[Any, ...] | None
    user_stamp: str
    token_stamp: str
    #: the response body and ETag a web worker rendered from the row (the weekly run, which
    #: cannot render, publishes rows; the first request that reads one stores its answer)
    rendered: tuple[bytes, str] | None = None


class Store:
    """The published answers in the Redis at ``url`` (see the module's docstring). Each
    method returns None or does nothing when Redis fails; it is then left alone for
    :data:`RETRY_SECONDS`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: Any = None
        self._pid = 0
        self._down_until = 0.0

    def _redis(self) -> Any:
        if self._pid != os.getpid():  # a forked worker opens connections of its own
            import redis

            self._pid = os.getpid()
            self._client = redis.Redis.from_url(
                self.url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=SOCKET_TIMEOUT,
            )
        return self._client

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str) -> None:
        log.warning("serving store %s failed; reading the database", what, exc_info=True)
        self._down_until = time.monotonic() + RETRY_SECONDS

    def read(self, epoch_: str, user_id: str, digest: str) -> Lookup | None:
        """The token's principal and the listener's newest playlist row, one round trip."""
        if not self._available():
            return None
        user_key = _user_key(user_id)
        try:
            pipe = self._redis().pipeline(transaction=True)
            pipe.set(user_key, _stamp(), nx=True, ex=TTL_SECONDS)
            pipe.set(TOKENS_KEY, _stamp(), nx=True)
            pipe.set(EVERYTHING_KEY, _stamp(), nx=True)
            keys = (user_key, TOKENS_KEY, EVERYTHING_KEY, _token_key(digest))
            pipe.mget(*keys, _latest_key(epoch_, user_id))
            *_, (user, tokens, everything, token, latest) = pipe.execute()
        except Exception:
            self._failed("read")
            return None
        user_stamp = f"{everything.decode()}/{user.decode()}"
        token_stamp = f"{everything.decode()}/{tokens.decode()}"
        principal = _principal(token, token_stamp)
        row: tuple[Any, ...] | None = None
        rendered: tuple[bytes, str] | None = None
        if latest is not None and latest.startswith(RENDERED):
            header, _, body = latest.partition(b"\n")
            stamp, etag = header[len(RENDERED) :].decode().split(" ")
            rendered = (body, etag) if stamp == user_stamp else None
        elif latest is not None:
            stamp, stored = decode_row(latest)
            row = stored if stamp == user_stamp else None
        return Lookup(principal, row, user_stamp, token_stamp, rendered)

    def write_back(
        self,
        epoch_: str,
        lookup: Lookup,
        digest: str,
        principal: Principal | None,
        user_id: str,
        rendered: tuple[bytes, str] | None,
    ) -> None:
        """Keep what a request read from the database or rendered (the response body and
        its ETag), stamped as :meth:`read` found it."""
        if not self._available():
            return
        try:
            pipe = self._redis().pipeline(transaction=False)
            if principal is not None and lookup.principal is None:
                value = f"{lookup.token_stamp} {principal.token_id} {principal.role} "
                pipe.set(_token_key(digest), value + (principal.user_id or ""), ex=TTL_SECONDS)
            if rendered is not None and lookup.rendered is None:
                body, etag = rendered
                entry = RENDERED + f"{lookup.user_stamp} {etag}\n".encode() + body
                pipe.set(_latest_key(epoch_, user_id), entry, ex=TTL_SECONDS)
            pipe.execute()
        except Exception:
            self._failed("write")

    def forget_users(self, user_ids: Sequence[str]) -> bool:
        """New stamps for these listeners: their stored answers are dead. False when Redis
        failed: then only :meth:`forget_everything` makes the store trustworthy again."""
        return self._forget([_user_key(user_id) for user_id in user_ids])

    def forget_tokens(self) -> bool:
        """A new token stamp: every stored principal is dead (revocations are rare)."""
        return self._forget([TOKENS_KEY])

    def forget_everything(self) -> bool:
        """A new global stamp: every stored answer and principal is dead. False when Redis
        failed."""
        return self._forget([EVERYTHING_KEY])

    def _forget(self, keys: list[str]) -> bool:
        if not keys:
            return True
        try:
            pipe = self._redis().pipeline(transaction=False)
            for key in keys:
                pipe.set(key, _stamp(), ex=None if key == EVERYTHING_KEY else TTL_SECONDS)
            pipe.execute()
        except Exception:
            self._failed("forget")
            return False
        return True

    @staticmethod
    def _stamps(client: Any, user_ids: list[str]) -> dict[str, str]:
        pipe = client.pipeline(transaction=True)
        for user_id in user_ids:
            pipe.set(_user_key(user_id), _stamp(), nx=True, ex=TTL_SECONDS)
        pipe.set(EVERYTHING_KEY, _stamp(), nx=True)
        pipe.mget([EVERYTHING_KEY, *(_user_key(user_id) for user_id in user_ids)])
        everything, *found = pipe.execute()[-1]
        return {
            user_id: f"{everything.decode()}/{value.decode()}"
            for user_id, value in zip(user_ids, found, strict=True)
        }

    def write_rows(self, epoch_: str, rows: Sequence[Sequence[Any]], stamps: dict[str, str]) -> int:
        """Write playlist rows under ``epoch_`` with the stamps read before the rows were;
        raises when Redis fails."""
        pipe = self._redis().pipeline(transaction=False)
        for row in rows:
            key = _latest_key(epoch_, row[1])
            pipe.set(key, encode_row(row, stamps[row[1]]), ex=TTL_SECONDS)
        pipe.execute()
        return len(rows)

    def stamps(self, user_ids: list[str]) -> dict[str, str]:
        """The listeners' current stamps (set where missing); raises when Redis fails."""
        return self._stamps(self._redis(), user_ids)


def _principal(value: bytes | None, token_stamp: str) -> Principal | None:
    if value is None:
        return None
    stamp, token_id, role, user_id = value.decode().split(" ", 3)
    if stamp != token_stamp:
        return None
    return Principal(token_id=int(token_id), role=role, user_id=user_id or None)


_stores: dict[str, Store] = {}
#: the store of this process's writers (:func:`configure`), which :func:`forget_after_commit`
#: keeps in step
_configured: list[Store] = []


def store(url: str) -> Store | None:
    """The process's store for ``url`` (None for an empty one: serving from Redis is off)."""
    if not url:
        return None
    if url not in _stores:
        _stores[url] = Store(url)
    return _stores[url]


def configure(url: str) -> Store | None:
    """Make ``url``'s store the one this process's announcements keep in step (the web app
    and the weekly run call this with ``CRATEDIGGER_SERVING_REDIS_URL``)."""
    _configured[:] = [found] if (found := store(url)) is not None else []
    return found


def configured() -> Store | None:
    return _configured[0] if _configured else None


def publish_latest(session_factory: Any, store_: Store) -> int:
    """Write every listener's newest published playlist under the current epoch, after the
    publication committed. Returns the rows written; raises when Redis fails (the database
    is right either way: readers fall back to it)."""
    from recsys.db import repository

    with session_factory() as session:
        current = epoch(session)
        written = 0
        after = ""
        while True:
            users = repository.listeners_with_playlists(session, after, WRITE_BATCH)
            if not users:
                return written
            stamps = store_.stamps(users)  # before the rows are read: see the docstring
            rows = repository.latest_rows(session, users)
            written += store_.write_rows(current, rows, stamps)
            after = users[-1]


def forget_after_commit(session: Session, kind: str, key: str) -> None:
    """Replace the stamp of what an announcement names once the session commits, in the
    configured store (none configured: nothing to do; the web workers hear of it)."""
    store_ = configured()
    if store_ is None or kind not in ("user", "token"):
        return

    def _after_commit(_session: Session) -> None:
        if kind == "user":
            store_.forget_users([key])
        elif kind == "token":
            store_.forget_tokens()

    event.listen(session, "after_commit", _after_commit, once=True)
