"""Bearer tokens (stored hashed) and the principal they stand for."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis

from locator.core import keys, store
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


DEFAULT_TOKEN_TTL_S = 7_776_000  # HOMEWARD_TOKEN_TTL_S's default: 90 days


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token's public facts (never its secret)."""

    id: int
    role: Role
    subject: str | None
    created_at: float
    expires_at: float


def _info(record: dict[str, str]) -> TokenInfo:
    return TokenInfo(
        id=int(record.get("id") or 0),
        role=Role(record["role"]),
        subject=record.get("subject") or None,
        created_at=float(record.get("created_at") or 0),
        expires_at=float(record.get("expires_at") or "inf"),
    )


# Whether a volunteer id exists: alerts' question, handed in by the shell (core imports no domain).
VolunteerExists = Callable[[int], Awaitable[bool]]


async def issue_token(
    redis: aioredis.Redis,
    *,
    role: Role,
    subject: str | None,
    created_at: float,
    ttl_s: int = DEFAULT_TOKEN_TTL_S,
    volunteer_exists: VolunteerExists | None = None,
) -> tuple[str, TokenInfo]:
    """Mint a token that expires ``ttl_s`` after ``created_at``; only its hash is stored."""
    if role is Role.VOLUNTEER:
        if not subject or not subject.isdigit():
            raise Unprocessable(["subject"], "a volunteer token needs --subject VOLUNTEER_ID")
        if volunteer_exists is None:
            # Fail closed: the volunteers are alerts' records, which core cannot read itself.
            raise ValueError("a volunteer token needs the alerts domain's volunteer_exists")
        if not await volunteer_exists(int(subject)):
            raise Unprocessable(["subject"], f"volunteer {subject} does not exist")
    if role is Role.GUARDIAN and not subject:
        subject = "g_" + secrets.token_hex(6)
    token = "hw_" + secrets.token_urlsafe(32)
    digest = hash_token(token)
    token_id = int(await redis.incr(keys.sequence("token")))
    info = TokenInfo(
        id=token_id,
        role=role,
        subject=subject,
        created_at=created_at,
        expires_at=created_at + ttl_s,
    )
    await _store(redis, digest, info, ttl_s=ttl_s)
    return token, info


async def _store(redis: aioredis.Redis, digest: str, info: TokenInfo, *, ttl_s: int) -> None:
    record = [
        "id",
        str(info.id),
        "role",
        info.role.value,
        "subject",
        info.subject or "",
        "created_at",
        str(info.created_at),
        "expires_at",
        str(info.expires_at),
    ]
    # Two slots, two steps: the id index first, then the record (one key, one transaction).
    # A crash between leaves an index entry with no record, which no one can use and the
    # next listing drops; never a live token the admin cannot see or revoke by id.
    await redis.zadd(keys.TOKEN_IDS, {digest: info.id})
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.token(digest), items=record)
        # Redis forgets the record by itself once it is dead (the check is ``expires_at``).
        pipe.expire(keys.token(digest), max(1, ttl_s))
        await pipe.execute()


async def create_token(
    redis: aioredis.Redis,
    *,
    role: Role,
    subject: str | None,
    created_at: float,
    ttl_s: int = DEFAULT_TOKEN_TTL_S,
    volunteer_exists: VolunteerExists | None = None,
) -> tuple[str, str | None]:
    """Mint a token and store only its hash; returns (token, subject)."""
    token, info = await issue_token(
        redis,
        role=role,
        subject=subject,
        created_at=created_at,
        ttl_s=ttl_s,
        volunteer_exists=volunteer_exists,
    )
    return token, info.subject


async def migrate_tokens(redis: aioredis.Redis, *, now: float, ttl_s: int) -> int:
    """Give tokens minted before expiry existed an id and ``ttl_s`` more life from ``now``.

    They expire a full TTL after the upgrade rather than after their creation, so an
    upgrade never locks every long-standing user (and the first admin) out at once.
    """
    migrated = 0
    for digest in store.texts(await redis.zrange(keys.TOKENS, 0, -1)):
        record: dict[str, str] = await redis.hgetall(keys.token(digest))  # type: ignore[assignment]
        if record and not record.get("id"):
            token_id = int(await redis.incr(keys.sequence("token")))
            info = _info({**record, "id": str(token_id), "expires_at": str(now + ttl_s)})
            await _store(redis, digest, info, ttl_s=ttl_s)
            migrated += 1
        await redis.zrem(keys.TOKENS, digest)
    return migrated


async def _live_record(redis: aioredis.Redis, digest: str, now: float | None) -> dict[str, str]:
    record: dict[str, str] = await redis.hgetall(keys.token(digest))  # type: ignore[assignment]
    if not record:
        raise Unauthorized("invalid or revoked token")
    if now is not None and float(record.get("expires_at") or "inf") <= now:
        raise Unauthorized("the token has expired: ask for a new one")
    return record


async def resolve_token(
    redis: aioredis.Redis, token: str, *, now: float | None = None
) -> Principal:
    """The principal of a live bearer token, or 401.

    ``now`` is the app's clock; without it only Redis's own expiry of the record applies.
    """
    record = await _live_record(redis, hash_token(token), now)
    return Principal(role=Role(record["role"]), subject=record.get("subject") or None)


async def list_tokens(
    redis: aioredis.Redis, *, cursor: int, limit: int, now: float
) -> tuple[list[TokenInfo], int | None]:
    """Live tokens with an id above ``cursor``, by id, and the next page's cursor."""
    raw: list[tuple[str, float]] = await redis.zrangebyscore(  # type: ignore[assignment]
        keys.TOKEN_IDS, f"({cursor}", "+inf", start=0, num=limit + 1, withscores=True
    )
    rows = [(str(store.text(d)), int(score)) for d, score in raw]
    next_cursor = rows[limit - 1][1] if len(rows) > limit else None
    rows = rows[:limit]
    async with redis.pipeline(transaction=False) as pipe:
        for digest, _ in rows:
            pipe.hgetall(keys.token(digest))
        records: list[dict[str, str]] = await pipe.execute()
    items = []
    for (digest, _), record in zip(rows, records, strict=True):
        if not record:  # expired and forgotten by Redis: drop it from the index too
            await redis.zrem(keys.TOKEN_IDS, digest)
            continue
        info = _info(record)
        if info.expires_at > now:
            items.append(info)
    return items, next_cursor


async def _forget(redis: aioredis.Redis, digest: str) -> bool:
    """Delete a token and every web session opened with it; True if it existed."""
    # The record first: from then on the token and every session opened with it are refused
    # (a session checks its token on each use). The rest, in any slot, is tidying that a
    # crash may leave for a re-run (revoking again is allowed) or the listing to drop.
    existed = bool(await redis.delete(keys.token(digest)))
    sessions = store.texts(await redis.smembers(keys.token_sessions(digest)))
    async with redis.pipeline(transaction=False) as pipe:
        for session_hash in sessions:
            pipe.delete(keys.session(session_hash))
        pipe.delete(keys.token_sessions(digest))
        pipe.zrem(keys.TOKEN_IDS, digest)
        pipe.zrem(keys.TOKENS, digest)
        await pipe.execute()
    return existed


async def revoke_token(redis: aioredis.Redis, token: str) -> bool:
    """Forget a token and end its sessions; True if it existed."""
    return await _forget(redis, hash_token(token))


async def revoke_token_id(redis: aioredis.Redis, token_id: int) -> bool:
    """Forget the token with this id and end its sessions; True if it existed."""
    digests = store.texts(await redis.zrangebyscore(keys.TOKEN_IDS, token_id, token_id))
    return any([await _forget(redis, digest) for digest in digests])


SESSION_COOKIE = "hw_session"
CSRF_HEADER = "X-Homeward"
SESSION_TTL_S = 12 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    """A live web session: who it stands for and, for an SMS link's, the incident."""

    principal: Principal
    incident_id: int | None = None


async def create_session(
    redis: aioredis.Redis, *, token: str, now: float | None = None
) -> tuple[str, Principal, int]:
    """Exchange a token (pasted once into a page) for a session id kept in a cookie.

    Returns (session, principal, lifetime): the session dies with its token, at the latest.
    """
    digest = hash_token(token)
    record = await _live_record(redis, digest, now)
    principal = Principal(role=Role(record["role"]), subject=record.get("subject") or None)
    ttl = SESSION_TTL_S
    expires_at = float(record.get("expires_at") or "inf")
    if now is not None and expires_at != float("inf"):
        ttl = max(1, min(ttl, int(expires_at - now)))
    session = secrets.token_urlsafe(32)
    session_hash = hash_token(session)
    # The token's list of sessions first, then the session: a crash between leaves a
    # member naming no session (harmless); a session is refused anyway once its token is.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.sadd(keys.token_sessions(digest), session_hash)
        pipe.expire(keys.token_sessions(digest), SESSION_TTL_S)
        await pipe.execute()
    await redis.set(
        keys.session(session_hash),
        json.dumps({"role": principal.role.value, "subject": principal.subject, "token": digest}),
        ex=ttl,
    )
    return session, principal, ttl


async def open_session_for(
    redis: aioredis.Redis, *, principal: Principal, ttl_s: int, incident_id: int | None = None
) -> str:
    """A session for a principal proven another way (a volunteer's signed SMS link).

    It has no token behind it, so it lives only ``ttl_s`` (what is left of the link's life)
    and, tied to ``incident_id``, only while the shell's link guard says it may.
    """
    session = secrets.token_urlsafe(32)
    data = {"role": principal.role.value, "subject": principal.subject, "token": None}
    await redis.set(
        keys.session(hash_token(session)),
        json.dumps({**data, "incident": incident_id}),
        ex=max(1, min(ttl_s, SESSION_TTL_S)),
    )
    return session


async def resolve_session(
    redis: aioredis.Redis, session: str, *, now: float | None = None
) -> Session:
    """A live session whose token was not revoked and has not expired since; 401 otherwise."""
    raw = await redis.get(keys.session(hash_token(session)))
    if raw is None:
        raise Unauthorized("the session has expired: log in again")
    data = json.loads(raw)
    if data["token"] is not None:
        try:
            await _live_record(redis, data["token"], now)
        except Unauthorized:
            await end_session(redis, session)
            raise Unauthorized("the token behind this session was revoked: log in again") from None
    principal = Principal(role=Role(data["role"]), subject=data["subject"])
    incident = data.get("incident")
    return Session(principal=principal, incident_id=int(incident) if incident else None)


async def end_session(redis: aioredis.Redis, session: str) -> None:
    await redis.delete(keys.session(hash_token(session)))
