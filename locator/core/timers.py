"""Delayed jobs in Redis: a sorted set scored by due time, claimed atomically with a lease.

A job id names what it is about (``offline|<elder>|<device>``), so scheduling the same id
again moves it instead of adding a second job. Claiming moves a due job's score to
``now + lease`` in the same script that returns it: two tickers never get the same job, and
a ticker killed mid-job lets the lease run out so another one picks the job up. Each job
carries a token; completing with a stale token (the job was re-scheduled meanwhile) leaves
the new schedule alone. Handlers must be idempotent: a re-claimed job may run twice, and
the handler's own state check makes the second run a no-op.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import redis

from locator.core import keys

LEASE_S = 30.0

_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, job in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], job)
  local meta = redis.call('HMGET', ARGV[4] .. job, 'token', 'payload')
  table.insert(out, {job, meta[1] or '', meta[2] or ''})
end
return out
"""

_COMPLETE = """
-- Rescheduled since the claim (new due time or new token)? Then the new schedule stands.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[3]) then return 0 end
local token = redis.call('HGET', KEYS[2], 'token') or ''
if token ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    token: str
    payload: dict[str, Any]
    lease_until: float

    @property
    def kind(self) -> str:
        return self.id.split("|", 1)[0]

    @property
    def args(self) -> list[str]:
        return self.id.split("|")[1:]


def job_id(kind: str, *args: object) -> str:
    return "|".join([kind, *(str(a) for a in args)])


def schedule(
    client: redis.Redis, job: str, *, due: float, payload: dict[str, Any] | None = None
) -> str:
    """(Re)schedule a job; returns its new token (any earlier token becomes stale)."""
    token = secrets.token_hex(8)
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.timer(job), mapping={"token": token, "payload": json.dumps(payload or {})})
    pipe.zadd(keys.TIMERS, {job: due})
    pipe.execute()
    return token


def cancel(client: redis.Redis, job: str) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.zrem(keys.TIMERS, job)
    pipe.delete(keys.timer(job))
    pipe.execute()


def due_at(client: redis.Redis, job: str) -> float | None:
    score = client.zscore(keys.TIMERS, job)
    return None if score is None else float(score)


class TimerQueue:
    """Claim and complete jobs (the ticker's side)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)

    def claim(self, *, now: float, limit: int = 100, lease_s: float = LEASE_S) -> list[Job]:
        """Due jobs, each leased to this caller until ``now + lease_s``."""
        lease_until = round(now + lease_s, 3)
        rows = self._claim(
            keys=[keys.TIMERS], args=[repr(now), repr(lease_until), limit, keys.timer("")]
        )
        return [
            Job(
                id=_s(job),
                token=_s(token),
                payload=json.loads(_s(payload) or "{}"),
                lease_until=lease_until,
            )
            for job, token, payload in rows
        ]

    def complete(self, job: Job) -> bool:
        """Forget a handled job unless it was re-scheduled meanwhile (token changed)."""
        done = self._complete(
            keys=[keys.TIMERS, keys.timer(job.id)],
            args=[job.id, job.token, repr(job.lease_until)],
        )
        return bool(done)


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
