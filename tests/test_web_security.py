"""Web hardening through the real app: security headers on every page and answer, no inline
script or style anywhere (static pages and server-rendered ones), no user data through
innerHTML in the pages' scripts, session cookie flags, the anti-forgery header, and 429
after repeated failed logins.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from alerts import links
from locator.app import create_app
from locator.core import keys, login_limit
from locator.core.auth import CSRF_HEADER, SESSION_COOKIE
from locator.core.clock import ManualClock
from locator.core.deps import AppContext
from locator.core.mqtt import MqttPublisher
from locator.core.redis import sync_client
from locator.core.settings import load_settings
from locator.web import pages
from locator.web.security import API_POLICY, page_policy, tile_sources
from tests.conftest import Api, both_backends
from tests.factories import HAINING, elder_body, volunteer_body

SCRIPT_NAME = '<img src=x onerror="window.__pwned=1">'


class _Markup(HTMLParser):
    """Collects what a content policy without 'unsafe-inline' would block."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {k.lower(): v for k, v in attrs}
        if tag == "script":
            self._in_script = True
            if not names.get("src"):
                self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("inline <style>")
        for name, value in names.items():
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…> handler")
            if name == "style":
                self.problems.append(f"<{tag} style=…> attribute")
            if name in {"href", "src", "action"} and (value or "").lower().startswith(
                "javascript:"
            ):
                self.problems.append(f"<{tag} {name}=javascript:…>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("script body")


def inline_code(markup: str) -> list[str]:
    parser = _Markup()
    parser.feed(markup)
    return parser.problems


def assert_headers(response: httpx.Response, *, page: bool, map_tiles: str = "osm") -> None:
    csp = response.headers.get("content-security-policy")
    assert csp == (page_policy(map_tiles) if page else API_POLICY), (response.url, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


async def _incident(api: Api) -> tuple[int, int, int]:
    """An elder whose every text is a script, a volunteer named like one, an open incident."""
    body = elder_body(
        SCRIPT_NAME,
        address="<script>window.__pwned=2</script>",
        description='<svg onload="window.__pwned=3">',
        medical_notes='"><img src=x onerror=window.__pwned=4>',
        guardians=[{"name": "<b onmouseover=alert(5)>x</b>", "phone": "+8613800138000"}],
    )
    elder = await api.http.post("/api/v1/elders", json=body, headers=api.auth("guardian_a"))
    assert elder.status_code == 201, elder.text
    volunteer = await api.http.post(
        "/api/v1/volunteers",
        json=volunteer_body(7, name="<img src=x onerror=window.__pwned=6>"),
        headers=api.auth("admin"),
    )
    vid = volunteer.json()["id"]
    await api.http.post(
        f"/api/v1/volunteers/{vid}/location",
        json={**HAINING, "acc": 10},
        headers=api.auth("admin"),
    )
    report = await api.http.post(
        "/api/v1/incidents",
        json={"elder_id": elder.json()["id"], "note": "<script>alert(7)</script>"},
        headers=api.auth("guardian_a"),
    )
    assert report.status_code == 201, report.text
    return elder.json()["id"], vid, report.json()["id"]


async def _cookie(api: Api, who: str) -> str:
    answer = await api.http.post("/api/v1/session", json={"token": api.tokens[who]})
    assert answer.status_code == 200, answer.text
    return answer.cookies[SESSION_COOKIE]


async def test_every_page_and_answer_carries_the_security_headers(api: Api) -> None:
    elder_id, _, incident_id = await _incident(api)
    staff = {"Cookie": f"{SESSION_COOKIE}={await _cookie(api, 'dispatcher')}"}
    other_family = {"Cookie": f"{SESSION_COOKIE}={await _cookie(api, 'guardian_b')}"}
    page_answers = [
        await api.http.get("/login"),
        await api.http.get("/docs"),
        await api.http.get("/console", headers=staff),
        await api.http.get("/family", headers=staff),
        await api.http.get(f"/family/elders/{elder_id}", headers=other_family),  # refused page
        await api.http.get(f"/v/{incident_id}?t=1.ffffffff.forged"),  # the link's 403 page
        await api.http.post(f"/v/{incident_id}/answer", data={"t": "1.2.x", "action": "ack"}),
        await api.http.get(f"/api/v1/incidents/{incident_id}/handoff", headers=api.auth("admin")),
        await api.http.get("/static/console.js"),
    ]
    assert [r.status_code for r in page_answers] == [200] * 4 + [403, 403, 403, 200, 200]
    for answer in page_answers:
        assert_headers(answer, page=True)
    # Anything that is not a page runs nothing if opened on its own.
    for answer in [
        await api.http.get(f"/api/v1/elders/{elder_id}", headers=api.auth("admin")),
        await api.http.get("/api/v1/elders/1", headers={"Authorization": "Bearer nope"}),
        await api.http.get("/static/app.css"),
        await api.http.get("/healthz"),
    ]:
        assert_headers(answer, page=False)


async def test_no_inline_script_or_style_in_static_or_server_rendered_pages(
    api: Api, redis_url: str
) -> None:
    static = [p for p in pages.STATIC.glob("*.html")]
    assert {p.name for p in static} >= {"console.html", "family.html", "volunteer.html"}
    for path in static:
        assert inline_code(path.read_text()) == [], path.name
    elder_id, vid, incident_id = await _incident(api)
    client = sync_client(redis_url, process="test")
    try:
        token = links.sign(
            links.secret(client), incident_id=incident_id, volunteer_id=vid, expires=2e9
        )
    finally:
        client.close()
    other_family = {"Cookie": f"{SESSION_COOKIE}={await _cookie(api, 'guardian_b')}"}
    rendered = {
        "handoff": await api.http.get(
            f"/api/v1/incidents/{incident_id}/handoff", headers=api.auth("admin")
        ),
        "volunteer page with its no-script form": await api.http.get(f"/v/{incident_id}?t={token}"),
        "answer page": await api.http.post(
            f"/v/{incident_id}/answer", data={"t": token, "action": "decline"}
        ),
        "forged link page": await api.http.get(f"/v/{incident_id}?t=1.ffffffff.forged"),
        "refused page": await api.http.get(f"/family/elders/{elder_id}", headers=other_family),
    }
    for name, answer in rendered.items():
        assert answer.headers["content-type"].startswith("text/html"), name
        assert inline_code(answer.text) == [], name
        assert "<img src=x" not in answer.text and "<script>window" not in answer.text, name
    handoff = rendered["handoff"].text
    assert "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;" in handoff
    assert 'src="/static/handoff.js"' in handoff and 'href="/static/handoff.css"' in handoff
    for asset in ("/static/handoff.js", "/static/handoff.css", "/static/answer.css"):
        assert (await api.http.get(asset)).status_code == 200, asset


def test_the_pages_scripts_never_parse_strings_as_html() -> None:
    """innerHTML and string tooltips are where a typed name becomes code: none are left."""
    for path in pages.STATIC.glob("*.js"):
        source = path.read_text()
        for pattern in (
            r"\.innerHTML\s*[+]?=",
            r"\.outerHTML\s*=",
            r"insertAdjacentHTML",
            r"document\.write",
            r"\beval\(",
            r"new Function\(",
            # Leaflet parses a string tooltip/popup as HTML: only a node (HW.tip) goes in.
            r"\.bind(?:Tooltip|Popup)\((?!HW\.tip\()",
            r"\.set(?:Tooltip|Popup)?Content\((?!HW\.tip\()",
        ):
            assert not re.search(pattern, source), f"{path.name}: {pattern}"


def test_map_tile_hosts_are_exactly_the_ones_in_img_src() -> None:
    assert tile_sources("osm") == ["https://tile.openstreetmap.org"]
    assert tile_sources("amap") == [f"https://webrd0{n}.is.autonavi.com" for n in "1234"]
    assert tile_sources("https://{s}.tiles.example/{z}/{x}/{y}.png") == [
        f"https://{s}.tiles.example" for s in "abc"
    ]
    assert tile_sources("http://127.0.0.1:8080/t/{z}/{x}/{y}.png") == ["http://127.0.0.1:8080"]
    img = next(d for d in page_policy("amap").split("; ") if d.startswith("img-src"))
    assert img.split() == [
        "img-src",
        "'self'",
        "data:",
        "blob:",
        *[f"https://webrd0{n}.is.autonavi.com" for n in "1234"],
    ]


@asynccontextmanager
async def _app(
    redis: aioredis.Redis, redis_url: str, mqtt_url: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(data_dir=tmp_path, **overrides)
    app = create_app(settings, redis_url=redis_url, mqtt_url=mqtt_url, clock=ManualClock())
    publisher = MqttPublisher(mqtt_url, client_id=f"test-web-{uuid.uuid4().hex[:8]}")
    sync_redis = sync_client(redis_url, process="test")
    app.state.ctx = AppContext(
        settings=settings,
        redis=redis,
        clock=ManualClock(),
        mqtt_url=mqtt_url,
        publisher=publisher,
        sync_redis=sync_redis,
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://homeward.test") as c:
            yield c
    finally:
        publisher.close()
        sync_redis.close()


def _set_cookie(answer: httpx.Response) -> list[str]:
    return [p.strip().lower() for p in answer.headers["set-cookie"].split(";")]


@pytest.mark.parametrize(
    ("public_url", "secure"),
    [(None, False), ("http://homeward.example", False), ("https://homeward.example", True)],
)
async def test_the_session_cookie_is_httponly_strict_and_secure_behind_https(
    api: Api, redis_url: str, mqtt_url: str, tmp_path: Path, public_url: str | None, secure: bool
) -> None:
    """A TLS proxy talks plain http to the app: the public address decides Secure."""
    async with _app(api.redis, redis_url, mqtt_url, tmp_path, public_url=public_url) as http:
        answer = await http.post("/api/v1/session", json={"token": api.tokens["admin"]})
        assert answer.status_code == 200, answer.text
        flags = _set_cookie(answer)
        assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
        assert ("secure" in flags) is secure
        _, vid, incident_id = await _incident(api)
        client = sync_client(redis_url, process="test")
        try:
            token = links.sign(
                links.secret(client), incident_id=incident_id, volunteer_id=vid, expires=2e9
            )
        finally:
            client.close()
        linked = await http.get(f"/v/{incident_id}?t={token}")
        assert linked.status_code == 200
        flags = _set_cookie(linked)
        assert "httponly" in flags and "samesite=strict" in flags
        assert ("secure" in flags) is secure
        out = await http.delete("/api/v1/session")
        assert ("secure" in _set_cookie(out)) is secure


async def test_a_cookie_session_changes_nothing_without_the_anti_forgery_header(
    api: Api,
) -> None:
    elder_id, _, incident_id = await _incident(api)
    cookie = {"Cookie": f"{SESSION_COOKIE}={await _cookie(api, 'dispatcher')}"}
    for method, path, body in [
        ("POST", f"/api/v1/incidents/{incident_id}/cancel", {"note": ""}),
        ("PATCH", f"/api/v1/elders/{elder_id}", {"description": "changed"}),
        ("DELETE", f"/api/v1/elders/{elder_id}", None),
        ("POST", "/api/v1/stream/ticket", None),
    ]:
        refused = await api.http.request(method, path, json=body, headers=cookie)
        assert refused.status_code == 403, (method, path, refused.text)
        assert CSRF_HEADER in refused.json()["detail"]
    elder = await api.http.get(f"/api/v1/elders/{elder_id}", headers=api.auth("admin"))
    assert elder.json()["description"] == '<svg onload="window.__pwned=3">'
    incident = await api.http.get(f"/api/v1/incidents/{incident_id}", headers=api.auth("admin"))
    assert incident.json()["status"] == "open"
    # Reads need no header, and the same change with it goes through.
    assert (await api.http.get(f"/api/v1/elders/{elder_id}", headers=cookie)).status_code == 200
    ok = await api.http.post(
        "/api/v1/stream/ticket", headers={**cookie, CSRF_HEADER: "1"}, json=None
    )
    assert ok.status_code == 200, ok.text


@both_backends
async def test_repeated_failed_logins_get_429_before_the_token_is_checked(api: Api) -> None:
    browser = {"Cookie": f"{SESSION_COOKIE}={await _cookie(api, 'dispatcher')}"}
    # Successes never count: a busy integration is not throttled.
    for _ in range(3 * login_limit.MAX_FAILURES):
        ok = await api.http.get("/api/v1/elders", headers=api.auth("admin"))
        assert ok.status_code == 200
    for n in range(login_limit.MAX_FAILURES):
        guess = {"Authorization": f"Bearer hw_guess{n}"}
        bad = (
            await api.http.get("/api/v1/elders", headers=guess)
            if n % 2
            else await api.http.post("/api/v1/session", json={"token": f"hw_guess{n}"})
        )
        assert bad.status_code == 401, (n, bad.text)
    # The next attempt is refused before any token is looked up: even a good one.
    for attempt in (
        api.http.get("/api/v1/elders", headers={"Authorization": "Bearer hw_guess_more"}),
        api.http.post("/api/v1/session", json={"token": api.tokens["admin"]}),
        api.http.get("/api/v1/elders", headers=api.auth("admin")),
    ):
        refused = await attempt
        assert refused.status_code == 429, refused.text
        assert 0 < int(refused.headers["retry-after"]) <= login_limit.WINDOW_S
        assert "too many failed logins" in refused.json()["detail"]
    assert await api.redis.get(keys.login_failures("127.0.0.1")) == str(login_limit.MAX_FAILURES)
    assert 0 < await api.redis.ttl(keys.login_failures("127.0.0.1")) <= login_limit.WINDOW_S
    # A browser already logged in keeps working (its cookie is no token to guess), and
    # another address is not affected.
    assert (await api.http.get("/api/v1/elders", headers=browser)).status_code == 200
    transport = api.http._transport
    assert isinstance(transport, httpx.ASGITransport)
    other = httpx.ASGITransport(app=transport.app, client=("10.1.2.3", 5000))
    async with httpx.AsyncClient(transport=other, base_url="http://homeward.test") as elsewhere:
        ok = await elsewhere.get("/api/v1/elders", headers=api.auth("admin"))
        assert ok.status_code == 200
    # The window ends: the address may try again.
    await api.redis.delete(keys.login_failures("127.0.0.1"))
    assert (await api.http.get("/api/v1/elders", headers=api.auth("admin"))).status_code == 200


@both_backends
async def test_guessing_stream_tickets_counts_as_failed_logins(api: Api) -> None:
    for n in range(login_limit.MAX_FAILURES):
        bad = await api.http.get(f"/api/v1/stream?ticket=guess{n}")
        assert bad.status_code == 401, bad.text
    refused = await api.http.get("/api/v1/stream", headers=api.auth("admin"))
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) > 0
    await api.redis.delete(keys.login_failures("127.0.0.1"))
