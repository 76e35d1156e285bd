"""Access tokens for listeners and operators, stored as SHA-256 digests.

A token is 256 random bits (``cd_`` + URL-safe base64). Tokens this long cannot be guessed,
so a fast digest is enough (as GitHub's and PyPI's API tokens do); the plain token is
shown once, when created, and never stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from recsys.db.models import ApiToken, User

TOKEN_PREFIX = "cd_"
#: tokens longer than this are rejected before they are hashed
MAX_TOKEN_LENGTH = 128
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


def authenticate(session: Session, token: str, *, touch: bool = True) -> Principal | None:
    """The principal of a live (not revoked) token, or None. Records the time of use."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    if touch:
        now = dt.datetime.now(dt.UTC)
        last = row.last_used_at
        # One write a minute at most, so reads stay reads under load.
        if last is None or now - _aware(last) > dt.timedelta(minutes=1):
            session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
            session.commit()
    return Principal(token_id=row.id, role=row.role, user_id=row.user_id)


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
    session.flush()
    return row


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
