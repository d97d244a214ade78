"""HTTP routes for volunteers, teams, elder pairs and dispatchers."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Query, status

from alerts.incidents import service as incidents
from alerts.incidents.config import config_from
from alerts.responders import service
from alerts.responders.schemas import (
    DispatcherCreate,
    DispatcherRead,
    DispatcherUpdate,
    LocationReport,
    PairBody,
    PairRead,
    SharedLocation,
    TeamCreate,
    TeamRead,
    TeamUpdate,
    VolunteerCreate,
    VolunteerRead,
    VolunteerUpdate,
)
from devices.elders.access_log import AccessLogDep
from locator.core.deps import CallerDep, ClockDep, ContextDep, RedisDep, SyncRedisDep
from locator.core.schemas import Page

router = APIRouter()
Limit = Annotated[int, Query(ge=1, le=200)]


@router.post("/volunteers", status_code=status.HTTP_201_CREATED, tags=["volunteers"])
async def create_volunteer(
    body: VolunteerCreate, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> VolunteerRead:
    return await service.create_volunteer(redis, caller=caller, body=body, clock=clock)


@router.get("/volunteers", tags=["volunteers"])
async def list_volunteers(
    redis: RedisDep, caller: CallerDep, cursor: str | None = None, limit: Limit = 50
) -> Page[VolunteerRead]:
    return await service.list_volunteers(redis, caller=caller, cursor=cursor, limit=limit)


@router.get("/volunteers/{volunteer_id}", tags=["volunteers"])
async def get_volunteer(volunteer_id: int, redis: RedisDep, caller: CallerDep) -> VolunteerRead:
    return await service.get_volunteer(redis, caller=caller, volunteer_id=volunteer_id)


@router.patch("/volunteers/{volunteer_id}", tags=["volunteers"])
async def update_volunteer(
    volunteer_id: int, body: VolunteerUpdate, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> VolunteerRead:
    return await service.update_volunteer(
        redis, caller=caller, volunteer_id=volunteer_id, body=body, clock=clock
    )


@router.post("/volunteers/{volunteer_id}/location", tags=["volunteers"])
async def share_location(
    volunteer_id: int,
    body: LocationReport,
    redis: RedisDep,
    caller: CallerDep,
    clock: ClockDep,
    ctx: ContextDep,
    sync_redis: SyncRedisDep,
) -> SharedLocation:
    """Share where a volunteer is: feeds nearest-volunteer dispatch and automatic on-site."""
    shared = await service.share_location(
        redis, caller=caller, volunteer_id=volunteer_id, body=body, clock=clock
    )
    cfg = config_from(ctx.settings, clock=ctx.clock, mqtt_url=ctx.mqtt_url)
    await anyio.to_thread.run_sync(
        lambda: incidents.volunteer_moved(
            sync_redis,
            cfg,
            volunteer_id=volunteer_id,
            lat=shared.lat,
            lon=shared.lon,
            acc=shared.acc,
        )
    )
    return shared


@router.put("/elders/{elder_id}/pair", tags=["pairs"])
async def set_pair(
    elder_id: int, body: PairBody, redis: RedisDep, caller: CallerDep, log: AccessLogDep
) -> PairRead:
    pair = await service.set_pair(redis, caller=caller, elder_id=elder_id, body=body)
    detail = "volunteers " + ",".join(str(v) for v in body.volunteer_ids)
    await log.record(elder_id=elder_id, action="pair.set", detail=detail)
    return pair


@router.get("/elders/{elder_id}/pair", tags=["pairs"])
async def get_pair(elder_id: int, redis: RedisDep, caller: CallerDep) -> PairRead:
    return await service.get_pair(redis, caller=caller, elder_id=elder_id)


@router.post("/teams", status_code=status.HTTP_201_CREATED, tags=["teams"])
async def create_team(
    body: TeamCreate, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> TeamRead:
    return await service.create_team(redis, caller=caller, body=body, clock=clock)


@router.get("/teams", tags=["teams"])
async def list_teams(
    redis: RedisDep, caller: CallerDep, cursor: str | None = None, limit: Limit = 50
) -> Page[TeamRead]:
    return await service.list_teams(redis, caller=caller, cursor=cursor, limit=limit)


@router.get("/teams/{team_id}", tags=["teams"])
async def get_team(team_id: int, redis: RedisDep, caller: CallerDep) -> TeamRead:
    return await service.get_team(redis, caller=caller, team_id=team_id)


@router.patch("/teams/{team_id}", tags=["teams"])
async def update_team(
    team_id: int, body: TeamUpdate, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> TeamRead:
    return await service.update_team(redis, caller=caller, team_id=team_id, body=body, clock=clock)


@router.post("/dispatchers", status_code=status.HTTP_201_CREATED, tags=["dispatchers"])
async def create_dispatcher(
    body: DispatcherCreate, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> DispatcherRead:
    return await service.create_dispatcher(redis, caller=caller, body=body, clock=clock)


@router.get("/dispatchers", tags=["dispatchers"])
async def list_dispatchers(
    redis: RedisDep, caller: CallerDep, cursor: str | None = None, limit: Limit = 50
) -> Page[DispatcherRead]:
    return await service.list_dispatchers(redis, caller=caller, cursor=cursor, limit=limit)


@router.patch("/dispatchers/{dispatcher_id}", tags=["dispatchers"])
async def update_dispatcher(
    dispatcher_id: int, body: DispatcherUpdate, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> DispatcherRead:
    return await service.update_dispatcher(
        redis, caller=caller, dispatcher_id=dispatcher_id, body=body, clock=clock
    )
