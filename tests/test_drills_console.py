"""The console's drills in a real browser: "start drill" (now, unannounced; and scheduled),
the drill marked 演练 on the board and in the detail, the real incident beside it unmarked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alerts.incidents import drills
from locator.core.auth import Role
from tests.browser import login
from tests.test_console_actions import district
from tests.test_pages_people import Site, browser, mint, north, running_site

__all__ = ["browser"]  # the module-scoped Playwright fixture


@pytest.fixture
def site(redis_url: str, mqtt_url: str, tmp_path: Path) -> Iterator[Site]:
    with running_site(redis_url, mqtt_url, tmp_path) as running:
        running.tokens["dispatcher"] = mint(redis_url, Role.DISPATCHER, "d1")
        yield running


def test_start_a_drill_and_see_it_marked(site: Site, browser: Any) -> None:
    elder_id, _, _ = district(site)
    real = site.http.post(
        "/api/v1/incidents",
        json={"elder_id": elder_id, "last_seen_at": north(250)},
        headers=site.as_("guardian_a"),
    )
    assert real.status_code == 201, real.text
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, site.url, site.tokens["dispatcher"], next_path="/console")
    page.locator(".incident").first.wait_for()
    assert page.locator(".incident .pill.drill:not(.hidden)").count() == 0
    page.select_option("#drill-elder", str(elder_id))
    page.check("#drill-unannounced")
    page.click("#start-drill")
    page.locator("#drill-result", has_text="演练已开始").wait_for()
    # Two cards now: the drill's dashed and marked 演练, the real one not.
    marked = page.locator(".incident.drill")
    marked.wait_for()
    assert page.locator(".incident").count() == 2
    assert marked.locator(".pill.drill").inner_text() == "演练"
    assert page.locator(".incident:not(.drill) .pill.drill.hidden").count() == 1
    drill_id = drills.drill_id(site.client, elder_id)
    assert drill_id is not None and drill_id != real.json()["id"]
    assert (
        site.http.get(f"/api/v1/incidents/{drill_id}", headers=site.as_("dispatcher")).json()[
            "drill_announced"
        ]
        is False
    )
    page.locator("#detail-drill", has_text="演练").wait_for()  # the drill's detail
    # Another drill for her, later: scheduled, not started.
    page.fill("#drill-start-at", "2030-01-01T10:00")
    page.uncheck("#drill-unannounced")
    page.click("#start-drill")
    page.locator("#drill-result", has_text="演练已排期").wait_for()
    assert page.locator(".incident").count() == 2
    assert not errors, errors
    context.close()
