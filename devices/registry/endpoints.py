"""HTTP routes of /api/v1/devices."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from devices.registry import commands, service
from devices.registry.schemas import DeviceCreate, DeviceRead
from locator.core.deps import CallerDep, ClockDep, ContextDep, RedisDep
from locator.core.schemas import Page

router = APIRouter(prefix="/devices", tags=["devices"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def register_device(
    body: DeviceCreate, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> DeviceRead:
    return await service.register(redis, caller=caller, body=body, clock=clock)


@router.get("")
async def list_devices(
    redis: RedisDep,
    caller: CallerDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[DeviceRead]:
    return await service.list_page(redis, caller=caller, cursor=cursor, limit=limit)


@router.get("/{device_id}")
async def get_device(device_id: str, redis: RedisDep, caller: CallerDep) -> DeviceRead:
    return await service.get(redis, caller=caller, device_id=device_id)


@router.delete("/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_device(device_id: str, redis: RedisDep, caller: CallerDep) -> Response:
    await service.delete(redis, caller=caller, device_id=device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{device_id}/commands", status_code=status.HTTP_202_ACCEPTED)
async def send_command(
    device_id: str,
    body: commands.CommandBody,
    ctx: ContextDep,
    caller: CallerDep,
) -> commands.CommandSent:
    """reportLocation (any device) or setInterval (native bracelets) over MQTT."""
    return await commands.command(
        ctx.redis,
        caller=caller,
        device_id=device_id,
        body=body,
        publisher=ctx.publisher,
        clock=ctx.clock,
    )
