"""``GET notifications``: every attempt, its channel, status and error (the outbox log)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import redis
from fastapi import APIRouter, Query
from pydantic import Field, field_validator

from alerts import keys, links
from alerts.incidents import reads, storage
from alerts.incidents.schemas import NotificationRead
from alerts.notify import webpush
from alerts.notify.attempts import Attempt, parse_attempt
from devices.elders.service import guardian_elders
from locator.core.auth import Principal, Role
from locator.core.clock import isoformat
from locator.core.deps import CallerDep, ClockDep, SyncRedisDep
from locator.core.errors import Forbidden, NotFound
from locator.core.schemas import Page, Strict

router = APIRouter(tags=["notifications"])
SCAN_LIMIT = 2000


def _iso(value: str | None) -> str | None:
    return isoformat(datetime.fromtimestamp(float(value), tz=UTC)) if value else None


def _read(attempt: str, doc: Attempt) -> NotificationRead:
    return NotificationRead(
        id=attempt,
        incident_id=doc.incident_id,
        elder_id=doc.elder_id,
        step=doc.step,
        recipient=doc.recipient,
        channel=doc.channel,
        template=doc.template,
        # Texts stored before links were kept out of them still carry one: never show it.
        text=links.redact(doc.text, doc.locale),
        status=doc.status,
        error=doc.error,
        tries=doc.tries,
        created_at=_iso(doc.created) or "",
        sent_at=_iso(doc.sent_at),
        fallback_of=doc.fallback_of or None,
    )


def attempts_about(client: redis.Redis, *, elder_id: int) -> list[NotificationRead]:
    """Every notification attempt about one elder, oldest first (her export authorises)."""
    # Attempt ids start with her id (outbox.attempt_id); an export is rare, so a ZSCAN of
    # the attempts index is cheaper than keeping a per-elder index on every send.
    found = {str(a): score for a, score in client.zscan_iter(keys.ATTEMPTS, match=f"{elder_id}.*")}
    ids = sorted(found, key=lambda a: found[a])
    pipe = client.pipeline(transaction=False)
    for attempt in ids:
        pipe.hgetall(keys.attempt(attempt))
    docs = pipe.execute() if ids else []
    typed = [(a, parse_attempt(d)) for a, d in zip(ids, docs, strict=True)]
    return [_read(a, d) for a, d in typed if d is not None]


@router.get("/notifications")
def list_notifications(
    redis: SyncRedisDep,
    caller: CallerDep,
    incident_id: int | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[NotificationRead]:
    """Attempts, oldest first within an incident, newest first across all (staff, family)."""
    if caller.role is Role.VOLUNTEER:
        raise Forbidden("volunteers do not read the notifications log")
    if incident_id is not None:
        snap = storage.load(redis, incident_id)
        reads.authorize(redis, caller=caller, snap=snap)
        ids = [
            str(a) for a in redis.zrange(keys.incident_attempts(snap.elder_id, incident_id), 0, -1)
        ]
        own: set[int] | None = None
    else:
        ids = [str(a) for a in redis.zrevrange(keys.ATTEMPTS, 0, SCAN_LIMIT - 1)]
        own = None
        if not caller.is_staff:
            own = set(guardian_elders(redis, owner=caller.subject or ""))
    start = int(cursor) if cursor and cursor.isdigit() else 0
    pipe = redis.pipeline(transaction=False)
    for attempt in ids:
        pipe.hgetall(keys.attempt(attempt))
    docs = pipe.execute() if ids else []
    typed = [(a, parse_attempt(d)) for a, d in zip(ids, docs, strict=True)]
    rows = [_read(a, d) for a, d in typed if d is not None and (own is None or d.elder_id in own)]
    page = rows[start : start + limit]
    more = start + limit < len(rows)
    return Page[NotificationRead](items=page, next=str(start + limit) if more else None)


@router.get("/elders/{elder_id}/notices", tags=["elders"])
def list_notices(elder_id: int, redis: SyncRedisDep, caller: CallerDep) -> dict[str, object]:
    """Family-first notices (low battery, offline at home, removed at home), newest first."""
    from devices.elders.service import authorize_sync

    if caller.role is Role.VOLUNTEER:
        raise Forbidden("notices are for the family and dispatch")
    authorize_sync(redis, caller=caller, elder_id=elder_id, write=False)
    raws = redis.lrange(keys.elder_notices(elder_id), 0, 199)
    return {"items": [json.loads(r) for r in raws], "next": None}


class PushKeys(Strict):
    p256dh: str = Field(min_length=16, max_length=200)
    auth: str = Field(min_length=8, max_length=100)


class PushSubscription(Strict):
    """What the browser's ``PushManager.subscribe()`` returns (its JSON form)."""

    endpoint: str = Field(max_length=2000)
    keys: PushKeys
    expirationTime: float | None = None  # noqa: N815 (the browser's field name)

    @field_validator("endpoint")
    @classmethod
    def _public_https(cls, value: str) -> str:
        # The server posts to this URL: never to itself or anything on its own network.
        return webpush.check_endpoint(value)


def _self_or_staff(caller: Principal, volunteer_id: int) -> None:
    if not (caller.is_staff or caller.volunteer_id() == volunteer_id):
        raise Forbidden(f"not allowed to change volunteer {volunteer_id}'s subscriptions")


@router.post("/volunteers/{volunteer_id}/push-subscriptions", status_code=201, tags=["volunteers"])
def add_push_subscription(
    volunteer_id: int,
    body: PushSubscription,
    redis: SyncRedisDep,
    caller: CallerDep,
    clock: ClockDep,
) -> dict[str, str | None]:
    """Web push opt-in from the volunteer page (best effort beside SMS and voice).

    At most five per volunteer: a sixth browser replaces the one subscribed longest ago.
    """
    _self_or_staff(caller, volunteer_id)
    if not redis.exists(keys.volunteer(volunteer_id)):
        raise NotFound(f"volunteer {volunteer_id} not found")
    replaced = webpush.subscribe(
        redis,
        volunteer_id=volunteer_id,
        subscription=body.model_dump(mode="json"),
        now=clock.time(),
    )
    return {"endpoint": body.endpoint, "replaced": replaced}


@router.delete(
    "/volunteers/{volunteer_id}/push-subscriptions", status_code=204, tags=["volunteers"]
)
def remove_push_subscription(
    volunteer_id: int, endpoint: str, redis: SyncRedisDep, caller: CallerDep
) -> None:
    _self_or_staff(caller, volunteer_id)
    webpush.unsubscribe(redis, volunteer_id=volunteer_id, endpoint=endpoint)
