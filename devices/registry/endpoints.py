"""HTTP routes of /api/v1/devices."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from devices.elders import service as elders
from devices.elders.access_log import AccessLogDep
from devices.registry import commands, owntracks, service, stock
from devices.registry.schemas import DeviceCreate, DeviceRead, OwnTracksSetup
from locator.core.deps import CallerDep, ClockDep, ContextDep, RedisDep
from locator.core.errors import Unprocessable
from locator.core.mqtt import address
from locator.core.schemas import Page

router = APIRouter(prefix="/devices", tags=["devices"])


def _local(host: str) -> bool:
    """A broker address only this machine can use (loopback or "any interface")."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


@router.post("", status_code=status.HTTP_201_CREATED)
async def register_device(
    body: DeviceCreate, redis: RedisDep, caller: CallerDep, clock: ClockDep, log: AccessLogDep
) -> DeviceRead:
    device = await service.register(redis, caller=caller, body=body, clock=clock)
    detail = f"device {body.device_id}"
    await log.record(elder_id=body.elder_id, action="device.bind", detail=detail)
    return device


@router.get("")
async def list_devices(
    redis: RedisDep,
    caller: CallerDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[DeviceRead]:
    return await service.list_page(redis, caller=caller, cursor=cursor, limit=limit)


@router.post("/stock", status_code=status.HTTP_201_CREATED)
async def stock_device(
    body: stock.StockCreate, redis: RedisDep, caller: CallerDep, clock: ClockDep
) -> stock.StockCreated:
    """Put a bracelet in stock (staff); the answer's claim code is shown once: print it."""
    return await stock.add(redis, caller=caller, body=body, clock=clock)


@router.get("/stock")
async def list_stock(
    redis: RedisDep,
    caller: CallerDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[stock.StockRead]:
    """Bracelets in stock and not bound (staff), without their codes."""
    return await stock.list_page(redis, caller=caller, cursor=cursor, limit=limit)


@router.get("/{device_id}")
async def get_device(device_id: str, redis: RedisDep, caller: CallerDep) -> DeviceRead:
    return await service.get(redis, caller=caller, device_id=device_id)


@router.get("/{device_id}/owntracks")
async def owntracks_setup(
    device_id: str, request: Request, ctx: ContextDep, caller: CallerDep
) -> OwnTracksSetup:
    """The OwnTracks app's settings for this phone: the document, its import URL, a QR code."""
    device = await service.get(ctx.redis, caller=caller, device_id=device_id)
    # The phone's setup is the family's and staff's business, not a volunteer's.
    await elders.authorize(ctx.redis, caller=caller, elder_id=device.elder_id, write=True)
    if device.protocol != "owntracks" or not device.external_id:
        raise Unprocessable(["device_id"], "not an OwnTracks device", where="path")
    broker = ctx.settings.mqtt_public_url or ctx.mqtt_url or "mqtt://127.0.0.1:1883"
    host, port = address(broker)
    if _local(host):
        host = request.url.hostname or host  # a phone reaches the broker where it reached us
    tls = broker.startswith("mqtts")
    secret = ctx.settings.mqtt_device_secret
    password = owntracks.phone_password(
        secret=secret.get_secret_value() if secret else None, external_id=device.external_id
    )
    config = owntracks.app_config(
        host=host, port=port, tls=tls, external_id=device.external_id, password=password
    )
    url = owntracks.config_url(config)
    return OwnTracksSetup(config=config, url=url, qr=owntracks.qr_data_uri(url))


@router.delete("/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_device(
    device_id: str, redis: RedisDep, caller: CallerDep, log: AccessLogDep
) -> Response:
    elder_id = await service.delete(redis, caller=caller, device_id=device_id)
    await log.record(elder_id=elder_id, action="device.unbind", detail=f"device {device_id}")
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
