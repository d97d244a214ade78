"""Removing entries from Redis streams: an erased elder's entries, and entries past retention.

Deleting an entry a consumer group has read but not acknowledged would leave a pending id
whose fields come back empty; every group acknowledges what is deleted here, in the same
transaction, so nothing reads a hole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

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
