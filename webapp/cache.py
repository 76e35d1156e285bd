"""Each web worker's cache of the API's hottest reads: bearer tokens and playlist answers.

A playlist read is one indexed row, but under load the database round trip is most of a
request's cost. So each worker keeps the principals of the tokens it has seen and the
playlist answers it has built, and forgets them when a writer announces a change
(:mod:`recsys.db.changes`: a thumb, a revoked token, a published week, a playlist
rewritten after publication).

- The announcements arrive over one PostgreSQL connection per worker that ``LISTEN``\\ s.
  Every request first applies what has arrived, without waiting, then answers.
- SQLite has no notifications: there every request reads the database.
- Every request also checks that the listening connection is alive before it trusts the
  cache (:meth:`recsys.db.changes.Listener.drain`: the connection's state, the server's
  parting message, the end of the stream on the socket: about 2 µs a request). A server that
  closed the connection (a restart, ``pg_terminate_backend``) is noticed by the very next
  request, not the one after: what it would have announced is unknown.
- If the listening connection breaks, the cache is emptied and requests read the database
  until it listens again (after :data:`RETRY_SECONDS`; a failed attempt waits
  :data:`RECONNECT_SECONDS`); listening again empties it once more, since announcements
  made in between were missed. TCP keepalives make a connection the network silently
  dropped fail within about 30 s (:data:`recsys.db.changes.KEEPALIVES`); until then no
  check on this side can tell it from a quiet one.
- Each emptying or forgetting starts a new generation; what a request read before it is
  not kept after it (a request of another thread may have forgotten it meanwhile).
- Every request of any route applies what has arrived, so that notifications never pile up
  on a worker that serves only pages.
- The worker that records a thumb forgets that listener at once. Other workers forget when
  the notification arrives, well under a millisecond later on one host.
- With ``CRATEDIGGER_SERVING_REDIS_URL`` set, what this cache does not hold is looked up in
  the store of published answers all workers share (:mod:`recsys.db.published`) before the
  database. Each announcement replaces the stamp of what changed there before the request
  that heard it reads the store; a worker that lost its listening connection, or could not
  replace a stamp, replaces the global one before it reads the store again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from sqlalchemy import Engine
from werkzeug.http import generate_etag

from recsys.db import changes, published
from recsys.db.tokens import TOUCH_EVERY, Principal

log = logging.getLogger(__name__)

#: after a failed attempt to listen, the next one waits this long
RECONNECT_SECONDS = 5.0
#: after the listening connection broke, listening again waits this long
RETRY_SECONDS = 1.0
#: uses of tokens read from memory or Redis are written at most this often per worker...
TOUCH_FLUSH_SECONDS = 2.0
#: ...or when this many are waiting
TOUCH_BATCH = 500


@dataclass(frozen=True)
class Answer:
    """A playlist response body and its strong ETag."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, text: str) -> Answer:
        body = text.encode()
        return cls(body, generate_etag(body))

    @property
    def quoted_etag(self) -> str:
        return f'"{self.etag}"'


class ReadCache:
    """Principals by token digest and answers by (listener, week), each least recently used
    first out beyond ``max_entries``; kept true by change announcements. Thread-safe (the
    development server runs a thread per request)."""

    def __init__(
        self,
        engine: Engine,
        max_entries: int,
        *,
        serving: published.Store | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._max = max_entries
        #: the shared store of published answers (:mod:`recsys.db.published`), or None
        self._serving = serving
        #: the publication state it is read under, from the database (None: do not read it)
        self._epoch: str | None = None
        #: a change was heard whose stamp could not be replaced in the store
        self._serving_behind = False
        self._clock = clock
        self._lock = threading.Lock()
        self._pid = 0
        self._listener: changes.Listener | None = None
        #: bumped whenever entries are dropped: see :meth:`sync`
        self._generation = 0
        self._retry_at = 0.0
        self._principals: OrderedDict[str, Principal] = OrderedDict()
        self._answers: OrderedDict[tuple[str, Hashable], Answer] = OrderedDict()
        self._keys: dict[str, set[Hashable]] = {}
        self._touched: dict[int, float] = {}
        self._untouched: list[int] = []
        self._flush_at = clock() + TOUCH_FLUSH_SECONDS

    @property
    def enabled(self) -> bool:
        wanted = self._max > 0 or self._serving is not None
        return wanted and changes.can_listen(self._engine)

    def serving(self) -> tuple[published.Store, str] | None:
        """The shared store and the epoch to read it under, when a request whose
        :meth:`sync` did not return None may trust it; None otherwise."""
        with self._lock:
            if self._serving is None or self._epoch is None or self._serving_behind:
                return None
            return self._serving, self._epoch

    def sync(self) -> int | None:
        """Apply the changes announced since the last call, once the listening connection is
        shown alive.

        Returns the cache's generation, to hand to :meth:`remember_principal` and
        :meth:`remember_answer`, when the cache can be trusted in this request; None when it
        cannot (off, or no live listening connection): then read the database.
        """
        if not self.enabled:
            return None
        with self._lock:
            if self._pid != os.getpid():  # a forked worker: the parent's state is not ours
                self._pid = os.getpid()
                self._listener = None
                self._clear()
            if self._listener is None and not self._connect():
                return None
            assert self._listener is not None
            try:
                payloads = self._listener.drain()
            except changes.ListenerLost as exc:  # what it did not deliver is unknown
                log.warning("lost the change listener (%s); emptied the cache", exc)
                self._disconnect()
                return None
            except Exception:
                log.warning("lost the change listener; emptied the cache", exc_info=True)
                self._disconnect()
                return None
            for payload in payloads:
                self._apply(payload)
            self._keep_serving_in_step(payloads)
            return self._generation

    def principal(self, digest: str) -> Principal | None:
        with self._lock:
            principal = self._principals.get(digest)
            if principal is not None:
                self._principals.move_to_end(digest)
            return principal

    def remember_principal(self, digest: str, principal: Principal, generation: int) -> None:
        """Keep a principal read in a request whose :meth:`sync` returned ``generation``."""
        with self._lock:
            if generation != self._generation:
                return
            self._principals[digest] = principal
            self._principals.move_to_end(digest)
            self._touched.setdefault(principal.token_id, self._clock())
            while len(self._principals) > self._max:
                _, evicted = self._principals.popitem(last=False)
                self._touched.pop(evicted.token_id, None)

    def touch_due(self, token_id: int) -> bool:
        """True at most once per :data:`TOUCH_EVERY` per token: record its time of use."""
        with self._lock:
            now = self._clock()
            last = self._touched.get(token_id, float("-inf"))
            if now - last < TOUCH_EVERY.total_seconds():
                return False
            self._touched[token_id] = now
            return True

    def used(self, token_id: int) -> list[int]:
        """Note a use of a token this request did not read from the database; returns the
        tokens whose use to record now (:func:`recsys.db.published.touch_tokens`): a batch
        every :data:`TOUCH_FLUSH_SECONDS` or :data:`TOUCH_BATCH` tokens, so that a request
        that reads no database does not write it either."""
        if self.touch_due(token_id):
            with self._lock:
                self._untouched.append(token_id)
        with self._lock:
            now = self._clock()
            if not self._untouched or (len(self._untouched) < TOUCH_BATCH and now < self._flush_at):
                return []
            due, self._untouched = self._untouched, []
            self._flush_at = now + TOUCH_FLUSH_SECONDS
            return due

    def answer(self, user_id: str, key: Hashable) -> Answer | None:
        with self._lock:
            answer = self._answers.get((user_id, key))
            if answer is not None:
                self._answers.move_to_end((user_id, key))
            return answer

    def remember_answer(self, user_id: str, key: Hashable, answer: Answer, generation: int) -> None:
        """Keep an answer built in a request whose :meth:`sync` returned ``generation``."""
        with self._lock:
            if generation != self._generation:
                return
            self._answers[(user_id, key)] = answer
            self._answers.move_to_end((user_id, key))
            self._keys.setdefault(user_id, set()).add(key)
            while len(self._answers) > self._max:
                (evicted_user, evicted_key), _ = self._answers.popitem(last=False)
                keys = self._keys[evicted_user]
                keys.discard(evicted_key)
                if not keys:
                    del self._keys[evicted_user]

    def forget_user(self, user_id: str) -> None:
        """Forget the listener's answers here and in the shared store, after their change
        committed."""
        with self._lock:
            self._forget_user(user_id)
            if self._serving is not None and not self._serving.forget_users([user_id]):
                self._serving_behind = True

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def _forget_user(self, user_id: str) -> None:
        self._generation += 1
        for key in self._keys.pop(user_id, ()):
            self._answers.pop((user_id, key), None)

    def _apply(self, payload: str) -> None:
        kind, _, key = payload.partition(" ")
        if kind == changes.USER:
            self._forget_user(key)
        elif kind == changes.TOKEN:
            self._generation += 1
            self._principals.clear()  # revocations are rare: forget every token
            self._touched.clear()
        else:  # a published week, or anything this version does not know
            self._clear()

    def _connect(self) -> bool:
        if self._clock() < self._retry_at:
            return False
        try:
            self._listener = changes.listen(self._engine)
        except Exception:
            log.warning("cannot listen for changes; not caching for now", exc_info=True)
            self._retry_at = self._clock() + RECONNECT_SECONDS
            return False
        self._clear()  # anything kept before listening may be stale
        self._read_epoch()
        return True

    def _keep_serving_in_step(self, payloads: list[str]) -> None:
        """Replace in the shared store the stamps of what was announced, before this
        request reads it (see :mod:`recsys.db.published`)."""
        if self._serving is None:
            return
        if self._serving_behind:  # a change whose stamp was not replaced: kill them all
            self._serving_behind = not self._serving.forget_everything()
        kinds = {payload.partition(" ")[0] for payload in payloads}
        users = [p.partition(" ")[2] for p in payloads if p.startswith(changes.USER + " ")]
        done = self._serving.forget_users(users)
        if changes.TOKEN in kinds:
            done = self._serving.forget_tokens() and done
        if not done:
            self._serving_behind = True
        if kinds - {changes.USER, changes.TOKEN}:  # a publication: the epoch moved
            self._read_epoch()

    def _read_epoch(self) -> None:
        if self._serving is None:
            return
        try:
            with self._engine.connect() as connection:
                from sqlalchemy.orm import Session

                self._epoch = published.epoch(Session(bind=connection))
        except Exception:
            log.warning("cannot read the publication epoch; not reading Redis", exc_info=True)
            self._epoch = None

    def _disconnect(self) -> None:
        listener, self._listener = self._listener, None
        self._clear()
        # What goes unheard until it listens again may be in the shared store too: once
        # listening again, it replaces the global stamp before it reads the store.
        self._serving_behind = self._serving is not None
        # Not at once: a listener that breaks on every read must not reconnect per request.
        self._retry_at = self._clock() + RETRY_SECONDS
        if listener is not None:
            try:
                listener.close()
            except Exception:
                log.debug("closing the broken listener failed", exc_info=True)

    def _clear(self) -> None:
        self._generation += 1
        self._principals.clear()
        self._answers.clear()
        self._keys.clear()
        self._touched.clear()
