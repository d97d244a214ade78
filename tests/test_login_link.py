"""The demo's login links (`/login#token=…`): one click logs in, the token leaves the
address bar and history, and each role lands on its own page."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from locator.app import create_app
from locator.core.auth import Role, create_token
from locator.core.settings import load_settings
from tests import browser as harness
from tests.browser import LiveServer
from tests.servers import clean_homeward_keys

browser = harness.browser


def _mint(redis_url: str, role: Role, subject: str | None) -> str:
    async def make() -> str:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            token, _ = await create_token(
                client, role=role, subject=subject, created_at=time.time()
            )
            return token
        finally:
            await client.aclose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()


def test_a_login_link_logs_in_and_forgets_the_token(
    browser: Any, redis_url: str, tmp_path: Path
) -> None:
    clean_homeward_keys(redis_url)
    tokens = {
        "/console": _mint(redis_url, Role.DISPATCHER, None),
        "/family": _mint(redis_url, Role.GUARDIAN, "fam-link"),
    }
    app = create_app(load_settings(data_dir=tmp_path), redis_url=redis_url, mqtt_url=None)
    with LiveServer(app) as live:
        for home, token in tokens.items():
            context = browser.new_context()
            page = context.new_page()
            try:
                page.goto(f"{live.url}/login#token={token}")
                page.wait_for_url(f"{live.url}{home}*", timeout=10_000)
                assert token not in page.url
                # Back goes to the login page without the token in its address.
                page.go_back()
                assert token not in page.url
                assert any(c["name"] for c in context.cookies() if c["httpOnly"])
            finally:
                context.close()
        # A wrong token in a link shows the error and stays on the login page.
        context = browser.new_context()
        page = context.new_page()
        try:
            page.goto(f"{live.url}/login#token=hw_not-a-real-token")
            page.wait_for_function("() => document.getElementById('error').textContent.length > 0")
            assert "/login" in page.url and "hw_not" not in page.url
        finally:
            context.close()
