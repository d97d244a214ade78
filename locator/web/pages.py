"""The web pages: login (token → session cookie), the dispatcher console, the volunteer
page and the family portal, the API docs, their static assets, and the few reads only
pages need.

Pages are static HTML + plain JavaScript (no build step); Leaflet and Swagger UI are
vendored under ``static/vendor`` (see VENDOR.md). Data comes from the same API, authorised
by the session cookie, and live changes from the event feed.
"""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from pydantic import Field

from alerts import answer_page, links
from alerts.incidents.storage import queue_open_incident_id
from alerts.responders.service import volunteers_on_map
from devices.elders import access_log
from devices.elders.records import parse_elder
from devices.elders.service import authorize as authorize_elder
from devices.elders.service import live_elder_ids, queue_read_elder
from devices.telemetry.positions import parse_position
from devices.telemetry.readers import queue_read_position
from geofences.service import parse_zones, queue_read_zones
from locator.core import keys
from locator.core.auth import (
    SESSION_COOKIE,
    Principal,
    Role,
    create_session,
    end_session,
    open_session_for,
)
from locator.core.deps import (
    AppContext,
    CallerDep,
    ContextDep,
    RedisDep,
    SyncRedisDep,
    login_with,
    session_principal,
)
from locator.core.errors import Forbidden, HomewardError
from locator.core.schemas import Strict
from locator.web.link_sessions import still_responding

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


@router.get("/docs")
def docs_page() -> FileResponse:
    """Swagger UI on /openapi.json, every asset served from here (works offline)."""
    return _page("docs.html")


@router.get("/login")
def login_page() -> FileResponse:
    return _page("login.html")


@router.get("/console")
def console_page(request: Request) -> Response:
    if SESSION_COOKIE not in request.cookies:
        return RedirectResponse("/login?next=/console")
    return _page("console.html")


def _secure(request: Request, ctx: AppContext) -> bool:
    """Secure cookies when the public address is https: a TLS proxy talks plain http to us."""
    public = ctx.settings.public_url or ""
    return public.lower().startswith("https:") or request.url.scheme == "https"


def _set_cookie(
    response: Response, request: Request, ctx: AppContext, session: str, max_age: int
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=_secure(request, ctx),
        path="/",
    )


async def _session_role(request: Request, redis: RedisDep) -> Principal | None:
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        return None
    try:
        return await session_principal(request, session)
    except HomewardError:
        return None


def _login(path: str) -> RedirectResponse:
    return RedirectResponse(f"/login?next={path}", status_code=303)


def _refused(title: str, message: str) -> HTMLResponse:
    """A small page with the status a page route refuses with (403: another family's elder)."""
    doc = (
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><link rel='stylesheet' href='/static/app.css'>"
        "</head><body><header class='bar'><h1>爱回家 Homeward</h1></header>"
        f"<main class='login card' id='refused'><h2>{html.escape(title)}</h2>"
        f"<p>{html.escape(message)}</p><p><a class='button' href='/family'>返回 Back</a></p>"
        "</main></body></html>"
    )
    return HTMLResponse(doc, status_code=403, headers={"Cache-Control": "no-store"})


@router.get("/v")
async def volunteer_home(request: Request, redis: RedisDep) -> Response:
    """A volunteer's open alerts (after logging in, or a session opened by an SMS link)."""
    if await _session_role(request, redis) is None:
        return _login("/v")
    return _page("volunteer.html")


@router.get("/v/{incident_id}", response_model=None)
async def volunteer_page(
    incident_id: int,
    request: Request,
    redis: RedisDep,
    sync_redis: SyncRedisDep,
    ctx: ContextDep,
    t: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """The SMS link: checks the signed token and opens a session for its volunteer.

    Opening changes nothing on the incident (link scanners open links too): the page's
    Accept button is the confirm step. Without a token it needs a session already.
    """
    if not t:
        if await _session_role(request, redis) is None:
            return _login(f"/v/{incident_id}")
        return _page("volunteer.html")
    checked = await anyio.to_thread.run_sync(
        lambda: answer_page.check_link(sync_redis, ctx, incident_id, t)
    )
    if isinstance(checked, Response):
        return checked
    principal = Principal(role=Role.VOLUNTEER, subject=str(checked))
    # The session lasts what is left of the link and only while the alert needs this
    # volunteer: closing the incident or standing them down ends it (link_sessions).
    if not await still_responding(ctx, incident_id, principal):
        return _refused(
            "已结束 Over", "此求助已结束或已有人接手，谢谢 · This alert is over for you"
        )
    ttl_s = max(1, int(links.expires_at(t) - ctx.clock.time()))
    session = await open_session_for(
        redis, principal=principal, ttl_s=ttl_s, incident_id=incident_id
    )
    # Without JavaScript the page still answers: a form posting the link's own token.
    form = (
        f"<noscript><form method='post' action='/v/{incident_id}/answer' class='card'>"
        f"<input type='hidden' name='t' value='{html.escape(t, quote=True)}'>"
        "<button class='primary big' name='action' value='ack'>我去找（接单） Accept</button>"
        "<button class='big' name='action' value='decline'>无法前往 Decline</button>"
        "</form></noscript>"
    )
    page = (STATIC / "volunteer.html").read_text().replace("<!--noscript-->", form, 1)
    response = HTMLResponse(page, headers={"Cache-Control": "no-store"})
    _set_cookie(response, request, ctx, session, ttl_s)
    return response


@router.get("/family")
async def family_page(request: Request, redis: RedisDep) -> Response:
    if await _session_role(request, redis) is None:
        return _login("/family")
    return _page("family.html")


@router.get("/family/elders/{elder_id}")
async def family_elder_page(elder_id: int, request: Request, redis: RedisDep) -> Response:
    """One elder in the family portal: only for that elder's family (and staff), 403 otherwise."""
    caller = await _session_role(request, redis)
    if caller is None:
        return _login(f"/family/elders/{elder_id}")
    try:
        await authorize_elder(redis, caller=caller, elder_id=elder_id, write=False)
    except HomewardError as exc:
        if exc.status_code == 404:
            return _refused("找不到 Not found", str(exc.detail))
        return _refused("无权访问 Not allowed", "这位老人不属于您的家庭 · Not your family's elder")
    return _page("family.html")


@api.post("/session")
async def open_session(
    body: SessionBody, redis: RedisDep, request: Request, ctx: ContextDep
) -> Response:
    """Log in once with a token: the browser keeps an HttpOnly session cookie instead."""
    now = ctx.clock.time()
    session, principal, ttl_s = await login_with(
        redis, request, lambda: create_session(redis, token=body.token, now=now)
    )
    response = Response(
        json.dumps({"role": principal.role.value, "subject": principal.subject}),
        media_type="application/json",
    )
    _set_cookie(response, request, ctx, session, ttl_s)
    return response


@api.get("/session")
async def who_am_i(caller: CallerDep) -> dict[str, Any]:
    return {
        "role": caller.role.value,
        "subject": caller.subject,
        "volunteer_id": caller.volunteer_id(),
    }


@api.delete("/session", status_code=204)
async def close_session(redis: RedisDep, request: Request, ctx: ContextDep) -> Response:
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        await end_session(redis, session)
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=_secure(request, ctx), httponly=True, samesite="strict"
    )
    return response


@api.get("/config")
async def page_config(ctx: ContextDep) -> dict[str, Any]:
    """What the pages need to draw: map tiles, the default language, the server's time."""
    return {
        "map_tiles": ctx.settings.map_tiles,
        "locale": ctx.settings.locale,
        "respond_sla_s": ctx.settings.respond_sla_s,
        "onsite_sla_s": ctx.settings.onsite_sla_s,
        "vapid_public_key": _vapid_public_key(ctx.settings.vapid_private_key),
        "server_time_ms": round(ctx.clock.time() * 1000),
    }


@cache
def _vapid_public_key(private_key: str | None) -> str | None:
    """The application server key browsers subscribe with (web push is hidden without it)."""
    if not private_key:
        return None
    from cryptography.hazmat.primitives import serialization
    from py_vapid import Vapid02, b64urlencode

    public = Vapid02.from_string(private_key).public_key
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return str(b64urlencode(point))


@api.get("/overview", tags=["console"])
async def overview(redis: RedisDep, caller: CallerDep, ctx: ContextDep) -> dict[str, Any]:
    """The console map: every elder's last position (fresh or stale) and zones (staff)."""
    if not caller.is_staff:
        raise Forbidden("the overview is for dispatch")
    ids = await live_elder_ids(redis)
    now = ctx.clock.time()
    elders: list[dict[str, Any]] = []
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        async with redis.pipeline(transaction=False) as pipe:
            for elder_id in chunk:
                queue_read_elder(pipe, elder_id=elder_id)
                queue_read_position(pipe, elder_id=elder_id)
                queue_read_zones(pipe, elder_id=elder_id)
                queue_open_incident_id(pipe, elder_id=elder_id)
            replies = await pipe.execute()
        for n, elder_id in enumerate(chunk):
            doc_raw, pos, zones_raw, incident = replies[4 * n : 4 * n + 4]
            record = parse_elder(doc_raw, elder_id)
            if record is None:
                continue
            position = None
            last = parse_position(pos)
            if last is not None:
                position = {
                    "lat": last.lat,
                    "lon": last.lon,
                    "acc": last.acc or 0.0,
                    "tst": last.tst,
                    "stale": now - last.received_ms / 1000 > STALE_AFTER_S,
                }
            elders.append(
                {
                    "id": elder_id,
                    "name": record.name,
                    "home": {"lat": record.home[0], "lon": record.home[1]} if record.home else None,
                    "position": position,
                    "incident_id": int(incident) if incident else None,
                    "zones": parse_zones(zones_raw),
                }
            )
    volunteers = await volunteers_on_map(redis)
    # The map shows where each of them is: a read of each one's position (folded per 10 min).
    await access_log.record_many(
        redis,
        elder_ids=[e["id"] for e in elders if e["position"]],
        caller=caller,
        action="position.read",
        detail="console map",
        now=now,
        retention_s=ctx.settings.access_log_retention_s,
    )
    degraded = await redis.get(keys.SYSTEM_STATE) == "degraded"
    return {"elders": elders, "volunteers": volunteers, "system": "degraded" if degraded else "ok"}
