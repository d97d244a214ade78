"""Streams that carry alarms: trimmed only behind every consumer group, and losses noticed.

The transitions, device events and outbox streams are written without ``MAXLEN``: a cap
would drop the oldest entries whether or not the alerts stage or delivery had read them, and
an alarm nobody read is a person nobody looks for. The ticker calls ``trim_handled``
instead, which removes only what every consumer group has acknowledged (below the oldest
pending entry and the last-delivered id of each group). A stream with no group is not
trimmed at all: nobody has read it yet. What grows because a consumer is stuck shows up as
the watchdog's backlog and memory warnings, not as silently missing alarms.

Removing entries (an erased elder's, entries past retention) goes through
``delete_entries``/``purge``: every group acknowledges what is deleted, in the same
transaction, so no pending read meets a hole.

An entry that comes back empty from a pending read (deleted or trimmed while it was pending)
is still an error: ``note_lost`` logs it, counts it in Redis (for ``/metrics`` and the
degraded banner) and only then acknowledges it, so it is not claimed and counted forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis

from locator.core import keys, shards
from locator.core.logging import get_logger
from locator.core.redis import StreamEntries, claimed_entries
from locator.core.scripts import Script

log = get_logger(__name__)


def alarm_streams() -> list[str]:
    """Streams whose every entry may be an alarm or a page (every shard): never capped."""
    sharded = [
        keys.shard_stream(name, s) for s in shards.every() for name in keys.ALARM_SHARD_STREAMS
    ]
    return [*sharded, keys.stream("outbox")]


LOST_AT = "at"  # field of keys.STREAM_LOST holding the time of the last loss

# Redis 6.2: XINFO GROUPS and XPENDING inside the script, so a group created or an entry
# delivered between reading the groups and trimming cannot be raced. Ids compare as
# (ms, seq); XTRIM MINID removes ids strictly below the bound. Exact, not "~": what stays
# is exactly what some group still needs (plus the last delivered entry).
_TRIM = Script(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {0, ''} end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local bound, bms, bseq = nil, nil, nil
local function consider(id)
  local ms, seq = parse(id)
  if bound == nil or ms < bms or (ms == bms and seq < bseq) then
    bound, bms, bseq = id, ms, seq
  end
end
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  consider(info['last-delivered-id'])
  if tonumber(info['pending']) > 0 then
    local summary = redis.call('XPENDING', KEYS[1], info['name'])
    if summary[2] then consider(summary[2]) end
  end
end
if bms == 0 and bseq == 0 then return {0, bound} end
return {redis.call('XTRIM', KEYS[1], 'MINID', bound), bound}
""",
    name="trim_behind_groups",
)


def trim_handled(client: redis.Redis, streams: Iterable[str] | None = None) -> dict[str, int]:
    """Trim each stream up to what all its consumer groups acknowledged; returns removals."""
    names = list(streams) if streams is not None else alarm_streams()
    replies = _TRIM.run_many(client, [([stream], []) for stream in names])
    return {stream: int(reply[0]) for stream, reply in zip(names, replies, strict=True)}


def note_lost(
    client: redis.Redis,
    *,
    stream: str,
    group: str,
    entry_ids: list[str],
    now: float | None = None,
) -> None:
    """Entries gone under a pending read: logged as errors, counted, then acknowledged."""
    if not entry_ids:
        return
    if now is None:
        seconds, micros = client.time()
        now = seconds + micros / 1e6
    log.error("stream_entry_lost", stream=stream, group=group, entries=entry_ids[:20])
    pipe = client.pipeline(transaction=True)
    pipe.hincrby(keys.STREAM_LOST, f"{stream}|{group}", len(entry_ids))
    pipe.hset(keys.STREAM_LOST, LOST_AT, repr(now))
    pipe.xack(stream, group, *entry_ids)
    pipe.execute()


def live_entries(
    client: redis.Redis,
    entries: StreamEntries,
    *,
    stream: str,
    group: str,
    now: float | None = None,
) -> StreamEntries:
    """The entries that still have fields; the empty ones (deleted under us) noted lost."""
    lost = [entry_id for entry_id, fields in entries if entry_id is not None and not fields]
    note_lost(client, stream=stream, group=group, entry_ids=lost, now=now)
    return [(entry_id, fields) for entry_id, fields in entries if entry_id is not None and fields]


def claim(
    client: redis.Redis,
    *,
    stream: str,
    group: str,
    consumer: str,
    min_idle_ms: int,
    count: int = 100,
    now: float | None = None,
) -> StreamEntries:
    """XAUTOCLAIM of another consumer's idle entries; the ones gone meanwhile noted lost.

    Redis 6.2 answers a claimed entry that no longer exists with a bare nil (no id) and
    keeps it pending; its id is found among our pending entries that XRANGE cannot find.
    """
    reply: Any = client.xautoclaim(stream, group, consumer, min_idle_ms, "0-0", count=count)
    entries = claimed_entries(reply)
    if any(entry_id is None or not fields for entry_id, fields in entries):
        have = {entry_id for entry_id, fields in entries if entry_id is not None and fields}
        mine: Any = client.xpending_range(
            stream, group, min="-", max="+", count=max(count * 10, 1000), consumername=consumer
        )
        candidates = [str(p["message_id"]) for p in mine if str(p["message_id"]) not in have]
        pipe = client.pipeline(transaction=False)
        for entry_id in candidates:
            pipe.xrange(stream, min=entry_id, max=entry_id, count=1)
        found = pipe.execute() if candidates else []
        gone = [entry_id for entry_id, got in zip(candidates, found, strict=True) if not got]
        note_lost(client, stream=stream, group=group, entry_ids=gone, now=now)
    return [(entry_id, fields) for entry_id, fields in entries if entry_id is not None and fields]


def lost_counts(client: redis.Redis) -> tuple[dict[tuple[str, str], int], float | None]:
    """Entries lost so far by (stream, group), and when the last loss was noticed."""
    raw: Any = client.hgetall(keys.STREAM_LOST)
    at = raw.pop(LOST_AT, None)
    counts: dict[tuple[str, str], int] = {}
    for field, value in raw.items():
        stream, _, group = str(field).partition("|")
        counts[(stream, group)] = int(value)
    return counts, float(at) if at is not None else None


# --- removing entries (erasure, retention) ------------------------------------------------
BATCH = 500


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def groups(client: redis.Redis, stream: str) -> list[str]:
    """The consumer groups of a stream (none when it does not exist)."""
    try:
        info: Any = client.xinfo_groups(stream)
    except redis.ResponseError:
        return []
    return [_s(g["name"]) for g in info]


def delete_entries(client: redis.Redis, stream: str, ids: list[str]) -> int:
    """XDEL the ids, acknowledged first in every group (a pending hole is never read)."""
    if not ids:
        return 0
    names = groups(client, stream)
    deleted = 0
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        pipe = client.pipeline(transaction=True)
        for group in names:
            pipe.xack(stream, group, *chunk)
        pipe.xdel(stream, *chunk)
        deleted += int(pipe.execute()[-1])
    return deleted


def purge(
    client: redis.Redis,
    stream: str,
    match: Callable[[dict[str, str]], bool],
    *,
    upto: str = "+",
) -> int:
    """Delete every entry (up to id ``upto``) whose fields ``match``; returns how many.

    Reads the whole stream in batches: for erasure (rare), not for anything per fix.
    """
    doomed: list[str] = []
    start = "-"
    while True:
        entries: Any = client.xrange(stream, start, upto, count=BATCH)
        for entry_id, fields in entries:
            if match({_s(k): _s(v) for k, v in fields.items()}):
                doomed.append(_s(entry_id))
        if len(entries) < BATCH:
            break
        start = "(" + _s(entries[-1][0])
    return delete_entries(client, stream, doomed)


def last_id(client: redis.Redis, stream: str) -> str:
    """The newest entry's id, or ``0-0`` for an empty or missing stream."""
    newest: Any = client.xrevrange(stream, "+", "-", count=1)
    return _s(newest[0][0]) if newest else "0-0"
