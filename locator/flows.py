"""The only place that coordinates several domains."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

from alerts.incidents import erasure as incident_erasure
from alerts.incidents.config import AlertsConfig
from alerts.incidents.service import actor_of
from alerts.responders import service as responders
from devices.elders import access_log
from devices.elders import service as elders
from devices.registry import service as registry
from devices.telemetry import archive
from devices.telemetry import erasure as telemetry_erasure
from geofences import service as geofences
from locator.core.auth import Principal
from locator.core.clock import Clock


async def delete_elder(
    redis: aioredis.Redis,
    *,
    caller: Principal,
    elder_id: int,
    clock: Clock,
    sync_redis: redis.Redis,
    alerts: AlertsConfig,
) -> None:
    """Erase an elder everywhere (PIPL Art. 47); only anonymous SLA figures and the
    access-log entry "erased by X at T" remain."""
    # Tombstone first: from here on no device or pair can be attached (they check the elder
    # under WATCH), and messages stop naming her. A crash half-way is finished by deleting
    # again: every step is idempotent and the record itself goes last.
    await elders.mark_deleted(redis, caller=caller, elder_id=elder_id, clock=clock)
    # No new fixes (the bracelet returns to stock with its claim code), zones or pair.
    await registry.unbind_elder(redis, elder_id=elder_id)
    await geofences.delete_for_elder(redis, elder_id=elder_id)
    await responders.remove_pair(redis, elder_id=elder_id)

    def erase_sync() -> None:
        # Alarms of hers not yet handled go before her incident is cancelled, so none of
        # them can open a new one afterwards.
        telemetry_erasure.erase_elder(
            sync_redis, elder_id=elder_id, archive=archive.for_settings(alerts.settings)
        )
        geofences.purge_transitions(sync_redis, elder_id=elder_id)
        incident_erasure.erase_elder(sync_redis, alerts, elder_id=elder_id, actor=actor_of(caller))

    await asyncio.to_thread(erase_sync)
    await elders.erase_record(redis, elder_id=elder_id)
    await access_log.erase(redis, elder_id=elder_id)
    await access_log.record(
        redis, elder_id=elder_id, caller=caller, action="erased", detail="", now=clock.time()
    )
