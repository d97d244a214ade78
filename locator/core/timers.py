"""Delayed jobs in Redis: a sorted set scored by due time, claimed atomically with a lease.

A job id names what it is about (``offline|<elder>|<device>``), so scheduling the same id
again moves it instead of adding a second job. Claiming moves a due job's score to
``now + lease`` in the same script that returns it: two tickers never get the same job, and
a ticker killed mid-job lets the lease run out so another one picks the job up. Each job
carries a token; completing with a stale token (the job was re-scheduled meanwhile) leaves
the new schedule alone. Handlers must be idempotent: a re-claimed job may run twice, and
the handler's own state check makes the second run a no-op.

Jobs live in ``SHARDS`` sets (``hw:{s:<n>}:timers``, a job's hash beside it): an elder's
jobs in her shard, others by a hash of the id, so a Redis Cluster spreads them and every
script here touches one slot. The ticker claims from every shard, round robin.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass
from typing import Any

import redis

from locator.core import keys, shards
from locator.core.scripts import Script

LEASE_S = 30.0

_CLAIM = Script(
    """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, job in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], job)
  local meta = redis.call('HMGET', ARGV[4] .. job, 'token', 'payload')
  table.insert(out, {job, meta[1] or '', meta[2] or ''})
end
return out
""",
    name="timers_claim",
)

_COMPLETE = Script(
    """
-- Rescheduled since the claim (new due time or new token)? Then the new schedule stands.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[3]) then return 0 end
local token = redis.call('HGET', KEYS[2], 'token') or ''
if token ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
""",
    name="timers_complete",
)


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
    pipe.zadd(keys.job_timers(job), {job: due})
    pipe.execute()
    return token


def ensure(client: redis.Redis, job: str, *, due: float) -> None:
    """Add a job with no token or payload unless it is already scheduled (one per store)."""
    client.zadd(keys.job_timers(job), {job: due}, nx=True)


def cancel(client: redis.Redis, job: str) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.zrem(keys.job_timers(job), job)
    pipe.delete(keys.timer(job))
    pipe.execute()


def due_at(client: redis.Redis, job: str) -> float | None:
    score = client.zscore(keys.job_timers(job), job)
    return None if score is None else float(score)


def due_count(client: redis.Redis, *, before: float) -> tuple[int, float | None]:
    """Jobs due before ``before`` over every shard, and the oldest one's due time."""
    pipe = client.pipeline(transaction=False)
    for shard in shards.every():
        pipe.zcount(keys.timers(shard), "-inf", before)
        pipe.zrangebyscore(keys.timers(shard), "-inf", before, start=0, num=1, withscores=True)
    replies = pipe.execute()
    total, oldest = 0, None
    for count, first in zip(replies[::2], replies[1::2], strict=True):
        total += int(count)
        if first:
            score = float(first[0][1])
            oldest = score if oldest is None else min(oldest, score)
    return total, oldest


def migrate_legacy(client: redis.Redis) -> int:
    """Move the jobs of the one pre-shard set (``hw:timers``) into their shards, once.

    A store written before shards keeps its offline checks and ladder steps; the tokens
    move with their jobs, so a step already planned still matches its incident.
    """
    if not client.exists(keys.LEGACY_TIMERS):
        return 0
    moved = 0
    legacy: Any = client.zrange(keys.LEGACY_TIMERS, 0, -1, withscores=True)
    for raw_job, score in legacy:
        job = _s(raw_job)
        meta: Any = client.hgetall(f"hw:timer:{job}")
        pipe = client.pipeline(transaction=True)
        if meta:
            pipe.hset(keys.timer(job), mapping=meta)
        pipe.zadd(keys.job_timers(job), {job: float(score)}, nx=True)
        pipe.execute()
        client.delete(f"hw:timer:{job}")
        client.zrem(keys.LEGACY_TIMERS, job)
        moved += 1
    return moved


class TimerQueue:
    """Claim and complete jobs (the ticker's side), over every shard."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._start = 0
        self.saturated = False  # the last claim found more due than it took: claim again now

    def claim(self, *, now: float, limit: int = 100, lease_s: float = LEASE_S) -> list[Job]:
        """Due jobs, each leased to this caller until ``now + lease_s``.

        Each shard gives at most its part of ``limit`` (one pipeline, one round trip per
        node), starting from a rotating shard, so a backlog in one shard cannot starve the
        others; ``saturated`` tells the caller to come back at once.
        """
        lease_until = round(now + lease_s, 3)
        every = shards.every()
        per_shard = max(1, math.ceil(limit / len(every)))
        order = [every[(self._start + i) % len(every)] for i in range(len(every))]
        self._start = (self._start + 1) % len(every)
        calls: list[tuple[list[str], list[Any]]] = [
            (
                [keys.timers(shard)],
                [repr(now), repr(lease_until), per_shard, keys.timer_prefix(shard)],
            )
            for shard in order
        ]
        jobs: list[Job] = []
        self.saturated = False
        for rows in _CLAIM.run_many(self._redis, calls):
            self.saturated = self.saturated or len(rows) >= per_shard
            jobs += [
                Job(
                    id=_s(job),
                    token=_s(token),
                    payload=json.loads(_s(payload) or "{}"),
                    lease_until=lease_until,
                )
                for job, token, payload in rows
            ]
        return jobs

    def complete(self, job: Job) -> bool:
        """Forget a handled job unless it was re-scheduled meanwhile (token changed)."""
        done = _COMPLETE(
            self._redis,
            keys=[keys.job_timers(job.id), keys.timer(job.id)],
            args=[job.id, job.token, repr(job.lease_until)],
        )
        return bool(done)


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
