"""The relay: a per-elder script's effects on shared keys, applied after it by its caller.

On a Redis Cluster a script may touch one hash slot only. A per-elder script (the ingest's
store, the offline check) writes her keys and appends what it means for shared keys (an
entry on her shard's transitions or device-events stream, her offline timer, the retention
index, a dead letter) to her relay list ``hw:{e:<id>}:relay`` as JSON, and returns the whole
list (the ingest's store returns only what it pushed when the list held nothing before, and
nothing when it pushed nothing). The caller applies the effects to the shards, then pops
from the list's head what it applied (a script on her slot: another caller may have applied
and popped them first).

Crash windows, each closed:

* after the script, before the relay: the message is not acknowledged, so its redelivery
  runs the script again, which answers ``duplicate`` and still returns the list; for the
  case nobody comes back, the caller marks her in her shard's intent set
  ``hw:{s:<n>}:relay-pending`` *before* the script and unmarks after the pop; the ticker's
  sweep (every ``EVERY_S``) applies what an intent older than ``SWEEP_AFTER_S`` left.
* after the relay, before the pop: the same effects are applied again. Stream entries carry
  a ``source`` naming her own entry (``e:<elder>:events@<id>``), which the alerts intake
  handles once; timer and index writes are idempotent; a dead letter may show twice.

The incident commit and the outbox's enqueue (alerts) relay the same way, through
``guarded``: the intent is marked before the script, its list applied and the intent
released after it, so a caller killed in between leaves the sweep to finish.

Effects: ``["x", "transitions"|"device-events", source, field, value, ...]`` (XADD),
``["t", job, due]`` (ZADD the timer), ``["i", stream, score]`` (ZADD NX the retention
index), ``["r", field, value, ...]`` (a dead letter, counted by its reason);
``["T", job, due, token, payload, version]`` (a timer with its token: the ladder's step,
only over an older version's) and ``["tc", job, version]`` (cancel it, the same way);
``["o", attempt]`` (XADD her outbox shard, once per attempt: a marker beside the stream,
set in the same script), ``["f", mark, field, value, ...]``
(XADD the feed, once per mark); ``["z", key, score, member]``, ``["zr", key, member]``,
``["h", key, field, value]``, ``["hd", key, field, expected]`` (HDEL only while it still
holds ``expected``), ``["s", key, member]``, ``["sr", key, member]`` on global indexes.
Every one of them is idempotent, so an effect applied twice changes nothing more.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis

from locator.core import keys, shards
from locator.core.logging import get_logger
from locator.core.redis import command_batch, is_cluster
from locator.core.scripts import ItemScript, Script

log = get_logger(__name__)

EVERY_S = 5.0  # the ticker's sweep of intents nobody finished
SWEEP_AFTER_S = 10.0  # an intent this old has no live caller (a batch takes milliseconds)
SWEEP_LIMIT = 100  # intents per shard and pass
REJECTED_MAX = 10_000

# Per elder (an item of one call per batch; per slot on a cluster): her list's head, as far
# as it holds applied effects, goes.
_POP = ItemScript(
    """
local applied = {}
for i = 1, #ARGV do applied[ARGV[i]] = true end
local list = redis.call('LRANGE', KEYS[1], 0, -1)
local popped = 0
while list[popped + 1] and applied[list[popped + 1]] do popped = popped + 1 end
if popped == #list then
  if popped > 0 then redis.call('DEL', KEYS[1]) end
elseif popped > 0 then
  redis.call('LTRIM', KEYS[1], popped, -1)
end
return popped
""",
    name="relay_pop",
)

# An XADD that happens once per marker: a relay applied twice (a crash before the pop, the
# sweep racing a slow caller) must not queue a page or a feed entry twice.
_ONCE = Script(
    """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', 86400) then return 0 end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
if ARGV[1] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
else
  redis.call('XADD', KEYS[2], '*', unpack(fields))
end
return 1
""",
    name="relay_once",
)

_HDEL_IF = Script(
    """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
""",
    name="relay_hdel_if",
)

# The ladder's timer, guarded by the incident version that set it: two callers applying
# their lists out of order (one slow, one fast) leave the newest schedule, never an older
# token that would fire as "stale" and lose the step. A cancel leaves a short tombstone.
_LADDER = Script(
    """
local have = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
if have >= tonumber(ARGV[3]) then return 0 end
if ARGV[1] == 'T' then
  redis.call('HSET', KEYS[2], 'token', ARGV[5], 'payload', ARGV[6], 'version', ARGV[3])
  redis.call('PERSIST', KEYS[2])
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
else
  redis.call('HSET', KEYS[2], 'token', '', 'version', ARGV[3])
  redis.call('EXPIRE', KEYS[2], 86400)
  redis.call('ZREM', KEYS[1], ARGV[2])
end
return 1
""",
    name="relay_ladder",
)

FEED_MAX = 10_000
T = TypeVar("T")


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def writer_token() -> str:
    """Names one caller's intents, so it unmarks only its own."""
    return secrets.token_hex(6)


def intend(pipe: Any, elders: Iterable[int], *, token: str, now: float) -> int:
    """Queue the intent marks for ``elders`` on ``pipe`` (one ZADD per shard); how many.

    Scored in whole seconds, rounded up (a sweep comes at most a second later): a small
    sorted set keeps its scores as text, and a whole number is written and read far more
    cheaply than a fraction (a mark and an unmark per uplink).
    """
    score = math.ceil(now)
    by_shard: dict[int, dict[str, float]] = {}
    for elder in elders:
        by_shard.setdefault(shards.shard_of(elder), {})[f"{elder}|{token}"] = score
    for shard, members in by_shard.items():
        pipe.zadd(keys.relay_pending(shard), members)
    return len(by_shard)


def release(pipe: Any, elders: Iterable[int], *, token: str) -> None:
    """Queue the removal of this caller's intent marks on ``pipe``."""
    by_shard: dict[int, list[str]] = {}
    for elder in elders:
        by_shard.setdefault(shards.shard_of(elder), []).append(f"{elder}|{token}")
    for shard, members in by_shard.items():
        pipe.zrem(keys.relay_pending(shard), *members)


def mark_first(
    client: redis.Redis,
    elders: Iterable[int],
    *,
    token: str,
    now: float,
    done: Iterable[int] = (),
    after: Any = None,
) -> tuple[Any, int]:
    """A pipeline that starts with the intent marks, and how many replies they take in it;
    ``done``: the previous batch's intents, unmarked first (they rode along for free);
    ``after``: a batch still in flight, which this one follows on its connection.

    On one Redis the marks go first on the same connection as the scripts after them, so
    they land first. A cluster pipeline sends to each node on its own: there the marks are
    written in a round trip of their own before the scripts are sent.
    """
    cluster = is_cluster(client)
    marks = command_batch(client, after=None if cluster else after)
    release(marks, done, token=token)
    count = len(marks) + intend(marks, elders, token=token, now=now)
    if not cluster:
        return marks, count
    if count:
        marks.execute()
    return command_batch(client), 0


def merge(into: dict[int, list[str]], elder: int, entries: Iterable[object]) -> None:
    """Add a script's returned relay list to what a batch will apply (each entry once)."""
    if not entries:
        return  # the common case: nothing relayed (a list, as a script returns it)
    have = into.setdefault(elder, [])
    seen = set(have)
    for raw in entries:
        entry = _s(raw)
        if entry not in seen:
            have.append(entry)
            seen.add(entry)


def hdel_if(client: redis.Redis, key: str, field: str, expected: str) -> bool:
    """Delete a hash field only while it still holds ``expected`` (a code, a pointer)."""
    return bool(_HDEL_IF(client, keys=[key], args=[field, expected]))


class _Effects:
    """A batch of effects as commands: stream entries in order, sorted-set adds to the same
    timer set or retention index folded into one ZADD each, scripted effects after."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []
        self.zadds: dict[tuple[str, bool], dict[str, float]] = {}
        self.scripted: list[tuple[Script, list[str], list[Any]]] = []

    def zadd(self, key: str, member: str, score: float, *, nx: bool = False) -> None:
        members = self.zadds.setdefault((key, nx), {})
        if nx:
            members.setdefault(member, score)  # the first wins, as NX one by one would
        else:
            members[member] = score  # the last wins

    def add(self, elder: int, raw: str) -> None:
        effect = json.loads(raw)
        kind = effect[0]
        if kind == "x":
            if effect[1] not in keys.ALARM_SHARD_STREAMS:
                raise ValueError(f"unknown relay stream: {effect[1]!r}")
            stream = keys.shard_stream(effect[1], shards.shard_of(elder))
            fields = dict(zip(effect[3::2], effect[4::2], strict=True))
            fields["source"] = effect[2]
            # No MAXLEN: trimmed behind its consumer group.
            self.commands.append(("XADD", stream, "*", *_flat(fields)))
        elif kind == "t":
            self.zadd(keys.job_timers(effect[1]), effect[1], float(effect[2]))
        elif kind == "T":
            job = effect[1]
            ladder = [keys.job_timers(job), keys.timer(job)]
            args = ["T", job, effect[5], effect[2], effect[3], effect[4]]
            self.scripted.append((_LADDER, ladder, args))
        elif kind == "tc":
            job = effect[1]
            ladder = [keys.job_timers(job), keys.timer(job)]
            self.scripted.append((_LADDER, ladder, ["tc", job, effect[2]]))
        elif kind == "i":
            self.zadd(keys.retention_streams_of(effect[1]), effect[1], float(effect[2]), nx=True)
        elif kind == "r":
            fields = dict(zip(effect[1::2], effect[2::2], strict=True))
            self.commands.append(
                ("XADD", keys.REJECTED, "MAXLEN", "~", REJECTED_MAX, "*", *_flat(fields))
            )
            self.commands.append(("HINCRBY", keys.REJECTED_COUNTS, fields.get("reason", "?"), 1))
        elif kind == "o":
            # On her relay list, so her shard's outbox (the attempt id starts with her id too).
            shard = shards.shard_of(elder)
            once = [
                keys.relayed(shards.tag(shard), "outbox", effect[1]),
                keys.shard_stream("outbox", shard),
            ]
            self.scripted.append((_ONCE, once, ["", "attempt", effect[1]]))
        elif kind == "f":
            once = [
                keys.relayed(keys.FEED_TAG, "feed", effect[1]),
                keys.tagged_stream(keys.FEED_TAG),
            ]
            self.scripted.append((_ONCE, once, [str(FEED_MAX), *effect[2:]]))
        elif kind == "z":
            self.commands.append(("ZADD", effect[1], float(effect[2]), effect[3]))
        elif kind == "zr":
            self.commands.append(("ZREM", effect[1], effect[2]))
        elif kind == "h":
            self.commands.append(("HSET", effect[1], effect[2], effect[3]))
        elif kind == "hd":
            self.scripted.append((_HDEL_IF, [effect[1]], [effect[2], effect[3]]))
        elif kind == "s":
            self.commands.append(("SADD", effect[1], effect[2]))
        elif kind == "sr":
            self.commands.append(("SREM", effect[1], effect[2]))
        else:
            log.error("relay_effect_unknown", elder_id=elder, effect=raw[:200])

    def write(self, client: redis.Redis) -> None:
        """Every effect, in one round trip (plus one per kind of scripted effect)."""
        for (key, nx), members in self.zadds.items():
            scored = [x for member, score in members.items() for x in (score, member)]
            self.commands.append(("ZADD", key, "NX", *scored) if nx else ("ZADD", key, *scored))
        if self.commands:
            pipe = command_batch(client)
            for command in self.commands:
                pipe.execute_command(*command)
            pipe.execute()
        for script in {id(s): s for s, _, _ in self.scripted}.values():
            script.run_many(client, [(k, a) for s, k, a in self.scripted if s is script])


def _flat(fields: dict[Any, Any]) -> list[Any]:
    return [x for pair in fields.items() for x in pair]


def apply(
    client: redis.Redis,
    relays: dict[int, list[str]],
    *,
    token: str | None = None,
    intended: Iterable[int] = (),
) -> int:
    """Apply each elder's effects to the shards, then pop them from her list; with
    ``token``, also unmark that caller's intents for ``intended``. Returns effects applied.

    With nothing to apply and no token this costs no round trip (the common case: a fix
    whose offline timer is far enough ahead and whose streams already exist).
    """
    pending = {elder: entries for elder, entries in relays.items() if entries}
    applied = sum(len(entries) for entries in pending.values())
    if pending:
        effects = _Effects()
        for elder, entries in pending.items():
            for raw in entries:
                effects.add(elder, raw)
        effects.write(client)
    # Popped (and unmarked) only after every effect is written: a crash in between
    # applies them again, which the consumers absorb.
    _POP.run_grouped(
        client, [([keys.relay(elder)], list(entries)) for elder, entries in pending.items()]
    )
    if token is not None:
        pipe = client.pipeline(transaction=False)
        release(pipe, intended, token=token)
        if len(pipe):
            pipe.execute()
    return applied


def guarded(
    client: redis.Redis, elder: int, *, now: float, run: Callable[[], tuple[T, list[Any]]]
) -> T:
    """Run one per-elder script that leaves effects on her relay list, then apply them.

    ``run`` answers (its result, her relay list as the script returned it). The intent is
    marked first, so a caller killed after the script leaves the sweep to apply the list.
    """
    token = writer_token()
    marks = client.pipeline(transaction=False)
    intend(marks, [elder], token=token, now=now)
    marks.execute()
    result, entries = run()
    relays: dict[int, list[str]] = {}
    merge(relays, elder, entries)
    apply(client, relays, token=token, intended=[elder])
    return result


def flush(client: redis.Redis, elder: int) -> int:
    """Apply whatever her relay list holds now (a redelivery that commits nothing)."""
    entries: Any = client.lrange(keys.relay(elder), 0, -1)
    return apply(client, {elder: [_s(e) for e in entries]}) if entries else 0


def sweep(client: redis.Redis, *, now: float, limit: int = SWEEP_LIMIT) -> int:
    """Finish what callers that died left: apply the relay of each stale intent, unmark it."""
    pipe = client.pipeline(transaction=False)
    for shard in shards.every():
        pipe.zrangebyscore(keys.relay_pending(shard), "-inf", now - SWEEP_AFTER_S, 0, limit)
    stale = [
        (shard, _s(m))
        for shard, found in zip(shards.every(), pipe.execute(), strict=True)
        for m in found
    ]
    if not stale:
        return 0
    elders = sorted({int(member.split("|", 1)[0]) for _, member in stale})
    pipe = client.pipeline(transaction=False)
    for elder in elders:
        pipe.lrange(keys.relay(elder), 0, -1)
    relays = {
        elder: [_s(e) for e in entries]
        for elder, entries in zip(elders, pipe.execute(), strict=True)
    }
    applied = apply(client, relays)
    pipe = client.pipeline(transaction=False)
    for shard, member in stale:
        pipe.zrem(keys.relay_pending(shard), member)
    pipe.execute()
    if applied:
        log.warning("relay_swept", effects=applied, elders=len(elders))
    return applied
