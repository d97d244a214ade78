"""HTTP routes of /api/v1/elders (DELETE lives in the shell: it spans domains)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from devices.elders import service
from devices.elders.schemas import ElderCreate, ElderRead, ElderUpdate
from locator.core.deps import CallerDep, ClockDep, RedisDep
from locator.core.schemas import Page

router = APIRouter(prefix="/elders", tags=["elders"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_elder(
    body: ElderCreate, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> ElderRead:
    return await service.create(redis, caller=caller, body=body, clock=clock)


@router.get("")
async def list_elders(
    redis: RedisDep,
    caller: CallerDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[ElderRead]:
    return await service.list_page(redis, caller=caller, cursor=cursor, limit=limit)


@router.get("/{elder_id}")
async def get_elder(elder_id: int, redis: RedisDep, caller: CallerDep) -> ElderRead:
    return await service.get(redis, caller=caller, elder_id=elder_id)


@router.patch("/{elder_id}")
async def update_elder(
    elder_id: int, body: ElderUpdate, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> ElderRead:
    return await service.update(redis, caller=caller, elder_id=elder_id, body=body, clock=clock)
