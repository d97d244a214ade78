"""HTTP routes for incidents: the manual report, reads, responders' answers, closing.

Plain ``def`` routes: FastAPI runs them in its worker threads, where the synchronous
alerts services (shared with the alerts worker and the ticker) do their Redis work.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from alerts.incidents import service
from alerts.incidents.schemas import (
    CancelBody,
    FoundBody,
    IncidentRead,
    MissingReport,
    ResolveBody,
)
from alerts.incidents.service import AlertsConfig
from devices.elders.service import authorize_sync
from locator.core.auth import Role
from locator.core.deps import CallerDep, ContextDep, SyncRedisDep
from locator.core.errors import Forbidden
from locator.core.schemas import Page

router = APIRouter(tags=["incidents"])
Limit = Annotated[int, Query(ge=1, le=200)]


def config(ctx: ContextDep) -> AlertsConfig:
    return service.config_from(ctx.settings, clock=ctx.clock, mqtt_url=ctx.mqtt_url)


@router.post("/incidents", status_code=status.HTTP_201_CREATED)
def report_missing(
    body: MissingReport, redis: SyncRedisDep, caller: CallerDep, ctx: ContextDep
) -> IncidentRead:
    """A guardian or dispatcher reports the elder missing: opens (or joins) the incident."""
    if caller.role not in (Role.ADMIN, Role.DISPATCHER, Role.GUARDIAN):
        raise Forbidden("only a guardian or a dispatcher reports an elder missing")
    authorize_sync(redis, caller=caller, elder_id=body.elder_id, write=True)
    at = None
    if body.last_seen_at is not None:
        point = body.last_seen_at.to_wgs84(body.crs)
        at = (point.lat, point.lon)
    incident_id, _ = service.open_or_join(
        redis,
        config(ctx),
        elder_id=body.elder_id,
        trigger="missing",
        at=at,
        actor=service.actor_of(caller),
        channel="api",
        note=body.note,
    )
    return service.read(redis, service.load(redis, incident_id), caller=caller)


@router.get("/incidents")
def list_incidents(
    redis: SyncRedisDep,
    caller: CallerDep,
    status: Annotated[str, Query(pattern="^(open|closed|all)$")] = "open",
    cursor: str | None = None,
    limit: Limit = 50,
) -> Page[IncidentRead]:
    """Incidents the caller may see, newest first."""
    ids, next_cursor = service.list_ids(
        redis, caller=caller, status=status, cursor=cursor, limit=limit
    )
    items = [service.read(redis, service.load(redis, i), caller=caller) for i in ids]
    return Page[IncidentRead](items=items, next=next_cursor)


@router.get("/incidents/{incident_id}")
def get_incident(incident_id: int, redis: SyncRedisDep, caller: CallerDep) -> IncidentRead:
    snap = service.load(redis, incident_id)
    service.authorize(redis, caller=caller, snap=snap)
    return service.read(redis, snap, caller=caller)


def _answer(action: str):  # type: ignore[no-untyped-def]
    def route(
        incident_id: int, redis: SyncRedisDep, caller: CallerDep, ctx: ContextDep
    ) -> IncidentRead:
        snap = service.answer(
            redis, config(ctx), caller=caller, incident_id=incident_id, action=action
        )
        return service.read(redis, snap, caller=caller)

    route.__name__ = f"{action}_incident"
    route.__doc__ = f"A volunteer who was alerted: {action}."
    return route


for _action in ("ack", "decline", "withdraw", "arrive"):
    router.post(f"/incidents/{{incident_id}}/{_action}")(_answer(_action))


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
    return service.read(redis, snap, caller=caller)


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
    return service.read(redis, snap, caller=caller)


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
    return service.read(redis, snap, caller=caller)
