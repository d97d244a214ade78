"""HTTP routes: position, track, device events, rejected uplinks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from devices.elders.access_log import AccessLogDep
from devices.telemetry import service
from devices.telemetry.archive import ArchiveDep
from devices.telemetry.schemas import DeviceEventRead, PositionRead, RejectedRead, TrackCollection
from locator.core.deps import CallerDep, ClockDep, RedisDep
from locator.core.schemas import Page

router = APIRouter(tags=["positions"])
Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("/elders/{elder_id}/position")
async def get_position(
    elder_id: int, redis: RedisDep, caller: CallerDep, clock: ClockDep, log: AccessLogDep
) -> PositionRead:
    position = await service.position(redis, caller=caller, elder_id=elder_id, clock=clock)
    await log.record(elder_id=elder_id, action="position.read")
    return position


@router.get("/elders/{elder_id}/track")
async def get_track(
    elder_id: int,
    redis: RedisDep,
    caller: CallerDep,
    clock: ClockDep,
    log: AccessLogDep,
    archive: ArchiveDep,
    since: datetime | None = None,
    until: datetime | None = None,
) -> TrackCollection:
    """GeoJSON FeatureCollection of fixes whose fix time is in [since, until] (default 24 h)."""
    track = await service.track(
        redis,
        caller=caller,
        elder_id=elder_id,
        since=since,
        until=until,
        clock=clock,
        archive=archive,
    )
    window = f"since {since.isoformat() if since else '24 h'}" + (
        f" until {until.isoformat()}" if until else ""
    )
    await log.record(elder_id=elder_id, action="track.read", detail=window)
    return track


@router.get("/elders/{elder_id}/events")
async def get_device_events(
    elder_id: int,
    redis: RedisDep,
    caller: CallerDep,
    log: AccessLogDep,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Page[DeviceEventRead]:
    events = await service.device_events(
        redis, caller=caller, elder_id=elder_id, cursor=cursor, limit=limit
    )
    await log.record(elder_id=elder_id, action="events.read")
    return events


@router.get("/rejected", tags=["ingest"])
async def list_rejected(
    redis: RedisDep,
    caller: CallerDep,
    cursor: str | None = None,
    limit: Limit = 50,
    reason: str | None = None,
    device_id: str | None = None,
) -> Page[RejectedRead]:
    """Dead-lettered uplink messages with the reason each was rejected, newest first."""
    return await service.rejected(
        redis, caller=caller, cursor=cursor, limit=limit, reason=reason, device_id=device_id
    )


@router.get("/rejected/counts", tags=["ingest"])
async def rejected_counts(redis: RedisDep, caller: CallerDep) -> dict[str, int]:
    return await service.rejected_counts(redis, caller=caller)
