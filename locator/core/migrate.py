"""A store written before shards, moved into them once (the ticker does it at start).

Before ``HOMEWARD_SHARDS`` one Redis held one timer set, one retention index, one pair of
alarm streams and one dead-letter stream; before the incident commit was cluster-clean, one
outbox stream, attempt hashes outside her slot and an untagged feed. Left there they would
be silently orphaned: timers never firing, old tracks never reaching retention (her data
kept past its time), alarms not yet handled never read, pages queued never sent. Each is
moved into the shard layout under a lock, so two tickers starting together move it once.
A cluster never held the old keys: there this is a no-op.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from locator.core import keys, shards, timers
from locator.core.logging import get_logger

log = get_logger(__name__)

LOCK = "hw:migration:shards"
LEGACY_RETENTION = "hw:retention:streams"
LEGACY_ARCHIVE_MARK = "hw:archive:mark"
LEGACY_REJECTED = "hw:stream:rejected"
LEGACY_REJECTED_COUNTS = "hw:stats:rejected"
# kind -> legacy stream; the old intake named an entry "<kind>@<id>", kept as its source so
# an alarm handled before the move is not handled again.
LEGACY_ALARMS = {"transitions": "hw:stream:transitions", "device-events": "hw:stream:device-events"}
LEGACY_OUTBOX = keys.stream("outbox")
LEGACY_FEED = keys.stream("feed")
LEGACY_SYSTEM_STATE = "hw:system:state"
LEGACY_ATTEMPTS = "hw:attempt:*"
BATCH = 500
ALERTS_GROUP = "alerts"  # alerts/intake.py's group (core imports no domain)
OUTBOX_GROUPS = ("delivery", "delivery-extra")  # alerts/notify/outbox.py's groups


def attempt_key(attempt: str) -> str:
    """alerts/keys.py's ``attempt``, by name (core imports no domain; a test holds them equal)."""
    return f"hw:{keys.elder_tag(int(attempt.split('.', 1)[0]))}:attempt:{attempt}"


def _outbox_of(attempt: str) -> str:
    return keys.shard_stream("outbox", shards.shard_of(int(attempt.split(".", 1)[0])))


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def legacy_keys(client: redis.Redis) -> list[str]:
    """The pre-shard keys still in the store."""
    names = [
        keys.LEGACY_TIMERS,
        LEGACY_RETENTION,
        LEGACY_ARCHIVE_MARK,
        LEGACY_REJECTED,
        LEGACY_REJECTED_COUNTS,
        *LEGACY_ALARMS.values(),
        LEGACY_OUTBOX,
        LEGACY_FEED,
        LEGACY_SYSTEM_STATE,
    ]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.exists(name)
    return [name for name, found in zip(names, pipe.execute(), strict=True) if found]


def to_shards(client: redis.Redis) -> dict[str, int]:
    """Move whatever pre-shard keys exist; returns what moved (empty when nothing was left)."""
    if not legacy_keys(client):
        return {}
    if not client.set(LOCK, str(os.getpid()), nx=True, ex=600):
        return {}  # another process is moving them
    try:
        moved = {
            "timers": timers.migrate_legacy(client),
            "retention_index": _retention_index(client),
            "dead_letters": _dead_letters(client),
            **{kind: _alarms(client, kind, stream) for kind, stream in LEGACY_ALARMS.items()},
            # The attempts first: a page moved onto its shard is read at once.
            "attempts": _attempts(client),
            "outbox": _outbox(client),
            "feed": _feed(client),
        }
        client.delete(LEGACY_ARCHIVE_MARK)  # each shard's mover starts from the beginning
        log.info("store_moved_into_shards", shards=shards.count(), **moved)
        return moved
    finally:
        client.delete(LOCK)


def _retention_index(client: redis.Redis) -> int:
    """Each per-elder stream into its shard's index, with its score (oldest entry)."""
    entries: Any = client.zrange(LEGACY_RETENTION, 0, -1, withscores=True)
    for start in range(0, len(entries), BATCH):
        pipe = client.pipeline(transaction=False)
        for stream, score in entries[start : start + BATCH]:
            pipe.zadd(keys.retention_streams_of(_s(stream)), {_s(stream): score}, nx=True)
        pipe.execute()
    client.delete(LEGACY_RETENTION)
    return len(entries)


def _dead_letters(client: redis.Redis) -> int:
    """The old dead letters and counts join the tagged ones (a single Redis: any key pair)."""
    counts: Any = client.hgetall(LEGACY_REJECTED_COUNTS)
    if counts:
        pipe = client.pipeline(transaction=False)
        for reason, count in counts.items():
            pipe.hincrby(keys.REJECTED_COUNTS, _s(reason), int(count))
        pipe.delete(LEGACY_REJECTED_COUNTS)
        pipe.execute()
    if not client.exists(LEGACY_REJECTED):
        return 0
    if not client.exists(keys.REJECTED):
        moved = int(client.xlen(LEGACY_REJECTED))
        client.rename(LEGACY_REJECTED, keys.REJECTED)  # ids and order kept
        return moved
    # Both exist (an ingest wrote new ones first): the old ones are appended, newest order lost.
    entries: Any = client.xrange(LEGACY_REJECTED)
    pipe = client.pipeline(transaction=False)
    for _, fields in entries:
        pipe.xadd(keys.REJECTED, fields)
    pipe.delete(LEGACY_REJECTED)
    pipe.execute()
    return len(entries)


def _alarms(client: redis.Redis, kind: str, stream: str) -> int:
    """Entries the alerts group has not acknowledged, into their elder's shard stream."""
    if not client.exists(stream):
        return 0
    start = "-"
    try:
        groups: Any = client.xinfo_groups(stream)
    except redis.ResponseError:
        groups = []
    group = next((g for g in groups if _s(g["name"]) == ALERTS_GROUP), None)
    if group is not None:
        summary: Any = client.xpending(stream, ALERTS_GROUP)
        start = (
            _s(summary["min"])
            if summary and summary.get("min")
            else "(" + _s(group["last-delivered-id"])
        )
    entries: Any = client.xrange(stream, start, "+")
    for shard in shards.every():
        # The group first: made later at "$" it would skip what moves in; at "0" it reads
        # what this upgrade put there, which is exactly what was not handled yet.
        try:
            client.xgroup_create(
                keys.shard_stream(kind, shard), ALERTS_GROUP, id="0", mkstream=True
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
    pipe = client.pipeline(transaction=False)
    for entry_id, fields in entries:
        moved: dict[Any, Any] = {_s(k): _s(v) for k, v in fields.items()}
        moved.setdefault("source", f"{kind}@{_s(entry_id)}")
        elder = moved.get("elder_id", "")
        shard = shards.shard_of(int(elder)) if elder.isdigit() else 0
        pipe.xadd(keys.shard_stream(kind, shard), moved)
    pipe.delete(stream)
    pipe.execute()
    return len(entries)


def _bound(client: redis.Redis, stream: str, group_names: tuple[str, ...]) -> str:
    """The first entry some group still needs: its oldest pending, else past its last read."""
    try:
        groups: Any = client.xinfo_groups(stream)
    except redis.ResponseError:
        groups = []
    found = {_s(g["name"]): g for g in groups}
    bounds: list[tuple[int, int]] = []
    for name in group_names:
        group = found.get(name)
        if group is None:
            return "-"  # a group that never read it needs all of it
        summary: Any = client.xpending(stream, name)
        if summary and summary.get("min"):
            ms, seq = _s(summary["min"]).split("-")
            bounds.append((int(ms), int(seq)))
        else:
            ms, seq = _s(group["last-delivered-id"]).split("-")
            bounds.append((int(ms), int(seq) + 1))
    ms_, seq_ = min(bounds)
    return f"{ms_}-{seq_}"


def _attempts(client: redis.Redis) -> int:
    """Attempt hashes into their elder's slot (ids start with her id); once, by SCAN."""
    moved = 0
    for raw in client.scan_iter(match=LEGACY_ATTEMPTS, count=1000):
        old = _s(raw)
        attempt = old[len("hw:attempt:") :]
        if attempt.split(".", 1)[0].isdigit() and client.renamenx(old, attempt_key(attempt)):
            moved += 1
    return moved


def _outbox(client: redis.Redis) -> int:
    """Pages some delivery group has not read or acknowledged, onto their elder's shard."""
    if not client.exists(LEGACY_OUTBOX):
        return 0
    entries: Any = client.xrange(LEGACY_OUTBOX, _bound(client, LEGACY_OUTBOX, OUTBOX_GROUPS), "+")
    for shard in shards.every():
        for group in OUTBOX_GROUPS:
            # At "0": the groups read exactly what this move puts there.
            try:
                client.xgroup_create(
                    keys.shard_stream("outbox", shard), group, id="0", mkstream=True
                )
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
    pipe = client.pipeline(transaction=False)
    for _, fields in entries:
        attempt = _s(fields.get("attempt", ""))
        if attempt.split(".", 1)[0].isdigit():
            # A page one group had sent already finds its attempt sent: not sent again.
            pipe.xadd(_outbox_of(attempt), {"attempt": attempt})
    pipe.delete(LEGACY_OUTBOX)
    pipe.execute()
    return len(entries)


def _feed(client: redis.Redis) -> int:
    """The feed onto its tag, ids kept (an SSE client resumes); the system state beside it."""
    if client.exists(LEGACY_SYSTEM_STATE) and not client.renamenx(
        LEGACY_SYSTEM_STATE, keys.SYSTEM_STATE
    ):
        client.delete(LEGACY_SYSTEM_STATE)
    if not client.exists(LEGACY_FEED):
        return 0
    moved = int(client.xlen(LEGACY_FEED))
    if not client.renamenx(LEGACY_FEED, keys.tagged_stream(keys.FEED_TAG)):
        client.delete(LEGACY_FEED)  # a live view: the new feed already goes on
        return 0
    return moved
