"""Watching the watcher: is the alerting machinery itself alive?

Every long-running loop (ingest, ticker, alerts intake, delivery) writes a heartbeat into
Redis, so any API process — on any machine — can tell. ``assess`` reads them with the
timers, the outbox and the open incidents; ``/healthz`` and ``/metrics`` show the result,
and a change between "ok" and "degraded" goes on the live feed once (a script compares and
sets the system state), where dispatchers see it as a banner.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import redis

from alerts import intake
from alerts.feed import feed_stream
from alerts.incidents.reads import sla_states
from alerts.notify import outbox
from locator.core import keys, streams, timers
from locator.core.scripts import Script

TICKER_STALE_S = 15.0  # the ticker beats every half second
TIMERS_OVERDUE_S = 30.0  # a due job unclaimed this long: nobody is firing timers
LOOP_STALE_S = 30.0
WATCHED = ("ticker", "alerts", "delivery", "ingest")
# Redis refuses every write at maxmemory (noeviction): warn well before, while there is time.
MEMORY_WARN = 0.80
MEMORY_CRITICAL = 0.95  # /healthz answers 503 from here
LOST_RECENT_S = 3600.0  # a lost stream entry keeps the banner up this long

_TRANSITION = Script(
    """
local previous = redis.call('GET', KEYS[1])
if previous == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
if not previous and ARGV[1] == 'ok' then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'type', 'system', 'incident_id', '',
  'elder_id', '', 'version', '', 'data', ARGV[2])
return 1
""",
    name="system_state_transition",
)


def beat(client: redis.Redis, name: str, *, now: float, **status: Any) -> None:
    """Record that loop ``name`` is alive at ``now`` (its clock), with its status."""
    doc = {"at": now, "host": socket.gethostname(), "pid": os.getpid(), **status}
    client.hset(keys.HEARTBEATS, name, json.dumps(doc))


@dataclass
class Assessment:
    problems: list[str] = field(default_factory=list)
    heartbeat_age_s: dict[str, float] = field(default_factory=dict)
    ingest_lag_s: float = 0.0
    timers_overdue: int = 0
    timers_oldest_overdue_s: float = 0.0
    alarms_waiting: int = 0  # transitions and device events the alerts stage has not handled
    alarms_oldest_s: float = 0.0
    outbox_depth: int = 0
    outbox_oldest_s: float = 0.0
    notifications: dict[str, int] = field(default_factory=dict)  # "channel:status" -> count
    incidents_by_sla: dict[str, int] = field(default_factory=dict)
    # Not the machinery failing (yet): on the banner, but /healthz decides on its own.
    warnings: list[str] = field(default_factory=list)
    redis_memory_ratio: float | None = None  # used_memory / maxmemory; None: no maxmemory
    streams_lost: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "degraded" if self.problems or self.warnings else "ok"


def _stream_ms(entry_id: str) -> float:
    return float(entry_id.split("-", 1)[0])


def _backlog(client: redis.Redis, stream: str, group_name: str, now: float) -> tuple[int, float]:
    """Entries a consumer group has not yet acknowledged, and the oldest one's age."""
    try:
        groups: Any = client.xinfo_groups(stream)
    except redis.ResponseError:
        return 0, 0.0
    group = next((g for g in groups if g["name"] == group_name), None)
    if group is None:
        return int(client.xlen(stream)), 0.0
    pending = int(group["pending"])
    oldest: float | None = None
    if pending:
        summary: Any = client.xpending(stream, group_name)
        if summary and summary.get("min"):
            oldest = _stream_ms(str(summary["min"]))
    unread: Any = client.xrange(stream, min=f"({group['last-delivered-id']}", count=10_001)
    if unread and oldest is None:
        oldest = _stream_ms(str(unread[0][0]))
    age = max(0.0, now - oldest / 1000) if oldest is not None else 0.0
    return pending + len(unread), age


def assess(client: redis.Redis, *, now: float) -> Assessment:
    """The state of the machinery at ``now``; problems name what is wrong."""
    result = Assessment()
    beats: Any = client.hgetall(keys.HEARTBEATS)
    for name in WATCHED:
        if name not in beats:
            continue  # never started here: overdue timers will tell if that matters
        doc = json.loads(beats[name])
        age = max(0.0, now - float(doc["at"]))
        result.heartbeat_age_s[name] = round(age, 1)
        limit = TICKER_STALE_S if name == "ticker" else LOOP_STALE_S
        if age > limit:
            result.problems.append(f"{name}: no heartbeat for {age:.0f} s")
        if name == "ingest":
            result.ingest_lag_s = float(doc.get("lag_s", 0.0)) + (age if age > limit else 0.0)
    overdue, oldest = timers.due_count(client, before=now - TIMERS_OVERDUE_S)
    if overdue and oldest is not None:
        result.timers_overdue = overdue
        result.timers_oldest_overdue_s = round(now - oldest, 1)
        result.problems.append(
            f"timers: {result.timers_overdue} overdue, oldest by "
            f"{result.timers_oldest_overdue_s:.0f} s (is a ticker running?)"
        )
    for stream in intake.streams_read():
        depth, age = _backlog(client, stream, intake.GROUP, now)
        result.alarms_waiting += depth
        result.alarms_oldest_s = max(result.alarms_oldest_s, round(age, 1))
    if result.alarms_waiting and result.alarms_oldest_s > LOOP_STALE_S:
        # Also what a poison alarm looks like: its handler fails, it stays pending and is
        # retried, and someone must look at the log ("alarm_failed").
        result.problems.append(
            f"alarms: {result.alarms_waiting} not handled, oldest {result.alarms_oldest_s:.0f} s"
        )
    result.outbox_depth, result.outbox_oldest_s = _backlog(
        client, outbox.outbox_stream(), outbox.GROUP, now
    )
    if result.outbox_depth and result.outbox_oldest_s > LOOP_STALE_S:
        result.problems.append(
            f"outbox: {result.outbox_depth} waiting, oldest {result.outbox_oldest_s:.0f} s"
        )
    result.notifications = outbox.notification_counts(client)
    result.incidents_by_sla = sla_states(client, now=now)
    _memory(client, result)
    result.streams_lost, lost_at = streams.lost_counts(client)
    if lost_at is not None and now - lost_at < LOST_RECENT_S:
        total = sum(result.streams_lost.values())
        result.warnings.append(
            f"streams: {total} entries deleted before they were handled so far, the last "
            f"{max(0.0, now - lost_at):.0f} s ago (log: stream_entry_lost)"
        )
    return result


def _memory(client: redis.Redis, result: Assessment) -> None:
    """used_memory against maxmemory: past MEMORY_WARN the banner says so."""
    info: Any = client.info("memory")
    limit = int(info.get("maxmemory", 0))
    if not limit:
        return  # no limit set: Redis grows until the host runs out (compose sets one)
    used = int(info["used_memory"])
    result.redis_memory_ratio = round(used / limit, 4)
    if result.redis_memory_ratio >= MEMORY_WARN:
        result.warnings.append(
            f"redis memory: {memory_text(result.redis_memory_ratio)} "
            f"({used // 2**20} of {limit // 2**20} MiB); at 100% every write is refused"
        )


def memory_text(ratio: float) -> str:
    return f"{ratio * 100:.0f}% of maxmemory"


def record(client: redis.Redis, assessment: Assessment, *, now: float) -> bool:
    """Put a change of system state on the live feed (once, whichever process sees it)."""
    problems = assessment.problems + assessment.warnings
    data = json.dumps(
        {"status": assessment.status, "problems": problems, "at": now},
        ensure_ascii=False,
    )
    return bool(
        _TRANSITION(client, keys=[keys.SYSTEM_STATE, feed_stream()], args=[assessment.status, data])
    )


def watch_once(client: redis.Redis, *, now: float) -> Assessment:
    assessment = assess(client, now=now)
    record(client, assessment, now=now)
    return assessment
