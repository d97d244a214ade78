"""HTTP routes for incidents: the manual report, reads, responders' answers, closing.

Plain ``def`` routes: FastAPI runs them in its worker threads, where the synchronous
alerts services (shared with the alerts worker and the ticker) do their Redis work.
"""

from __future__ import annotations

import secrets
from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, status
from fastapi.responses import HTMLResponse, JSONResponse, Response

from alerts import handoff, reports
from alerts.incidents import (
    access,
    drill_runs,
    last_seen,
    reads,
    reporting,
    service,
    sightings,
    storage,
)
from alerts.incidents.config import AlertsConfig, config_from
from alerts.incidents.schemas import (
    CancelBody,
    DrillScheduled,
    FoundBody,
    IncidentRead,
    MissingReport,
    ResolveBody,
    SightingBody,
)
from devices.elders.access_log import AccessLogDep
from devices.elders.records import elder_from_doc
from devices.elders.service import authorize_sync, read_elder
from devices.telemetry import archive, tracks
from devices.telemetry.readers import read_position
from locator.core.auth import Role
from locator.core.clock import parse_iso
from locator.core.deps import CallerDep, ContextDep, SyncRedisDep
from locator.core.errors import Forbidden, NotFound, Unprocessable
from locator.core.schemas import Page

router = APIRouter(tags=["incidents"])
Limit = Annotated[int, Query(ge=1, le=200)]


def config(ctx: ContextDep) -> AlertsConfig:
    return config_from(ctx.settings, clock=ctx.clock, mqtt_url=ctx.mqtt_url)


@router.post("/incidents", status_code=status.HTTP_201_CREATED)
def report_missing(
    body: MissingReport, redis: SyncRedisDep, caller: CallerDep, ctx: ContextDep
) -> IncidentRead:
    """A guardian or dispatcher reports the elder missing: opens (or joins) the incident.

    Staff's ``"drill": true`` starts a drill instead (now: 201; at ``start_at``: 202)."""
    if body.drill:
        return _drill(body, redis, caller, ctx)  # type: ignore[return-value]
    if caller.role not in (Role.ADMIN, Role.DISPATCHER, Role.GUARDIAN):
        raise Forbidden("only a guardian or a dispatcher reports an elder missing")
    reporting.count_report(
        redis, caller=caller, now=ctx.clock.time(), report_id=secrets.token_hex(8)
    )
    elder = authorize_sync(redis, caller=caller, elder_id=body.elder_id, write=True)
    cfg = config(ctx)
    seen_time = None
    if body.last_seen_time is not None:
        seen_time = last_seen.check_time(
            sightings.to_epoch(body.last_seen_time, cfg),
            now=ctx.clock.time(),
            field="last_seen_time",
        )
    at = None
    if body.last_seen_at is not None:
        point = body.last_seen_at.to_wgs84(body.crs)
        reporting.check_place(
            elder_from_doc(elder, body.elder_id).home, lat=point.lat, lon=point.lon
        )
        at = (point.lat, point.lon)
    incident_id, _ = service.open_or_join(
        redis,
        cfg,
        elder_id=body.elder_id,
        trigger="missing",
        at=at,
        actor=service.actor_of(caller),
        channel="api",
        note=body.note,
        seen_time=seen_time,
    )
    return reads.read(redis, storage.load(redis, incident_id), caller=caller)


def _drill(
    body: MissingReport, redis: SyncRedisDep, caller: CallerDep, ctx: ContextDep
) -> IncidentRead | JSONResponse:
    if not caller.is_staff:
        raise Forbidden("only a dispatcher starts a drill")
    elder = authorize_sync(redis, caller=caller, elder_id=body.elder_id, write=True)
    at = None
    if body.last_seen_at is not None:
        point = body.last_seen_at.to_wgs84(body.crs)
        reporting.check_place(
            elder_from_doc(elder, body.elder_id).home, lat=point.lat, lon=point.lon
        )
        at = (point.lat, point.lon)
    started = drill_runs.start(
        redis,
        config(ctx),
        caller=caller,
        elder_id=body.elder_id,
        note=body.note,
        announced=body.announced,
        start_at=body.start_at.timestamp() if body.start_at else None,
        at=at,
    )
    if isinstance(started, DrillScheduled):
        return JSONResponse(started.model_dump(), status_code=status.HTTP_202_ACCEPTED)
    return reads.read(redis, storage.load(redis, started), caller=caller)


@router.get("/incidents")
def list_incidents(
    redis: SyncRedisDep,
    caller: CallerDep,
    status: Annotated[
        str,
        Query(
            pattern="^(open|closed|all)$",
            description="open (the default: still running), closed, or all for the history",
        ),
    ] = "open",
    cursor: str | None = None,
    limit: Limit = 50,
    elder_id: Annotated[int | None, Query(gt=0)] = None,
    drill: Annotated[bool | None, Query(description="true: drills only; false: real only")] = None,
) -> Page[IncidentRead]:
    """Incidents the caller may see, newest first: by default only the open ones
    (``?status=all`` for the history, ``closed`` for the finished); ``elder_id`` keeps one
    elder's."""
    ids, next_cursor = reads.list_ids(
        redis,
        caller=caller,
        status=status,
        cursor=cursor,
        limit=limit,
        elder_id=elder_id,
        drill=drill,
    )
    items = [reads.read(redis, storage.load(redis, i), caller=caller) for i in ids]
    return Page[IncidentRead](items=items, next=next_cursor)


@router.get("/incidents/{incident_id}")
def get_incident(
    incident_id: int, redis: SyncRedisDep, caller: CallerDep, log: AccessLogDep
) -> IncidentRead:
    snap = storage.load(redis, incident_id)
    reads.authorize(redis, caller=caller, snap=snap)
    incident = reads.read(redis, snap, caller=caller)
    detail = f"incident {incident_id}"
    log.record_sync(elder_id=snap.elder_id, action="incident.read", detail=detail)
    return incident


def _answer(action: str):  # type: ignore[no-untyped-def]
    def route(
        incident_id: int, redis: SyncRedisDep, caller: CallerDep, ctx: ContextDep
    ) -> IncidentRead:
        snap = service.answer(
            redis, config(ctx), caller=caller, incident_id=incident_id, action=action
        )
        return reads.read(redis, snap, caller=caller)

    route.__name__ = f"{action}_incident"
    route.__doc__ = f"A volunteer who was alerted: {action}."
    return route


for _action in ("ack", "decline", "withdraw", "arrive"):
    router.post(f"/incidents/{{incident_id}}/{_action}")(_answer(_action))


@router.get("/incidents/{incident_id}/search-area")
def search_area(
    incident_id: int, redis: SyncRedisDep, caller: CallerDep, ctx: ContextDep, log: AccessLogDep
) -> dict[str, Any]:
    """GeoJSON: the live fix while the bracelet reports, else probability rings (Grampian)."""
    snap = storage.load(redis, incident_id)
    reads.authorize(redis, caller=caller, snap=snap)
    access.require_running(caller, status=snap.status, incident_id=incident_id)
    area = reads.search_area(redis, config(ctx), snap=snap)
    detail = f"incident {incident_id}"
    log.record_sync(elder_id=snap.elder_id, action="search_area.read", detail=detail)
    return area


@router.post("/incidents/{incident_id}/sighting")
def sighting(
    incident_id: int,
    body: SightingBody,
    redis: SyncRedisDep,
    caller: CallerDep,
    ctx: ContextDep,
) -> IncidentRead:
    """Dispatch: she was seen there at that time; re-centres the area, pages nearby once."""
    cfg = config(ctx)
    point = body.at.to_wgs84(body.crs)
    snap = sightings.record(
        redis,
        cfg,
        caller=caller,
        incident_id=incident_id,
        lat=point.lat,
        lon=point.lon,
        seen_time=sightings.to_epoch(body.time, cfg),
        note=body.note,
    )
    return reads.read(redis, snap, caller=caller)


@router.post("/incidents/{incident_id}/notify-more")
def notify_more(
    incident_id: int,
    redis: SyncRedisDep,
    caller: CallerDep,
    ctx: ContextDep,
    count: Annotated[int, Query(ge=1, le=20)] = 3,
) -> IncidentRead:
    """Dispatch pages the next ``count`` nearest on-duty volunteers now."""
    snap = service.dispatcher_pages(
        redis, config(ctx), caller=caller, incident_id=incident_id, more=count, team=False
    )
    return reads.read(redis, snap, caller=caller)


@router.post("/incidents/{incident_id}/call-team")
def call_team(
    incident_id: int, redis: SyncRedisDep, caller: CallerDep, ctx: ContextDep
) -> IncidentRead:
    """Dispatch calls the on-duty rescue team (and the on-call roster) before the deadline."""
    snap = service.dispatcher_pages(
        redis, config(ctx), caller=caller, incident_id=incident_id, more=0, team=True
    )
    return reads.read(redis, snap, caller=caller)


@router.post("/incidents/{incident_id}/found")
def found(
    incident_id: int,
    redis: SyncRedisDep,
    caller: CallerDep,
    ctx: ContextDep,
    body: FoundBody | None = None,
) -> IncidentRead:
    """An accepted volunteer found the elder: resolves the incident with the outcome."""
    body = body or FoundBody()
    snap = service.answer(
        redis,
        config(ctx),
        caller=caller,
        incident_id=incident_id,
        action="found",
        outcome=body.outcome,
        note=body.note,
    )
    return reads.read(redis, snap, caller=caller)


@router.post("/incidents/{incident_id}/resolve")
def resolve(
    incident_id: int, body: ResolveBody, redis: SyncRedisDep, caller: CallerDep, ctx: ContextDep
) -> IncidentRead:
    """Close with an outcome (dispatcher, admin, or the elder's guardian)."""
    snap = service.close(
        redis,
        config(ctx),
        caller=caller,
        incident_id=incident_id,
        status="resolved",
        outcome=body.outcome,
        note=body.note,
    )
    return reads.read(redis, snap, caller=caller)


@router.post("/incidents/{incident_id}/cancel")
def cancel(
    incident_id: int,
    redis: SyncRedisDep,
    caller: CallerDep,
    ctx: ContextDep,
    body: CancelBody | None = None,
) -> IncidentRead:
    """A dispatcher cancels (raised in error); everyone paged stands down."""
    snap = service.close(
        redis,
        config(ctx),
        caller=caller,
        incident_id=incident_id,
        status="cancelled",
        outcome=None,
        note=(body or CancelBody()).note,
    )
    return reads.read(redis, snap, caller=caller)


def _moment(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return parse_iso(value).timestamp()
    except ValueError:
        raise Unprocessable(
            [name], "must be an ISO-8601 time, e.g. 2026-11-01T00:00:00Z", where="query"
        ) from None


@router.get("/reports/sla", tags=["reports"], response_model=None)
def sla_report(
    redis: SyncRedisDep,
    caller: CallerDep,
    ctx: ContextDep,
    since: Annotated[str | None, Query(alias="from")] = None,
    until: Annotated[str | None, Query(alias="to")] = None,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
    drill: Annotated[bool, Query(description="true: drills only; false (default): real")] = False,
) -> dict[str, Any] | Response:
    """Per incident (t0 in [from, to)): notified, accepted, on site, resolved, breaches; and
    p50/p90 and compliance overall, by trigger, by team and by volunteer."""
    if caller.role is Role.VOLUNTEER:
        raise Forbidden("reports are for dispatch and families")
    report = reports.sla_report(
        redis,
        caller=caller,
        since=_moment(since, "from"),
        until=_moment(until, "to"),
        now=ctx.clock.time(),
        drill=drill,
    )
    if format == "csv":
        return Response(
            reports.to_csv(report["rows"]),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": "attachment; filename=sla.csv"},
        )
    return report


@router.get("/incidents/{incident_id}/handoff", response_class=HTMLResponse)
def handoff_pack(
    incident_id: int, redis: SyncRedisDep, caller: CallerDep, ctx: ContextDep, log: AccessLogDep
) -> HTMLResponse:
    """The printable police hand-off page (dispatch and the elder's family)."""
    if caller.role is Role.VOLUNTEER:
        raise Forbidden("the hand-off pack is for dispatch and the family")
    snap = storage.load(redis, incident_id)
    reads.authorize(redis, caller=caller, snap=snap)
    incident = reads.read(redis, snap, caller=caller)
    elder = read_elder(redis, elder_id=snap.elder_id)
    position = read_position(redis, elder_id=snap.elder_id)
    now = ctx.clock.time()
    fixes = anyio.from_thread.run(
        partial(
            tracks.read_track,
            ctx.redis,
            archive=archive.for_settings(ctx.settings),
            elder_id=snap.elder_id,
            since=now - handoff.TRACK_HOURS * 3600,
            until=now,
            now=now,
        )
    )
    track = [
        {"tst": f.tst, "lat": f.lat, "lon": f.lon, "acc": f.acc or 0.0}
        for f in fixes
        if "low_quality" not in f.flags
    ]
    try:
        area = reads.search_area(redis, config(ctx), snap=snap)
    except NotFound:
        area = {"type": "FeatureCollection", "features": []}
    page = handoff.render(
        incident=incident.model_dump(),
        elder=elder,
        position=position,
        track=track,
        area=area,
        tz=ctx.settings.zone,
    )
    detail = f"incident {incident_id}"
    log.record_sync(elder_id=snap.elder_id, action="handoff.read", detail=detail)
    return HTMLResponse(page)
