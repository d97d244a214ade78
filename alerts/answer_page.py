"""The SMS's one-tap link: checking it, and a form POST that answers without JavaScript.

Link scanners (and SMS apps' previews) open links by themselves, so a GET only shows: the
volunteer page (``locator/web``) checks the link here, opens a session for the volunteer
and serves the page; accepting or declining is a button on it. ``POST /v/{id}/answer``
with the same signed token accepts or declines without a session (the no-script form).
"""

from __future__ import annotations

import html
from typing import Annotated

import anyio
from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse

from alerts import links
from alerts.incidents import service as incidents
from alerts.incidents.config import config_from
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

# A static file: the page's policy allows no inline <style>.
_STYLESHEET = "/static/answer.css"


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = (
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title>"
        f"<link rel='stylesheet' href='{_STYLESHEET}'></head>"
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status, headers={"Cache-Control": "no-store"})


def check_link(redis: object, ctx: ContextDep, incident_id: int, token: str) -> int | HTMLResponse:
    """The volunteer a link was made for, or the page saying it is forged (403) or expired (410)."""
    text = _TEXT.get(ctx.settings.locale, _TEXT["zh-CN"])
    try:
        key = links.secret(redis)  # type: ignore[arg-type]
        return links.verify(key, incident_id=incident_id, token=token, now=ctx.clock.time())
    except links.BadLink as exc:
        message = text["expired"] if exc.expired else text["invalid"]
        return _page(text["title"], f"<h1>{html.escape(message)}</h1>", 410 if exc.expired else 403)


@router.post("/v/{incident_id}/answer", response_class=HTMLResponse)
async def answer(
    incident_id: int,
    redis: SyncRedisDep,
    ctx: ContextDep,
    t: Annotated[str, Form()],
    action: Annotated[str, Form(pattern="^(ack|decline)$")],
) -> HTMLResponse:
    """The confirm button: accept or decline as the volunteer the link was made for."""
    checked = check_link(redis, ctx, incident_id, t)
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
