"""The live event feed: incident changes and notices as server-sent events.

The feed is a Redis stream written in the same commit as each change, so the SSE ``id`` is
the stream id and ``Last-Event-ID`` resumes exactly where a dropped connection stopped.
EventSource cannot send headers, hence the short-lived ``?ticket=`` minted with a token.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from alerts import keys
from alerts.incidents import access, drills
from alerts.incidents.schemas import TicketRead
from devices.elders.service import read_elder_async
from locator.core.auth import Principal, Role, resolve_token
from locator.core.deps import CallerDep, RedisDep, login_with
from locator.core.errors import Unauthorized
from locator.core.redis import stream_reply

router = APIRouter(tags=["stream"])

TICKET_TTL_S = 120
KEEPALIVE_S = 4.0  # below the client's 5 s socket timeout
_STREAM_ID = r"^\d+-\d+$"


def feed_stream() -> str:
    """The live feed's stream: the MQTT relay reads it, the watchdog adds the system state."""
    return keys.FEED


@router.post("/stream/ticket")
async def create_ticket(redis: RedisDep, caller: CallerDep) -> TicketRead:
    """A ticket for ``GET /stream?ticket=`` valid for two minutes (reconnects included)."""
    ticket = secrets.token_urlsafe(24)
    await redis.set(
        keys.stream_ticket(ticket),
        json.dumps({"role": caller.role.value, "subject": caller.subject}),
        ex=TICKET_TTL_S,
    )
    return TicketRead(ticket=ticket, expires_in=TICKET_TTL_S, url=f"/api/v1/stream?ticket={ticket}")


async def _principal(
    redis: aioredis.Redis, ticket: str | None, authorization: str | None, *, now: float
) -> Principal:
    if ticket:
        raw = await redis.get(keys.stream_ticket(ticket))
        if raw is None:
            raise Unauthorized("the stream ticket is unknown or expired: ask for a new one")
        data = json.loads(raw)
        return Principal(role=Role(data["role"]), subject=data["subject"])
    if authorization and authorization.lower().startswith("bearer "):
        return await resolve_token(redis, authorization.split(" ", 1)[1], now=now)
    raise Unauthorized("a stream needs ?ticket= (POST /api/v1/stream/ticket) or a bearer token")


class _Audience:
    """Who may see which event: staff all; a guardian own elders'; a volunteer their alerts."""

    def __init__(self, redis: aioredis.Redis, caller: Principal) -> None:
        self._redis = redis
        self._caller = caller
        self._owners: dict[str, str | None] = {}

    async def allows(self, fields: dict[str, str]) -> bool:
        if self._caller.is_staff:
            return True
        if self._caller.role is Role.GUARDIAN:
            elder = fields.get("elder_id", "")
            if elder not in self._owners:
                record = (
                    await read_elder_async(self._redis, elder_id=int(elder))
                    if elder.isdigit()
                    else None
                )
                self._owners[elder] = record.owner if record else None
            own = self._owners[elder] == self._caller.subject
            return own and drills.family_hears(fields.get("data"))  # unannounced: staff's
        incident = fields.get("incident_id", "")
        vid = self._caller.volunteer_id()
        if not incident or vid is None:
            return False
        if await self._redis.zscore(keys.volunteer_incidents(vid), incident) is None:
            return False
        running = await self._redis.zscore(keys.INCIDENTS_OPEN, incident) is not None
        return access.feed_event_allowed(incident_open=running, data=fields.get("data"))


def _event(entry_id: str, fields: dict[str, str]) -> str:
    data: dict[str, Any] = {
        "type": fields.get("type"),
        "incident_id": int(fields["incident_id"]) if fields.get("incident_id") else None,
        "elder_id": int(fields["elder_id"]) if fields.get("elder_id") else None,
        "version": int(fields["version"]) if fields.get("version") else None,
        **json.loads(fields.get("data") or "{}"),
    }
    body = json.dumps(data, ensure_ascii=False)
    return f"id: {entry_id}\nevent: {fields.get('type', 'message')}\ndata: {body}\n\n"


@router.get("/stream", response_class=StreamingResponse)
async def stream(
    request: Request,
    redis: RedisDep,
    ticket: str | None = None,
    last_event_id: Annotated[str | None, Header(pattern=_STREAM_ID)] = None,
    since: Annotated[str | None, Query(pattern=_STREAM_ID)] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events from now on, or after ``Last-Event-ID`` (or ``?since=``)."""
    # Tickets and tokens are guessed here as anywhere else: the failed-login limit applies.
    now = request.app.state.ctx.clock.time()
    caller = await login_with(
        redis, request, lambda: _principal(redis, ticket, authorization, now=now)
    )
    audience = _Audience(redis, caller)
    start = last_event_id or since
    if start is None:
        newest: Any = await redis.xrevrange(keys.FEED, count=1)
        start = str(newest[0][0]) if newest else "0-0"

    async def events() -> AsyncIterator[str]:
        cursor = start
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            reply = await redis.xread({keys.FEED: cursor}, count=100, block=int(KEEPALIVE_S * 1000))
            if not reply:
                yield ": keepalive\n\n"
                continue
            for _, entries in stream_reply(reply):
                for entry_id, fields in entries:
                    cursor = entry_id
                    if await audience.allows(fields):
                        yield _event(entry_id, fields)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
