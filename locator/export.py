"""``GET elders/{id}/export``: everything held about her as one JSON document (PIPL Art. 45).

A flow over every domain (record, device, zones, positions, events, incidents, notices,
message texts, access log), so it lives in the shell; each part comes from the reader of the
domain that owns it. Her guardian or an admin may export; the export is itself logged.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import anyio
import redis
from fastapi import APIRouter
from fastapi.responses import Response

from alerts.incidents import reads, storage
from alerts.notify import endpoints as notify
from devices.elders import access_log
from devices.elders import service as elders
from devices.elders.access_log import AccessLogDep
from devices.registry import service as registry
from devices.telemetry import archive
from devices.telemetry import service as telemetry
from geofences.zones import service as zones
from locator.core.auth import Principal, Role
from locator.core.clock import isoformat
from locator.core.deps import AppContext, CallerDep, ContextDep
from locator.core.errors import Forbidden, NotFound
from locator.core.schemas import Page

router = APIRouter(tags=["elders"])


async def _all_pages(read: Any) -> list[Any]:
    """Every item of a cursor-paged reader (``read(cursor)`` → Page)."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page: Page[Any] = await read(cursor)
        items += page.items
        if page.next is None:
            return items
        cursor = page.next


def _incidents(client: redis.Redis, *, caller: Principal, elder_id: int) -> list[Any]:
    ids: list[int] = []
    cursor: str | None = None
    while True:
        page, cursor = reads.list_ids(
            client, caller=caller, status="all", cursor=cursor, limit=200, elder_id=elder_id
        )
        ids += page
        if cursor is None:
            break
    return [
        reads.read(client, storage.load(client, i), caller=caller).model_dump(mode="json")
        for i in ids
    ]


def _alerts_part(client: redis.Redis, *, caller: Principal, elder_id: int) -> dict[str, Any]:
    """Her incidents with timelines, notices and the texts sent about her (alerts readers)."""
    return {
        "incidents": _incidents(client, caller=caller, elder_id=elder_id),
        "notices": notify.list_notices(elder_id, client, caller)["items"],
        "messages": [
            m.model_dump(mode="json") for m in notify.attempts_about(client, elder_id=elder_id)
        ],
    }


async def export_elder(
    ctx: AppContext, *, caller: Principal, elder_id: int, log: access_log.AccessLogger
) -> dict[str, Any]:
    """Everything held about one elder (her guardian, an admin); the export is logged."""
    if caller.role not in (Role.ADMIN, Role.GUARDIAN):
        raise Forbidden("her data is exported by her family or an administrator")
    rds, clock, sync = ctx.redis, ctx.clock, ctx.sync_redis
    assert sync is not None, "the app's lifespan sets it"
    await elders.authorize(rds, caller=caller, elder_id=elder_id, write=True)
    record = await elders.get(rds, caller=caller, elder_id=elder_id)
    device = None
    if record.device_id:
        device = await registry.get(rds, caller=caller, device_id=record.device_id)
    try:
        position: Any = await telemetry.position(rds, caller=caller, elder_id=elder_id, clock=clock)
    except NotFound:
        position = None
    try:
        pause: Any = await zones.get_pause(rds, caller=caller, elder_id=elder_id, clock=clock)
    except NotFound:
        pause = None
    until = clock.now()
    track = await telemetry.track(
        rds,
        caller=caller,
        elder_id=elder_id,
        since=until - timedelta(seconds=ctx.settings.track_retention_s),
        until=until,
        clock=clock,
        archive=archive.for_settings(ctx.settings),
    )
    events = await _all_pages(
        lambda c: telemetry.device_events(
            rds, caller=caller, elder_id=elder_id, cursor=c, limit=200
        )
    )
    transitions = await _all_pages(
        lambda c: zones.transitions(rds, caller=caller, elder_id=elder_id, cursor=c, limit=200)
    )
    zone_page = await zones.list_zones(rds, caller=caller, elder_id=elder_id, system="wgs84")
    alerts = await anyio.to_thread.run_sync(
        lambda: _alerts_part(sync, caller=caller, elder_id=elder_id)
    )
    # Logged before the log is read: the copy she gets shows this export too.
    await log.record(elder_id=elder_id, action="export")
    dump = _dump
    return {
        "exported_at": isoformat(clock.now()),
        "elder_id": elder_id,
        "record": dump(record),
        "guardians": dump(record)["guardians"],
        "device": dump(device),
        "zones": [dump(z) for z in zone_page.items],
        "pause": dump(pause),
        "position": dump(position),
        "track": dump(track),
        "events": [dump(e) for e in events],
        "transitions": [dump(t) for t in transitions],
        **alerts,
        "access_log": [dump(e) for e in await access_log.entries(rds, elder_id=elder_id)],
    }


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


@router.get("/elders/{elder_id}/export")
async def export(elder_id: int, ctx: ContextDep, caller: CallerDep, log: AccessLogDep) -> Response:
    """Everything held about her as one JSON file (her guardian, an admin)."""
    document = await export_elder(ctx, caller=caller, elder_id=elder_id, log=log)
    return Response(
        json.dumps(document, ensure_ascii=False, indent=1),
        media_type="application/json; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="homeward-elder-{elder_id}.json"',
            "Cache-Control": "no-store",
        },
    )
