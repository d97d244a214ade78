"""The page behind an SMS's one-tap link: the incident, and a button to confirm.

Link scanners (and SMS apps' previews) open links by themselves, so a GET only shows; the
accept or decline happens on the page's POST, with the same signed token.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Annotated

import anyio
from fastapi import APIRouter, Form, Query
from fastapi.responses import HTMLResponse

from alerts import links
from alerts.incidents import service as incidents
from alerts.incidents.service import config_from
from locator.core import crs, keys
from locator.core.auth import Principal, Role
from locator.core.deps import ContextDep, SyncRedisDep
from locator.core.errors import HomewardError

router = APIRouter(tags=["volunteer page"])

_TEXT = {
    "zh-CN": {
        "title": "爱回家 · 寻人求助",
        "since": "已走失约 {m} 分钟",
        "accept": "我去找（接单）",
        "decline": "无法前往",
        "code": "编号",
        "last": "最后位置",
        "status": "状态",
        "done_ack": "已接单，谢谢！请尽快前往。",
        "done_decline": "已记录，谢谢。",
        "expired": "此链接已过期。",
        "invalid": "此链接无效。",
        "closed": "该事件已结束，谢谢您的关注。",
        "nav": "导航",
    },
    "en": {
        "title": "Homeward · Help find",
        "since": "Missing for about {m} min",
        "accept": "I'll go (accept)",
        "decline": "I can't go",
        "code": "Code",
        "last": "Last position",
        "status": "Status",
        "done_ack": "Accepted, thank you! Please head there now.",
        "done_decline": "Noted, thank you.",
        "expired": "This link has expired.",
        "invalid": "This link is not valid.",
        "closed": "This incident is closed. Thank you.",
        "nav": "Navigate",
    },
}

_STYLE = """
body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:0;padding:16px;max-width:560px}
h1{font-size:1.4rem} img{max-width:100%;border-radius:8px}
button{font-size:1.3rem;width:100%;padding:18px;margin:8px 0;border-radius:10px;border:0}
.yes{background:#0a7d32;color:#fff} .no{background:#ddd}
.meta{color:#444} a{font-size:1.1rem}
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = (
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status, headers={"Cache-Control": "no-store"})


def _check(redis: object, ctx: ContextDep, incident_id: int, token: str) -> int | HTMLResponse:
    text = _TEXT.get(ctx.settings.locale, _TEXT["zh-CN"])
    try:
        key = links.secret(redis)  # type: ignore[arg-type]
        return links.verify(key, incident_id=incident_id, token=token, now=ctx.clock.time())
    except links.BadLink as exc:
        message = text["expired"] if exc.expired else text["invalid"]
        return _page(text["title"], f"<h1>{html.escape(message)}</h1>", 410 if exc.expired else 403)


@router.get("/v/{incident_id}", response_class=HTMLResponse)
def show(
    incident_id: int, redis: SyncRedisDep, ctx: ContextDep, t: Annotated[str, Query()] = ""
) -> HTMLResponse:
    """The incident for the volunteer the link was sent to; never changes anything."""
    checked = _check(redis, ctx, incident_id, t)
    if isinstance(checked, HTMLResponse):
        return checked
    text = _TEXT.get(ctx.settings.locale, _TEXT["zh-CN"])
    snap = incidents.load(redis, incident_id)
    elder = json.loads(str(redis.get(keys.elder(snap.elder_id)) or "{}"))
    minutes = max(0, round((ctx.clock.time() - snap.t0) / 60))
    pos = redis.hmget(keys.last_position(snap.elder_id), "lat", "lon", "tst")
    lat = float(str(pos[0])) if pos[0] else float(snap.fields.get("origin_lat") or 0)
    lon = float(str(pos[1])) if pos[1] else float(snap.fields.get("origin_lon") or 0)
    parts = [f"<h1>{html.escape(elder.get('name', ''))}</h1>"]
    if elder.get("photo_url"):
        parts.append(f"<img alt='' src='{html.escape(elder['photo_url'], quote=True)}'>")
    parts.append(
        f"<p class='meta'>{html.escape(text['since'].format(m=minutes))} · "
        f"{text['code']} {html.escape(snap.fields['code'])} · "
        f"{text['status']} {html.escape(snap.status)}</p>"
    )
    if elder.get("description"):
        parts.append(f"<p>{html.escape(elder['description'])}</p>")
    gcj_lat, gcj_lon = crs.wgs84_to_gcj02(lat, lon)
    when = ""
    if pos[2]:
        when = datetime.fromtimestamp(float(str(pos[2])), tz=UTC).strftime("%H:%M UTC")
    parts.append(
        f"<p>{text['last']}: {lat:.5f}, {lon:.5f} {when}<br>{text['nav']}: "
        f"<a href='https://uri.amap.com/marker?position={lon},{lat}&coordinate=wgs84'>高德</a> · "
        f"<a href='https://api.map.baidu.com/marker?location={lat},{lon}&coord_type=wgs84"
        f"&output=html&title=here'>百度</a> · "
        f"<a href='https://maps.apple.com/?ll={gcj_lat:.6f},{gcj_lon:.6f}'>Apple</a> · "
        f"<a href='geo:{lat},{lon}'>geo</a></p>"
    )
    if snap.status in ("resolved", "cancelled"):
        parts.append(f"<p><b>{text['closed']}</b></p>")
    else:
        token = html.escape(t, quote=True)
        parts.append(
            f"<form method='post' action='/v/{incident_id}/answer'>"
            f"<input type='hidden' name='t' value='{token}'>"
            f"<button class='yes' name='action' value='ack'>{text['accept']}</button>"
            f"<button class='no' name='action' value='decline'>{text['decline']}</button></form>"
        )
    return _page(text["title"], "".join(parts))


@router.post("/v/{incident_id}/answer", response_class=HTMLResponse)
async def answer(
    incident_id: int,
    redis: SyncRedisDep,
    ctx: ContextDep,
    t: Annotated[str, Form()],
    action: Annotated[str, Form(pattern="^(ack|decline)$")],
) -> HTMLResponse:
    """The confirm button: accept or decline as the volunteer the link was made for."""
    checked = _check(redis, ctx, incident_id, t)
    if isinstance(checked, HTMLResponse):
        return checked
    text = _TEXT.get(ctx.settings.locale, _TEXT["zh-CN"])
    cfg = config_from(ctx.settings, clock=ctx.clock, mqtt_url=ctx.mqtt_url)
    caller = Principal(role=Role.VOLUNTEER, subject=str(checked))
    try:
        await anyio.to_thread.run_sync(
            lambda: incidents.answer(
                redis, cfg, caller=caller, incident_id=incident_id, action=action, channel="link"
            )
        )
    except HomewardError as exc:
        return _page(text["title"], f"<h1>{html.escape(str(exc.detail))}</h1>", exc.status_code)
    done = text["done_ack"] if action == "ack" else text["done_decline"]
    return _page(text["title"], f"<h1>{html.escape(done)}</h1>")
