"""The other domains' readers of her telemetry: her last position, her latest good fixes.

Light on purpose (the ingest's zone stage imports it): the API's telemetry service and its
archive stay out of processes that only need these reads.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from devices import keys
from devices.telemetry.positions import LastPosition, parse_position


def read_position(client: redis.Redis, *, elder_id: int) -> LastPosition | None:
    """Her last position; None before her first fix."""
    return parse_position(client.hgetall(keys.last_position(elder_id)))


async def read_position_async(redis: aioredis.Redis, *, elder_id: int) -> LastPosition | None:
    """``read_position`` for the async callers."""
    return parse_position(await redis.hgetall(keys.last_position(elder_id)))


def queue_read_position(pipe: Any, *, elder_id: int) -> None:
    """Queue her position's read in a pipeline; ``parse_position`` turns its reply into it."""
    pipe.hgetall(keys.last_position(elder_id))


def recent_good_fixes(
    client: redis.Redis, *, elder_id: int, device_id: str, count: int = 10
) -> list[tuple[float, float]]:
    """Her newest good fixes (lat, lon) from one device's hot track, newest first."""
    recent: Any = client.xrevrange(keys.track(elder_id, device_id), count=count)
    return [
        (float(f["lat"]), float(f["lon"]))
        for _, f in recent
        if "low_quality" not in f.get("flags", "")
    ]


def track_length(client: redis.Redis, *, elder_id: int, device_id: str) -> int:
    """How many fixes one device's hot track holds (the benches' stored count)."""
    return int(client.xlen(keys.track(elder_id, device_id)))


def queue_track_length(pipe: Any, *, elder_id: int, device_id: str) -> None:
    """Queue ``track_length``'s read in a pipeline (its reply is the count)."""
    pipe.xlen(keys.track(elder_id, device_id))


def queue_track_since(pipe: Any, *, elder_id: int, device_id: str, since_ms: int) -> None:
    """Queue a read of one device's hot track entries from ``since_ms`` (Redis stream ids)."""
    pipe.xrange(keys.track(elder_id, device_id), min=str(since_ms))


def queue_track_entries(
    pipe: Any, *, elder_id: int, device_id: str, count: int | None = None
) -> None:
    """Queue a read of her hot track's entries from one device, oldest first (benches)."""
    pipe.xrange(keys.track(elder_id, device_id), count=count)


def queue_track_memory(pipe: Any, *, elder_id: int, device_id: str) -> None:
    """Queue MEMORY USAGE of her hot track from one device (benches' bytes per fix)."""
    pipe.memory_usage(keys.track(elder_id, device_id), samples=0)
