"""Her access log: who read or changed her personal data, when, and what (PIPL Art. 51, 55).

One stream per elder (``hw:{e:<id>}:access``) owned here; every domain that serves her data
calls ``record`` (or the request-scoped ``AccessLogger``). Entries hold a role, a subject, an
action and a short detail made of ids and times only: never coordinates. The stream's ids are
the app clock's milliseconds, so ``XADD … MINID`` trims by the same clock retention is set on.
Only API reads and changes are logged; the ingest never writes here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Annotated, Any

import redis
import redis.asyncio as aioredis
from fastapi import Depends
from pydantic import BaseModel

from devices import keys
from devices.elders import service as elders
from locator.core import store
from locator.core.auth import Principal, Role
from locator.core.clock import ms_to_iso
from locator.core.deps import AppContext, CallerDep, ContextDep
from locator.core.errors import Forbidden, Unprocessable
from locator.core.schemas import Page
from locator.core.scripts import Script

DEFAULT_RETENTION_S = 94_608_000  # HOMEWARD_ACCESS_LOG_RETENTION_S's default: 3 years
# Pages poll her position and track every 15 s: the same read by the same person is one
# entry per window, else an open page would write ~10,000 entries a day for 3 years.
READ_COALESCE_S = 600

READS = frozenset(
    {
        "record.read",
        "photo.read",
        "position.read",
        "track.read",
        "events.read",
        "zones.read",
        "incident.read",
        "search_area.read",
        "handoff.read",
    }
)
CHANGES = frozenset(
    {
        "record.create",
        "record.change",
        "photo.change",
        "zone.create",
        "zone.delete",
        "pause.set",
        "pause.end",
        "pair.set",
        "device.bind",
        "device.unbind",
        "export",  # a whole copy leaves: always its own entry, never folded into another
        "erased",
    }
)

# Appends with an id no smaller than the last one (the app clock may equal it or, in tests,
# stand still), trims what is older than the retention, and skips a read logged moments ago.
_RECORD = Script(
    """
local window = tonumber(ARGV[3])
local ms = tonumber(ARGV[1])
if window > 0 then
  -- Compared on the app clock; Redis's expiry only cleans up.
  local prev = tonumber(redis.call('GET', KEYS[2]) or '')
  if prev and ms >= prev and ms - prev < window * 1000 then
    return false
  end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', window)
end
local seq = 0
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then
  local lms, lseq = string.match(last[1][1], '^(%d+)-(%d+)$')
  if tonumber(lms) >= ms then
    ms = tonumber(lms)
    seq = tonumber(lseq) + 1
  end
end
local args = {'XADD', KEYS[1], 'MINID', ARGV[2], string.format('%d-%d', ms, seq)}
for i = 4, #ARGV do
  args[#args + 1] = ARGV[i]
end
return redis.call(unpack(args))
""",
    name="access_log_record",
)

# A decimal with 4+ places is what a coordinate looks like; details are built from ids and
# times, so this only catches a future caller's mistake before it is kept for 3 years.
_COORDINATE = re.compile(r"\d+\.\d{4,}")


class AccessEntry(BaseModel):
    """One read or change of her data."""

    at: str
    role: str
    subject: str
    action: str
    detail: str


def _script_args(
    *, elder_id: int, caller: Principal, action: str, detail: str, now: float, retention_s: int
) -> tuple[list[str], list[str]]:
    if action not in READS and action not in CHANGES:
        raise ValueError(f"unknown access-log action {action!r}")
    detail = _COORDINATE.sub("…", detail)[:200]
    subject = caller.subject or ""
    window = READ_COALESCE_S if action in READS else 0
    digest = hashlib.sha256(f"{caller.role}|{subject}|{action}|{detail}".encode()).hexdigest()
    now_ms = int(now * 1000)
    fields = ["at", ms_to_iso(now_ms), "role", caller.role.value, "subject", subject]
    fields += ["action", action, "detail", detail]
    return (
        [keys.access_log(elder_id), keys.access_log_recent(elder_id, digest[:16])],
        [str(now_ms), str(max(0, now_ms - retention_s * 1000)), str(window), *fields],
    )


async def record(
    redis: aioredis.Redis,
    *,
    elder_id: int,
    caller: Principal,
    action: str,
    detail: str,
    now: float,
    retention_s: int = DEFAULT_RETENTION_S,
) -> None:
    """Append one entry to her access log (a repeated read within minutes is folded)."""
    names, args = _script_args(
        elder_id=elder_id,
        caller=caller,
        action=action,
        detail=detail,
        now=now,
        retention_s=retention_s,
    )
    await _RECORD.run_async(redis, keys=names, args=args)


async def record_many(
    redis: aioredis.Redis,
    *,
    elder_ids: list[int],
    caller: Principal,
    action: str,
    detail: str,
    now: float,
    retention_s: int = DEFAULT_RETENTION_S,
) -> None:
    """``record`` for many elders in one round trip (the console map reads every position)."""
    if not elder_ids:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for elder_id in elder_ids:
            names, args = _script_args(
                elder_id=elder_id,
                caller=caller,
                action=action,
                detail=detail,
                now=now,
                retention_s=retention_s,
            )
            await _RECORD.run_async(pipe, keys=names, args=args)
        await pipe.execute()


def record_sync(
    client: redis.Redis,
    *,
    elder_id: int,
    caller: Principal,
    action: str,
    detail: str,
    now: float,
    retention_s: int = DEFAULT_RETENTION_S,
) -> None:
    """``record`` for the synchronous alerts services."""
    names, args = _script_args(
        elder_id=elder_id,
        caller=caller,
        action=action,
        detail=detail,
        now=now,
        retention_s=retention_s,
    )
    _RECORD(client, keys=names, args=args)


def _entry(fields: dict[str, str]) -> AccessEntry:
    return AccessEntry(
        at=fields.get("at", ""),
        role=fields.get("role", ""),
        subject=fields.get("subject", ""),
        action=fields.get("action", ""),
        detail=fields.get("detail", ""),
    )


async def _authorize_reader(redis: aioredis.Redis, *, caller: Principal, elder_id: int) -> None:
    if caller.role is Role.VOLUNTEER:
        raise Forbidden("her access log is for her family and dispatch")
    # Staff read it even after she was erased: "erased by X at T" is what remains.
    if not caller.is_staff:
        await elders.authorize(redis, caller=caller, elder_id=elder_id, write=False)


async def page(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, cursor: str | None, limit: int
) -> Page[AccessEntry]:
    """Her access log, newest first (guardian of her, staff)."""
    await _authorize_reader(redis, caller=caller, elder_id=elder_id)
    limit = max(1, min(limit, store.MAX_PAGE))
    end = f"({cursor}" if cursor else "+"
    try:
        raw: list[tuple[str, dict[str, str]]] = await redis.xrevrange(  # type: ignore[assignment]
            keys.access_log(elder_id), end, "-", count=limit + 1
        )
    except aioredis.ResponseError:
        raise Unprocessable(
            ["cursor"], "must be the `next` value of a previous page", where="query"
        ) from None
    next_cursor = raw[limit - 1][0] if len(raw) > limit else None
    return Page[AccessEntry](items=[_entry(f) for _, f in raw[:limit]], next=next_cursor)


async def entries(redis: aioredis.Redis, *, elder_id: int) -> list[AccessEntry]:
    """Her whole access log, oldest first (for the export, which authorises itself)."""
    raw: list[tuple[str, dict[str, str]]] = await redis.xrange(keys.access_log(elder_id))  # type: ignore[assignment]
    return [_entry(f) for _, f in raw]


@dataclass(frozen=True, slots=True)
class AccessLogger:
    """The request's caller, clock and retention: what an endpoint needs to log one line."""

    ctx: AppContext
    caller: Principal

    async def record(self, *, elder_id: int, action: str, detail: str = "") -> None:
        """Log this request's read or change of her data."""
        await record(self.ctx.redis, **self._args(elder_id, action, detail))

    def record_sync(self, *, elder_id: int, action: str, detail: str = "") -> None:
        """Log from a synchronous (worker-thread) route."""
        assert self.ctx.sync_redis is not None, "the app's lifespan sets it"
        record_sync(self.ctx.sync_redis, **self._args(elder_id, action, detail))

    def _args(self, elder_id: int, action: str, detail: str) -> dict[str, Any]:
        return {
            "elder_id": elder_id,
            "caller": self.caller,
            "action": action,
            "detail": detail,
            "now": self.ctx.clock.time(),
            "retention_s": self.ctx.settings.access_log_retention_s,
        }


def _logger(ctx: ContextDep, caller: CallerDep) -> AccessLogger:
    return AccessLogger(ctx=ctx, caller=caller)


AccessLogDep = Annotated[AccessLogger, Depends(_logger)]


async def erase(redis: aioredis.Redis, *, elder_id: int) -> None:
    """Forget her log on erasure (the caller then records "erased by X at T"); the
    fold markers hold only a time and expire within minutes."""
    await redis.delete(keys.access_log(elder_id))
