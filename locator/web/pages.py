"""The web pages: login (token → session cookie), the dispatcher console, the volunteer
page and the family portal, their static assets, and the few reads only pages need.

Pages are static HTML + plain JavaScript (no build step); Leaflet is vendored under
``static/vendor`` (see VENDOR.md). Data comes from the same API, authorised by the session
cookie, and live changes from the event feed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import Field

from locator.core import keys, store
from locator.core.auth import SESSION_COOKIE, SESSION_TTL_S, create_session, end_session
from locator.core.deps import CallerDep, ContextDep, RedisDep
from locator.core.errors import Forbidden
from locator.core.schemas import Strict

STATIC = Path(__file__).with_name("static")
router = APIRouter(include_in_schema=False)
api = APIRouter(tags=["web session"])
# A fix older than this shows as stale on the map (twice the fast-reporting window).
STALE_AFTER_S = 600


class SessionBody(Strict):
    token: str = Field(min_length=8, max_length=200)


def _page(name: str) -> FileResponse:
    return FileResponse(
        STATIC / name, media_type="text/html", headers={"Cache-Control": "no-store"}
    )


@router.get("/")
def index() -> RedirectResponse:
    return RedirectResponse("/console")


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


@router.get("/login")
def login_page() -> FileResponse:
    return _page("login.html")


@router.get("/console")
def console_page(request: Request) -> Response:
    if SESSION_COOKIE not in request.cookies:
        return RedirectResponse("/login?next=/console")
    return _page("console.html")


@api.post("/session")
async def open_session(body: SessionBody, redis: RedisDep, request: Request) -> Response:
    """Log in once with a token: the browser keeps an HttpOnly session cookie instead."""
    session, principal = await create_session(redis, token=body.token)
    response = Response(
        json.dumps({"role": principal.role.value, "subject": principal.subject}),
        media_type="application/json",
    )
    response.set_cookie(
        SESSION_COOKIE,
        session,
        max_age=SESSION_TTL_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@api.get("/session")
async def who_am_i(caller: CallerDep) -> dict[str, Any]:
    return {
        "role": caller.role.value,
        "subject": caller.subject,
        "volunteer_id": caller.volunteer_id(),
    }


@api.delete("/session", status_code=204)
async def close_session(redis: RedisDep, request: Request) -> Response:
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        await end_session(redis, session)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@api.get("/config")
async def page_config(ctx: ContextDep) -> dict[str, Any]:
    """What the pages need to draw: map tiles and the default language."""
    return {
        "map_tiles": ctx.settings.map_tiles,
        "locale": ctx.settings.locale,
        "respond_sla_s": ctx.settings.respond_sla_s,
        "onsite_sla_s": ctx.settings.onsite_sla_s,
    }


@api.get("/overview", tags=["console"])
async def overview(redis: RedisDep, caller: CallerDep, ctx: ContextDep) -> dict[str, Any]:
    """The console map: every elder's last position (fresh or stale) and zones (staff)."""
    if not caller.is_staff:
        raise Forbidden("the overview is for dispatch")
    ids = [int(i) for i in store.texts(await redis.zrange(keys.ELDERS, 0, -1))]
    now = ctx.clock.time()
    elders = []
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        async with redis.pipeline(transaction=False) as pipe:
            for elder_id in chunk:
                pipe.get(keys.elder(elder_id))
                pipe.hgetall(keys.last_position(elder_id))
                pipe.hgetall(keys.zones(elder_id))
                pipe.get(keys.open_incident(elder_id))
            replies = await pipe.execute()
        for n, elder_id in enumerate(chunk):
            doc_raw, pos, zones_raw, incident = replies[4 * n : 4 * n + 4]
            if not doc_raw:
                continue
            doc = json.loads(doc_raw)
            position = None
            if pos.get("lat"):
                received = float(pos.get("received_ms") or 0) / 1000
                position = {
                    "lat": float(pos["lat"]),
                    "lon": float(pos["lon"]),
                    "acc": float(pos.get("acc") or 0),
                    "tst": float(pos.get("tst") or 0),
                    "stale": now - received > STALE_AFTER_S,
                }
            elders.append(
                {
                    "id": elder_id,
                    "name": doc.get("name"),
                    "home": doc.get("home"),
                    "position": position,
                    "incident_id": int(incident) if incident else None,
                    "zones": [json.loads(z) for z in zones_raw.values()],
                }
            )
    volunteers = []
    vids = [int(i) for i in store.texts(await redis.zrange(keys.VOLUNTEERS, 0, -1))]
    if vids:
        docs = await redis.mget([keys.volunteer(v) for v in vids])
        locs = await redis.mget([keys.volunteer_location(v) for v in vids])
        for doc_raw, loc_raw in zip(docs, locs, strict=True):
            if doc_raw and loc_raw:
                doc, loc = json.loads(doc_raw), json.loads(loc_raw)
                volunteers.append(
                    {
                        "id": doc["id"],
                        "name": doc["name"],
                        "on_duty": doc["on_duty"],
                        "lat": loc["lat"],
                        "lon": loc["lon"],
                        "at": loc.get("at"),
                    }
                )
    degraded = await redis.get(keys.SYSTEM_STATE) == "degraded"
    return {"elders": elders, "volunteers": volunteers, "system": "degraded" if degraded else "ok"}
