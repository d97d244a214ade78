"""Shards of the global streams and timer sets: which shard an elder or a timer job is in (pure).

On a Redis Cluster every key a command or script touches must share one hash slot. Per-elder
keys share ``{e:<id>}``; what many elders feed (the transitions and device-event streams, the
timer set, the retention index) is split into ``SHARDS`` keys tagged ``{s:<n>}``. An elder
always maps to the same shard, so her entries keep their order; consumers read every shard.
The same layout is used on a single Redis, so one code path is tested everywhere.

The count is a property of the store, not of a call: every process sharing a store must use
the same one (a different count would look for an elder's timers in the wrong set), so it is
set once per process from ``HOMEWARD_SHARDS`` and recorded in the store (``check_layout``).
"""

from __future__ import annotations

import zlib

DEFAULT_SHARDS = 16
MAX_SHARDS = 1024

_count = DEFAULT_SHARDS


def configure(count: int) -> None:
    """Set this process's shard count (``HOMEWARD_SHARDS``), once at start."""
    global _count
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"shards must be 1..{MAX_SHARDS}, not {count}")
    _count = count


def count() -> int:
    """The shard count this process uses."""
    return _count


def every() -> range:
    """Every shard number, for consumers that read them all."""
    return range(_count)


def tag(shard: int) -> str:
    """The hash tag of a shard's keys."""
    return f"{{s:{shard}}}"


def shard_of(elder_id: int, shards: int | None = None) -> int:
    """The elder's shard: ids are sequential, so the remainder spreads them evenly."""
    return elder_id % (shards or _count)


def shard_of_job(job_id: str, shards: int | None = None) -> int:
    """A timer job's shard: its elder's when its first argument is one, else a stable hash.

    An elder's jobs (``offline|<elder>|<device>``, ``sla|<elder>|<incident>``) sit with her
    streams, so a per-elder script's timer and the shard it relays to agree.
    """
    n = shards or _count
    parts = job_id.split("|")
    if len(parts) > 1 and parts[1].isdigit():
        return shard_of(int(parts[1]), n)
    return zlib.crc32(job_id.encode()) % n
