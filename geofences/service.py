"""Zone storage per elder (the zone API and engine arrive with the geofence issues)."""

from __future__ import annotations

import redis.asyncio as aioredis

from locator.core import keys


async def delete_for_elder(redis: aioredis.Redis, *, elder_id: int) -> None:
    """Drop an elder's zones, zone state and pause window."""
    await redis.delete(keys.zones(elder_id), keys.zone_state(elder_id), keys.pause(elder_id))
