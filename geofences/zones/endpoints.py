"""HTTP routes: zones, pause, transitions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from devices.elders.access_log import AccessLogDep
from geofences.zones import service
from geofences.zones.schemas import PauseBody, PauseRead, TransitionRead, ZoneFeature, ZoneRead
from locator.core.deps import CallerDep, ClockDep, RedisDep
from locator.core.schemas import CrsName, Page

router = APIRouter(tags=["zones"])


@router.post("/elders/{elder_id}/zones", status_code=status.HTTP_201_CREATED)
async def create_zone(
    elder_id: int,
    feature: ZoneFeature,
    redis: RedisDep,
    caller: CallerDep,
    clock: ClockDep,
    log: AccessLogDep,
) -> ZoneRead:
    """A GeoJSON Feature: Point + radius_m (≥ 100), Polygon or MultiPolygon; kind safe|danger."""
    zone = await service.create(
        redis, caller=caller, elder_id=elder_id, feature=feature, clock=clock
    )
    await log.record(elder_id=elder_id, action="zone.create", detail=f"zone {zone.id}")
    return zone


@router.get("/elders/{elder_id}/zones")
async def list_zones(
    elder_id: int, redis: RedisDep, caller: CallerDep, log: AccessLogDep, crs: CrsName = "wgs84"
) -> Page[ZoneRead]:
    """``?crs=gcj02`` (AMap, Tencent) or ``bd09`` (Baidu) converts coordinates for display."""
    zones = await service.list_zones(redis, caller=caller, elder_id=elder_id, system=crs)
    await log.record(elder_id=elder_id, action="zones.read")
    return zones


@router.get("/elders/{elder_id}/zones/{zone_id}")
async def get_zone(
    elder_id: int, zone_id: str, redis: RedisDep, caller: CallerDep, crs: CrsName = "wgs84"
) -> ZoneRead:
    return await service.get_zone(
        redis, caller=caller, elder_id=elder_id, zone_id=zone_id, system=crs
    )


@router.delete("/elders/{elder_id}/zones/{zone_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_zone(
    elder_id: int, zone_id: str, redis: RedisDep, caller: CallerDep, log: AccessLogDep
) -> Response:
    await service.delete_zone(redis, caller=caller, elder_id=elder_id, zone_id=zone_id)
    await log.record(elder_id=elder_id, action="zone.delete", detail=f"zone {zone_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/elders/{elder_id}/pause", tags=["pause"])
async def set_pause(
    elder_id: int,
    body: PauseBody,
    redis: RedisDep,
    caller: CallerDep,
    clock: ClockDep,
    log: AccessLogDep,
) -> PauseRead:
    """ "He is with me": zone state is kept, but no zone alarm until ``until``."""
    pause = await service.set_pause(redis, caller=caller, elder_id=elder_id, body=body, clock=clock)
    await log.record(elder_id=elder_id, action="pause.set", detail=f"until {pause.until}")
    return pause


@router.get("/elders/{elder_id}/pause", tags=["pause"])
async def get_pause(
    elder_id: int, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> PauseRead:
    return await service.get_pause(redis, caller=caller, elder_id=elder_id, clock=clock)


@router.delete("/elders/{elder_id}/pause", status_code=status.HTTP_204_NO_CONTENT, tags=["pause"])
async def end_pause(
    elder_id: int, redis: RedisDep, caller: CallerDep, log: AccessLogDep
) -> Response:
    await service.end_pause(redis, caller=caller, elder_id=elder_id)
    await log.record(elder_id=elder_id, action="pause.end")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/elders/{elder_id}/transitions", tags=["zones"])
async def list_transitions(
    elder_id: int,
    redis: RedisDep,
    caller: CallerDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[TransitionRead]:
    return await service.transitions(
        redis, caller=caller, elder_id=elder_id, cursor=cursor, limit=limit
    )
