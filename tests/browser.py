"""Browser tests: Python Playwright driving Debian's chromium (never a downloaded browser).

Without chromium the tests skip with a visible reason, except under CI (``CI`` set), where
a missing browser is a failure: `.ci/run` installs chromium and fonts-noto-cjk.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.ingest_harness import wait_for

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium for the browser tests (see .ci/run)")
        pytest.skip("no chromium on PATH: install Debian's chromium and fonts-noto-cjk")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Per module: Playwright's sync API marks its event loop as running in this thread
    until it stops, so a session-wide browser breaks every asyncio test collected later."""
    path = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield launched
        launched.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The real app on a loopback port, in a thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                timeout_graceful_shutdown=2,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def login(page: Any, base: str, token: str, *, next_path: str | None = None) -> None:
    """Paste a token on the login page once; the session cookie does the rest."""
    page.goto(f"{base}/login" + (f"?next={next_path}" if next_path else ""))
    page.fill("#token", token)
    page.click("button[type=submit]")


def shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def no_overlap(page: Any, selectors: list[str]) -> None:
    """The named boxes are visible, inside the viewport width, and do not overlap."""
    boxes = []
    width = page.viewport_size["width"]
    for selector in selectors:
        box = page.locator(selector).first.bounding_box()
        assert box is not None, f"{selector} is not visible"
        assert box["x"] >= -1 and box["x"] + box["width"] <= width + 1, f"{selector} overflows"
        boxes.append((selector, box))
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1 :]:
            overlap_x = min(ba["x"] + ba["width"], bb["x"] + bb["width"]) - max(ba["x"], bb["x"])
            overlap_y = min(ba["y"] + ba["height"], bb["y"] + bb["height"]) - max(ba["y"], bb["y"])
            assert overlap_x <= 1 or overlap_y <= 1, f"{a} overlaps {b}"
