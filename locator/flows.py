"""The only place that coordinates several domains."""

from __future__ import annotations

import redis.asyncio as aioredis

from alerts.responders import service as responders
from devices.elders import service as elders
from devices.registry import service as registry
from geofences import service as geofences
from locator.core.auth import Principal
from locator.core.clock import Clock


async def delete_elder(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, clock: Clock
) -> None:
    """Remove an elder's device binding, zones and pair; incident history is kept."""
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=True)
    await registry.unbind_elder(redis, elder_id=elder_id)
    await geofences.delete_for_elder(redis, elder_id=elder_id)
    await responders.remove_pair(redis, elder_id=elder_id)
    # Last, so a crash half-way leaves a visible elder the caller can delete again.
    await elders.mark_deleted(redis, caller=caller, elder_id=elder_id, clock=clock)
