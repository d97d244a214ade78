"""/docs works offline: Swagger UI is vendored, the page and everything it loads is ours.

FastAPI's own /docs pulls swagger-ui from cdn.jsdelivr.net and a favicon from
fastapi.tiangolo.com; ours is static HTML + a static script (no inline script), and the
browser test records every request the rendered page makes.
"""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from locator.app import create_app
from locator.core.auth import Role, create_token
from locator.core.settings import load_settings
from tests import browser as harness
from tests.browser import LiveServer
from tests.conftest import Api
from tests.servers import clean_homeward_keys

browser = harness.browser  # Debian's chromium, per module (never a downloaded one)

LOOPBACK = {"127.0.0.1", "localhost"}


def _references(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html, flags=re.IGNORECASE)


async def test_docs_page_references_only_same_origin_assets(api: Api) -> None:
    page = await api.http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html, flags=re.IGNORECASE), (
        "inline script (a CSP script-src 'self' forbids it)"
    )
    refs = _references(html)
    assert any(ref.endswith("swagger-ui-bundle.js") for ref in refs)
    assert any(ref.endswith("swagger-ui.css") for ref in refs)
    assert "/static/docs.js" in refs
    for ref in refs:
        parts = urlsplit(ref)
        assert not parts.scheme and not parts.netloc, f"{ref} is not same-origin"
        if ref.startswith("/static/"):
            asset = await api.http.get(ref)
            assert asset.status_code == 200, ref
            assert asset.content, ref
    script = (await api.http.get("/static/docs.js")).text
    assert '"/openapi.json"' in script and "validatorUrl: null" in script

    assert (await api.http.get("/redoc")).status_code == 404
    assert (await api.http.get("/docs/oauth2-redirect")).status_code == 404
    schema = (await api.http.get("/openapi.json")).json()
    assert "/docs" not in schema["paths"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def _mint(redis_url: str) -> str:
    """An admin token, minted on a worker thread (no asyncio loop in the Playwright thread)."""

    async def make() -> str:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            token, _ = await create_token(
                client, role=Role.ADMIN, subject=None, created_at=time.time()
            )
            return token
        finally:
            await client.aclose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()


def test_swagger_ui_renders_and_authorizes_with_requests_only_to_this_server(
    browser: Any, redis_url: str, tmp_path: Path
) -> None:
    clean_homeward_keys(redis_url)
    token = _mint(redis_url)
    app = create_app(load_settings(data_dir=tmp_path), redis_url=redis_url, mqtt_url=None)
    with LiveServer(app) as live:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        requests: list[Any] = []
        errors: list[str] = []
        page.on("request", lambda r: requests.append(r))
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{live.url}/docs")
            elders = page.locator(
                '.opblock-get:has(.opblock-summary-path[data-path="/api/v1/elders"])'
            )
            elders.wait_for(timeout=10_000)
            assert page.locator(".opblock").count() > 20

            # Authorize with a bearer token, then call GET /api/v1/elders from the page.
            page.click(".auth-wrapper button.authorize")
            page.fill(".dialog-ux input[type=text]", token)
            page.click(".dialog-ux .auth-btn-wrapper button.authorize")
            page.click(".dialog-ux button.btn-done")
            elders.locator(".opblock-summary").click()
            elders.locator(".try-out__btn").click()
            with page.expect_response(lambda r: urlsplit(r.url).path == "/api/v1/elders") as sent:
                elders.locator(".execute").click()
            response = sent.value
            assert response.status == 200
            assert response.request.headers.get("authorization") == f"Bearer {token}"
            elders.locator(".live-responses-table .response-col_status").first.wait_for()
        finally:
            context.close()

    urls = [r.url for r in requests]
    assert urls, "no request recorded"
    foreign = [url for url in urls if urlsplit(url).hostname not in LOOPBACK]
    assert not foreign, f"requests to other hosts: {foreign}"
    paths = {urlsplit(url).path for url in urls}
    assert {"/docs", "/openapi.json", "/static/docs.js"} <= paths
    assert not errors, errors
