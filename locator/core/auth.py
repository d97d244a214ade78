"""Bearer tokens (stored hashed) and the principal they stand for."""

from __future__ import annotations

import hashlib
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


async def revoke_token(redis: aioredis.Redis, token: str) -> bool:
    """Forget a token; True if it existed."""
    digest = hash_token(token)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.token(digest))
        pipe.zrem(keys.TOKENS, digest)
        deleted, _ = await pipe.execute()
    return bool(deleted)
