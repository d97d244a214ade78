"""Bearer tokens (stored hashed) and the principal they stand for."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis

from locator.core import keys
from locator.core.errors import Forbidden, Unauthorized, Unprocessable


class Role(StrEnum):
    ADMIN = "admin"
    DISPATCHER = "dispatcher"
    GUARDIAN = "guardian"
    VOLUNTEER = "volunteer"


STAFF = frozenset({Role.ADMIN, Role.DISPATCHER})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a role and, for guardians and volunteers, their subject id."""

    role: Role
    subject: str | None = None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF

    def require(self, *roles: Role) -> None:
        """Raise 403 unless the caller has one of ``roles``."""
        if self.role not in roles:
            raise Forbidden(f"role {self.role} may not do this")

    def volunteer_id(self) -> int | None:
        if self.role is Role.VOLUNTEER and self.subject and self.subject.isdigit():
            return int(self.subject)
        return None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    redis: aioredis.Redis, *, role: Role, subject: str | None, created_at: float
) -> tuple[str, str | None]:
    """Mint a token and store only its hash; returns (token, subject)."""
    if role is Role.VOLUNTEER:
        if not subject or not subject.isdigit():
            raise Unprocessable(["subject"], "a volunteer token needs --subject VOLUNTEER_ID")
        if not await redis.exists(keys.volunteer(int(subject))):
            raise Unprocessable(["subject"], f"volunteer {subject} does not exist")
    if role is Role.GUARDIAN and not subject:
        subject = "g_" + secrets.token_hex(6)
    token = "hw_" + secrets.token_urlsafe(32)
    digest = hash_token(token)
    record = ["role", role.value, "subject", subject or "", "created_at", str(created_at)]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.token(digest), items=record)
        pipe.zadd(keys.TOKENS, {digest: created_at})
        await pipe.execute()
    return token, subject


async def resolve_token(redis: aioredis.Redis, token: str) -> Principal:
    """The principal of a bearer token, or 401."""
    record: dict[str, str] = await redis.hgetall(keys.token(hash_token(token)))  # type: ignore[assignment]
    if not record:
        raise Unauthorized("invalid or revoked token")
    return Principal(role=Role(record["role"]), subject=record.get("subject") or None)


SESSION_COOKIE = "hw_session"
CSRF_HEADER = "X-Homeward"
SESSION_TTL_S = 12 * 3600


async def create_session(redis: aioredis.Redis, *, token: str) -> tuple[str, Principal]:
    """Exchange a token (pasted once into a page) for a session id kept in a cookie."""
    principal = await resolve_token(redis, token)
    session = secrets.token_urlsafe(32)
    await redis.set(
        keys.session(hash_token(session)),
        json.dumps(
            {"role": principal.role.value, "subject": principal.subject, "token": hash_token(token)}
        ),
        ex=SESSION_TTL_S,
    )
    return session, principal


async def open_session_for(redis: aioredis.Redis, *, principal: Principal, ttl_s: int) -> str:
    """A session for a principal proven another way (a volunteer's signed SMS link).

    It has no token behind it, so it lives only ``ttl_s`` (the link's own lifetime).
    """
    session = secrets.token_urlsafe(32)
    await redis.set(
        keys.session(hash_token(session)),
        json.dumps({"role": principal.role.value, "subject": principal.subject, "token": None}),
        ex=max(1, min(ttl_s, SESSION_TTL_S)),
    )
    return session


async def resolve_session(redis: aioredis.Redis, session: str) -> Principal:
    """The principal of a live session whose token was not revoked since; 401 otherwise."""
    raw = await redis.get(keys.session(hash_token(session)))
    if raw is None:
        raise Unauthorized("the session has expired: log in again")
    data = json.loads(raw)
    if data["token"] is not None and not await redis.exists(keys.token(data["token"])):
        raise Unauthorized("the token behind this session was revoked: log in again")
    return Principal(role=Role(data["role"]), subject=data["subject"])


async def end_session(redis: aioredis.Redis, session: str) -> None:
    await redis.delete(keys.session(hash_token(session)))


async def revoke_token(redis: aioredis.Redis, token: str) -> bool:
    """Forget a token; True if it existed."""
    digest = hash_token(token)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.token(digest))
        pipe.zrem(keys.TOKENS, digest)
        deleted, _ = await pipe.execute()
    return bool(deleted)
