"""Access tokens for listeners and operators, stored as SHA-256 digests.

A token is 256 random bits (``cd_`` + URL-safe base64). Tokens this long cannot be guessed,
so a fast digest is enough (as GitHub's and PyPI's API tokens do); the plain token is
shown once, when created, and never stored.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, select, true, update
from sqlalchemy.orm import Session

from recsys.db import changes
from recsys.db.models import ApiToken, User

TOKEN_PREFIX = "cd_"
#: tokens longer than this are rejected before they are hashed
MAX_TOKEN_LENGTH = 128
#: A token's time of use is written at most this often (per web worker), so that reads stay
#: reads under load; `cratedigger tokens list` shows it to within this much.
TOUCH_EVERY = dt.timedelta(minutes=5)
LISTENER = "listener"
OPERATOR = "operator"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a listener (``user_id``) or an operator."""

    token_id: int
    role: str
    user_id: str | None

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR

    def may_read(self, user_id: str) -> bool:
        """Listeners read their own data; operators read everyone's (for support)."""
        return self.is_operator or self.user_id == user_id

    def may_write(self, user_id: str) -> bool:
        """Only the listener changes their own feedback."""
        return self.role == LISTENER and self.user_id == user_id


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def checked_digest(token: str) -> str | None:
    """The digest of a well-formed token; None for an empty, overlong or non-ASCII one."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    return digest(token)


def create_token(
    session: Session, *, user_id: str | None = None, operator: bool = False, label: str = ""
) -> tuple[ApiToken, str]:
    """Create a listener token (``user_id``) or an operator token; returns (row, plain token).

    Raises
    ------
    ValueError
        If neither or both of ``user_id`` and ``operator`` are given, or the listener is
        unknown.
    """
    if operator == (user_id is not None):
        raise ValueError("a token is either a listener's (user_id) or an operator's, not both")
    if user_id is not None and session.get(User, user_id) is None:
        raise ValueError(f"no listener {user_id!r}: run the weekly job on their events first")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        token_hash=digest(plain),
        prefix=plain[:10],
        role=OPERATOR if operator else LISTENER,
        user_id=user_id,
        label=label[:256] or None,
    )
    session.add(row)
    session.flush()
    return row, plain


_tokens = ApiToken.__table__
_TOKEN_COLUMNS = (
    _tokens.c.id,
    _tokens.c.role,
    _tokens.c.user_id,
    _tokens.c.revoked_at,
    _tokens.c.last_used_at,
)
# Built once: authentication runs on every API request.
_BY_DIGEST = select(*_TOKEN_COLUMNS).where(_tokens.c.token_hash == bindparam("digest"))


def authenticate(session: Session, token: str, *, touch: bool = True) -> Principal | None:
    """The principal of a live (not revoked) token, or None. Records the time of use."""
    principal, _ = _authenticate(session, token, _BY_DIGEST, {}, touch=touch)
    return principal


def authenticate_and_read(
    session: Session, token: str, companion: Select[Any], params: dict[str, Any]
) -> tuple[Principal | None, tuple[Any, ...] | None]:
    """:func:`authenticate`, and the first row of ``companion`` read in the same round trip.

    The companion is left-joined to the token's row, so nothing of it comes back without a
    live token. The caller still decides whether the principal may see it. The row is
    None when the token is not live or the companion has no row (its first column is NULL).
    """
    return _authenticate(session, token, _joined(companion), params)


@functools.cache
def _joined(companion: Select[Any]) -> Select[Any]:
    """The token's row with ``companion`` left-joined, built once per companion statement."""
    read = companion.subquery()
    return (
        select(*_TOKEN_COLUMNS, *read.c)
        .select_from(_tokens.outerjoin(read, true()))
        .where(_tokens.c.token_hash == bindparam("digest"))
    )


def _authenticate(
    session: Session,
    token: str,
    statement: Select[Any],
    params: dict[str, Any],
    *,
    touch: bool = True,
) -> tuple[Principal | None, tuple[Any, ...] | None]:
    token_digest = checked_digest(token)
    if token_digest is None:
        return None, None
    row = session.execute(statement, {**params, "digest": token_digest}).first()
    if row is None:
        return None, None
    token_id, role, user_id, revoked_at, last_used_at, *companion = row
    if revoked_at is not None:
        return None, None
    if touch and (last_used_at is None or _now() - _aware(last_used_at) > TOUCH_EVERY):
        touch_token(session, token_id)
    principal = Principal(token_id=token_id, role=role, user_id=user_id)
    return principal, tuple(companion) if companion and companion[0] is not None else None


def touch_token(session: Session, token_id: int) -> None:
    """Record that the token was used now (and commit)."""
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=_now()))
    session.commit()


def principal_of(session: Session, token_id: int) -> Principal | None:
    """The principal of a live token by id (web sessions keep the id, not the token)."""
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return None
    return Principal(token_id=row.id, role=row.role, user_id=row.user_id)


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_token(session: Session, token_id: int) -> ApiToken:
    """Revoke a token; its web sessions end with it. Raises ``LookupError`` if unknown."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise LookupError(f"no token #{token_id}")
    if row.revoked_at is None:
        row.revoked_at = dt.datetime.now(dt.UTC)
        changes.announce(session, changes.TOKEN, token_id)
    session.flush()
    return row


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
