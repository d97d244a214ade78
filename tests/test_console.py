"""The dispatcher console in a real browser, on `homeward demo` (its own Redis, broker, data).

The demo's first wandering elder opens an incident; the console shows it with a running
countdown; a volunteer's accept (API) turns it acknowledged live, a shared location turns
it on site, the dispatcher resolves it in the page. Screenshots go to docs/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.browser import browser, chromium, free_port, login, no_overlap, shot  # noqa: F401
from tests.ingest_harness import wait_for


def in_words(page: Any) -> None:
    """The detail panel names people and says what happened: no ids, no channel codes."""
    text = page.inner_text("#detail")
    assert not re.search(r"volunteer:\d+|guardian:|dispatcher:", text), text
    assert " · api" not in text and "_" not in text, text
    assert page.locator("#notifications tr[data-status]").count() >= 1


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    chromium()  # skip (or fail under CI) before starting anything
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWARD_")}
    env.update(HOMEWARD_DATA_DIR=str(tmp_path / "demo"), HOMEWARD_HTTP_PORT=str(port))
    log = (tmp_path / "demo.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "locator",
            "demo",
            "--elders",
            "6",
            "--first-after",
            "2",
            "--every",
            "600",
            "--no-volunteers-act",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    tokens = tmp_path / "demo" / "demo.json"
    try:
        wait_for(lambda: tokens.exists() and process.poll() is None, timeout=60)
        time.sleep(0.2)  # the file is written in one go; let it land
        yield (
            f"http://127.0.0.1:{port}",
            {**json.loads(tokens.read_text()), "_dir": str(tmp_path / "demo")},
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_console_follows_an_incident_live_and_the_dispatcher_resolves_it(
    demo: tuple[str, dict[str, Any]],
    browser: Any,  # noqa: F811
) -> None:
    base, tokens = demo
    staff = {"Authorization": f"Bearer {tokens['dispatcher']}"}
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, base, tokens["dispatcher"], next_path="/console")
    page.wait_for_url(re.compile(r".*/console$"))
    card = page.locator(".incident[data-status=open]").first
    card.wait_for(timeout=90_000)  # the first wander: a few seconds, then two fixes outside
    incident_id = int(card.get_attribute("data-incident-id") or 0)
    countdown = card.locator(".countdown.respond")
    first = countdown.inner_text()
    assert re.fullmatch(r"[0-2]:[0-5]\d", first), first
    # It runs: within a few seconds the same card shows less time left.
    page.wait_for_function(
        "([id, first]) => { const el = document.querySelector(`.incident[data-incident-id='${id}'] .countdown.respond`);"
        " return el && el.textContent !== first; }",
        arg=[incident_id, first],
        timeout=5000,
    )
    # The map shows her zone and the search area of the selected incident.
    page.locator("#detail:not(.hidden)").wait_for()
    page.locator("#detail-device", has_text="定位手环: demo-").wait_for()  # her bracelet, in words
    page.locator("path.search-ring").first.wait_for(state="attached")
    assert page.locator("path.zone").count() >= 6
    assert page.locator("#notifications tr[data-status]").count() >= 1
    assert "离开安全区" in card.locator(".trigger").inner_text()  # not "zone_exit"
    page.locator("#log tr[data-status]").first.wait_for()  # the notifications log, all incidents
    # The outcome the dispatcher picks now must survive every live refresh until resolving.
    page.select_option("#outcome", "found_injured")
    # At 1280×800 the page fits the screen: nothing overlaps, nothing scrolls the page.
    no_overlap(page, ["header.bar", "#map", "aside"])
    assert page.evaluate("document.documentElement.scrollHeight") <= 800
    shot(page, "console")
    # On a phone: the board stacks under the map, nothing overlaps or overflows.
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, locale="zh-CN", is_mobile=True, has_touch=True
    )
    small = phone.new_page()
    login(small, base, tokens["dispatcher"], next_path="/console")
    small.locator(".incident").first.wait_for(timeout=10_000)
    small.wait_for_timeout(500)
    no_overlap(small, ["header.bar", "#map", ".incident"])
    shot(small, "console-phone")
    phone.close()
    # A paired volunteer accepts through the API: the card turns without a reload.
    with httpx.Client(base_url=base, timeout=10) as http:
        incident = http.get(f"/api/v1/incidents/{incident_id}", headers=staff).json()
        paired = next(r["volunteer_id"] for r in incident["responders"] if r["kind"] == "paired")
        vh = {"Authorization": f"Bearer {tokens['volunteers'][str(paired)]['token']}"}
        assert http.post(f"/api/v1/incidents/{incident_id}/ack", headers=vh).status_code == 200
        page.locator(
            f".incident[data-incident-id='{incident_id}'][data-status=acknowledged]"
        ).wait_for(timeout=10_000)
        # The timeline says who accepted, by name, in words: no "volunteer:66 · api".
        name = next(r["name"] for r in incident["responders"] if r["volunteer_id"] == paired)
        accepted = page.locator("#timeline li[data-type=accepted]")
        accepted.wait_for(timeout=10_000)
        assert "接单" in accepted.inner_text() and name in accepted.inner_text()
        in_words(page)
        # Riding over: a shared location next to her puts the volunteer on site.
        where = http.get(f"/api/v1/elders/{incident['elder_id']}/position", headers=staff).json()
        r = http.post(
            f"/api/v1/volunteers/{paired}/location",
            json={"lat": where["lat"], "lon": where["lon"], "acc": 5},
            headers=vh,
        )
        assert r.status_code == 200
        page.locator(f".incident[data-incident-id='{incident_id}'][data-status=on_site]").wait_for(
            timeout=10_000
        )
    # The dispatcher resolves it in the page, with the outcome picked before the refreshes.
    assert page.input_value("#outcome") == "found_injured"
    page.click("#resolve")
    page.locator("#detail-status.resolved").wait_for(timeout=10_000)
    assert page.locator(f".incident[data-incident-id='{incident_id}']").count() == 0
    with httpx.Client(base_url=base, timeout=10) as http:
        closed = http.get(f"/api/v1/incidents/{incident_id}", headers=staff).json()
    assert closed["status"] == "resolved" and closed["outcome"] == "found_injured"
    # English on one click: the detail panel too, not only the static labels.
    page.click("#lang")
    page.locator("#detail h4", has_text="Responders").wait_for()
    assert "Found injured" in page.inner_text("#detail")
    accepted_en = page.inner_text("#timeline li[data-type=accepted]")
    assert "Accepted" in accepted_en and name in accepted_en, accepted_en
    assert "Resolved" in page.inner_text("#timeline li[data-type=resolved]")
    in_words(page)
    assert next(e for e in closed["timeline"] if e["type"] == "resolved")["channel"] == "api"
    # The watchdog's "degraded" event shows as a banner (written as the watchdog writes it).
    runtime = json.loads((Path(tokens["_dir"]) / "runtime.json").read_text())
    client = redis.Redis.from_url(runtime["redis_url"], decode_responses=True)
    client.xadd(
        "hw:{feed}:stream",
        {
            "type": "system",
            "incident_id": "",
            "elder_id": "",
            "version": "",
            "data": json.dumps(
                {"status": "degraded", "problems": ["ticker: no heartbeat for 20 s"]}
            ),
        },
    )
    client.close()
    page.locator("#degraded:not(.hidden)").wait_for(timeout=10_000)
    assert "ticker" in page.locator("#degraded").inner_text()
    assert not errors, errors
    context.close()
