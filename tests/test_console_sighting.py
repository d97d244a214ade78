"""The console says "last seen 2 h 05 min ago at …" and its sighting form re-centres the
search and pages the volunteers near the new place, in a real browser on the real app."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from devices import keys as devices_keys
from tests.browser import login
from tests.test_console_actions import district, human, site
from tests.test_pages_people import Site, browser, north

__all__ = ["browser", "site"]  # fixtures


def test_console_shows_last_seen_and_records_a_sighting(site: Site, browser: Any) -> None:
    elder_id, nearby, _ = district(site)
    fix, fix_time = north(50), site.clock.time() - (2 * 3600 + 5 * 60)
    site.client.hset(
        devices_keys.last_position(elder_id),
        mapping={
            "lat": fix["lat"],
            "lon": fix["lon"],
            "tst": str(fix_time),
            "good_lat": fix["lat"],
            "good_lon": fix["lon"],
            "good_acc": "10",
            "good_tst": str(fix_time),
        },
    )
    report = site.http.post(
        "/api/v1/incidents", json={"elder_id": elder_id}, headers=site.as_("guardian_a")
    )
    assert report.status_code == 201, report.text
    url = f"/api/v1/incidents/{report.json()['id']}"
    staff = site.as_("dispatcher")

    def responders() -> set[int]:
        return {
            int(r["volunteer_id"]) for r in site.http.get(url, headers=staff).json()["responders"]
        }

    assert responders() == set(nearby[:3])
    tz = "Asia/Shanghai"
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="zh-CN", timezone_id=tz
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, site.url, site.tokens["dispatcher"], next_path="/console")
    page.wait_for_function(
        "() => (document.getElementById('last-seen') || {}).textContent?.includes('2 小时 05 分')"
    )
    line = page.inner_text("#last-seen")
    assert "手环定位" in line and f"{fix['lat']:.5f}" in line, line
    # A neighbour saw her 1.3 km north ten minutes ago: the dispatcher types it in.
    seen = north(1300)
    when = datetime.fromtimestamp(site.clock.time() - 600, tz=ZoneInfo(tz))
    page.fill("#sighting-lat", f"{seen['lat']:.6f}")
    page.fill("#sighting-lon", f"{seen['lon']:.6f}")
    page.fill("#sighting-time", when.strftime("%Y-%m-%dT%H:%M"))
    page.fill("#sighting-note", "<i>邻居</i>在公交站看到她")
    page.click("#sighting-save")
    page.wait_for_function(
        "() => (document.getElementById('sighting-result') || {}).textContent?.includes('已通知附近志愿者')"
    )
    # Re-centred on the sighting, and the two volunteers near it paged.
    page.wait_for_function(
        "() => (document.getElementById('last-seen') || {}).textContent?.includes('目击')"
    )
    assert f"{seen['lat']:.5f}" in page.inner_text("#last-seen")
    assert responders() == set(nearby)
    item = page.locator("#timeline li[data-type=sighting]")
    item.wait_for()
    # The note is text, never markup.
    assert "<i>邻居</i>在公交站看到她" in item.inner_text()
    assert page.locator("#timeline li[data-type=sighting] i").count() == 0
    human(page)
    assert not errors, errors
    context.close()
