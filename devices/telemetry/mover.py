"""The track mover: fixes that arrived before the hot window go from Redis to the archive.

Copy first (idempotent), delete from Redis only after the copy committed: a crash in
between copies the same entries again, and the archive's natural key keeps them once. The
tracks to look at come from the retention index (each per-elder stream by its oldest
entry's arrival, one index per shard): the mover remembers per shard the score up to which
it has looked, so her events streams, kept for the whole retention, are passed over once
instead of at every pass; a track it empties of old fixes is re-scored to its oldest
entry left, which lies ahead of the mark, and comes round again when that one is due.
"""

from __future__ import annotations

import math
from typing import Any

import redis

from devices import keys
from devices.telemetry import erasure
from devices.telemetry.archive import TrackArchive
from devices.telemetry.schemas import Fix
from locator.core import keys as core_keys
from locator.core import shards, streams

BATCH = 500  # entries per copy transaction
STREAMS_PER_PASS = 200


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def move(
    client: redis.Redis,
    archive: TrackArchive,
    *,
    now: float,
    retention_s: int,
    limit: int = STREAMS_PER_PASS,
) -> int:
    """One bounded pass: every track with fixes older than the hot window is emptied of
    them into the archive. Returns how many fixes left Redis."""
    archive.prepare(now=now)
    cutoff = now - archive.hot_s
    moved = 0
    for shard in shards.every():
        moved += _move_shard(
            client, archive, shard, cutoff=cutoff, retention_s=retention_s, now=now, limit=limit
        )
    return moved


def _move_shard(
    client: redis.Redis,
    archive: TrackArchive,
    shard: int,
    *,
    cutoff: float,
    retention_s: int,
    now: float,
    limit: int,
) -> int:
    raw_mark = client.get(keys.archive_mark(shard))
    mark = float(_s(raw_mark)) if raw_mark is not None else -math.inf
    due: Any = client.zrangebyscore(
        core_keys.retention_streams(shard), mark, cutoff, start=0, num=limit, withscores=True
    )
    moved = 0
    for raw_key, _score in due:
        key = _s(raw_key)
        owner = keys.track_owner(key)
        if owner is not None:
            moved += _move_one(
                client,
                archive,
                key,
                owner=owner,
                cutoff_ms=cutoff * 1000,
                expired_before=now - retention_s,
            )
    if len(due) < limit:
        next_mark = cutoff
    else:
        # A full page: look on from its last score next pass (inclusive: repeats are no-ops);
        # a page of one score only would never move, so step just past it then.
        last = float(due[-1][1])
        next_mark = last if last > mark else math.nextafter(last, math.inf)
    client.set(keys.archive_mark(shard), repr(next_mark))
    return moved


def _move_one(
    client: redis.Redis,
    archive: TrackArchive,
    stream: str,
    *,
    owner: tuple[int, str],
    cutoff_ms: float,
    expired_before: float,
) -> int:
    elder_id, device_id = owner
    moved = 0
    while True:
        entries: Any = client.xrange(stream, "-", "+", count=BATCH)
        old = [(_s(e), f) for e, f in entries if float(f.get("received_ms") or 0) < cutoff_ms]
        # Fixes already past retention (a bracelet's clock far behind) are not copied.
        fixes = [Fix.from_stream(device_id, e, f) for e, f in old]
        keep = [f for f in fixes if f.tst >= expired_before]
        if keep and not archive.store(
            elder_id=elder_id, fixes=keep, still_held=lambda: bool(client.exists(stream))
        ):
            return moved  # she is being erased: her erasure deletes the rest
        moved += streams.delete_entries(client, stream, [e for e, _ in old])
        if len(old) < len(entries) or len(entries) < BATCH:
            break
    erasure.reindex(client, stream)
    return moved
