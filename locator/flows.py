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
    # Tombstone first: from here on no device or pair can be attached (they check the elder
    # under WATCH), so the clean-up below cannot race a registration. A crash half-way is
    # finished by deleting again: the tombstone step is idempotent.
    await elders.mark_deleted(redis, caller=caller, elder_id=elder_id, clock=clock)
    await registry.unbind_elder(redis, elder_id=elder_id)
    await geofences.delete_for_elder(redis, elder_id=elder_id)
    await responders.remove_pair(redis, elder_id=elder_id)
