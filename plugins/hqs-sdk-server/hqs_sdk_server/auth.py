"""Users and bearer tokens. A token is shown once when created; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

import attrs
import sqlalchemy as sa

from hqs_sdk_server.db import tokens, users

__all__ = ["RecentTokens", "TokenInfo", "User", "authenticate", "create_token", "list_tokens",
           "revoke_token"]

PREFIX = "hqs_"


@attrs.frozen
class User:
    id: int
    name: str


@attrs.frozen
class TokenInfo:
    id: int
    user: str
    label: str
    created_at: datetime
    revoked_at: datetime | None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def create_token(engine: sa.Engine, user: str, label: str = "") -> str:
    """A new token for ``user`` (created if new); the only time the token is seen."""
    if not user or len(user) > 200 or not user.isprintable():
        raise ValueError(f"a user name must be 1 to 200 printable characters, got {user!r}")
    token = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as db:
        user_id = db.execute(sa.select(users.c.id).where(users.c.name == user)).scalar()
        if user_id is None:
            user_id = db.execute(users.insert().values(name=user, created_at=_now())
                                 ).inserted_primary_key[0]  # type: ignore[index]
        db.execute(tokens.insert().values(user_id=user_id, token_hash=_hash(token), label=label,
                                          created_at=_now()))
    return token


def list_tokens(engine: sa.Engine, user: str | None = None) -> list[TokenInfo]:
    """Every token (of ``user``), oldest first."""
    query = (sa.select(tokens.c.id, users.c.name, tokens.c.label, tokens.c.created_at,
                       tokens.c.revoked_at)
             .join(users, users.c.id == tokens.c.user_id).order_by(tokens.c.id))
    if user is not None:
        query = query.where(users.c.name == user)
    with engine.connect() as db:
        return [TokenInfo(*row) for row in db.execute(query)]


def revoke_token(engine: sa.Engine, token_id: int) -> bool:
    """Revoke a token by its id (from :func:`list_tokens`); False if there is none to revoke."""
    with engine.begin() as db:
        done = db.execute(tokens.update().where(tokens.c.id == token_id,
                                                tokens.c.revoked_at.is_(None))
                          .values(revoked_at=_now()))
    return bool(done.rowcount)


# Built once: every request runs it, and building a statement costs more than running it.
_USER_BY_TOKEN = (
    sa.select(users.c.id, users.c.name).join(tokens, tokens.c.user_id == users.c.id)
    .where(tokens.c.token_hash == sa.bindparam("token_hash"), tokens.c.revoked_at.is_(None)))


def authenticate(db: Any, header: str | None) -> User | None:
    """The user of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.startswith(PREFIX):
        return None
    row = db.execute(_USER_BY_TOKEN, {"token_hash": _hash(token.strip())}).first()
    return User(row[0], row[1]) if row else None


class RecentTokens:
    """The hashes of the tokens that passed :func:`authenticate` in this process within the
    last ``ttl_s`` seconds: what lets the service read a request's body before it asks the
    database about the token, which it still does for every request.

    The token is checked before the body is read so that a caller without one makes the
    service read nothing; asking the database at that point took a thread-pool trip of its
    own per request. A token seen recently skips that first check only: the check that
    decides, in the same trip as the request's work, sees a revocation at once. A revoked
    token can therefore make one service process read a request body (and answer 401) for at
    most ``ttl_s`` seconds after it last passed, and nothing else (docs/security.md).
    At most ``size`` hashes are kept; the oldest go first.
    """

    def __init__(self, ttl_s: float = 60.0, size: int = 1024) -> None:
        self._ttl_s = ttl_s
        self._size = size
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def __contains__(self, header: str | None) -> bool:
        until = self._until.get(_hash(header)) if header else None
        return until is not None and time.monotonic() < until

    def add(self, header: str) -> None:
        with self._lock:
            self._until.pop(key := _hash(header), None)  # to the end: newest last
            self._until[key] = time.monotonic() + self._ttl_s
            while len(self._until) > self._size:
                del self._until[next(iter(self._until))]

    def discard(self, header: str | None) -> None:
        if header:
            with self._lock:
                self._until.pop(_hash(header), None)
