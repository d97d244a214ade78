"""The console's report view in a real browser: the 3/10 figures as SVG charts, real or drill.

Two missing reports on the real app with a controlled clock: one answered in 60 s by an
unteamed volunteer, one in 250 s by a team member; both closed after the 10 minutes. The
report page draws compliance bars overall / by trigger / by team, a histogram of respond
times against the 3-minute line, and asks for `?drill=true` when switched to drills.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from locator.core.auth import Role
from tests.browser import login
from tests.factories import elder_body, volunteer_body
from tests.test_pages_people import Site, browser, mint, north, running_site

__all__ = ["browser"]  # the module-scoped Playwright fixture


@pytest.fixture
def site(redis_url: str, mqtt_url: str, tmp_path: Path) -> Iterator[Site]:
    with running_site(redis_url, mqtt_url, tmp_path) as running:
        running.tokens["dispatcher"] = mint(redis_url, Role.DISPATCHER, "d1")
        yield running


def incidents_with_answers(site: Site) -> None:
    http, admin, staff = site.http, site.as_("admin"), site.as_("dispatcher")
    vids = []
    for n in (1, 2):
        vid = http.post("/api/v1/volunteers", json=volunteer_body(n), headers=admin).json()["id"]
        http.post(
            f"/api/v1/volunteers/{vid}/location", json={**north(100 * n), "acc": 10}, headers=admin
        ).raise_for_status()
        vids.append(int(vid))
    team = {"name": "海宁救援队", "members": [{"volunteer_id": vids[1], "role": "lead"}]}
    assert http.post("/api/v1/teams", json=team, headers=admin).status_code == 201
    for n, (vid, answer_after) in enumerate(zip(vids, (60, 250), strict=True)):
        elder = http.post(
            "/api/v1/elders", json=elder_body(f"老人{n}"), headers=site.as_("guardian_a")
        )
        assert elder.status_code == 201, elder.text
        report = http.post(
            "/api/v1/incidents",
            json={"elder_id": elder.json()["id"], "note": "", "last_seen_at": north(50)},
            headers=site.as_("guardian_a"),
        )
        assert report.status_code == 201, report.text
        url = f"/api/v1/incidents/{report.json()['id']}"
        site.clock.advance(answer_after)
        volunteer = {"Authorization": f"Bearer {mint(site.redis_url, Role.VOLUNTEER, str(vid))}"}
        assert http.post(f"{url}/ack", headers=volunteer).status_code == 200
        site.clock.advance(700)  # nobody on site within the 10 minutes
        closed = http.post(
            f"{url}/resolve", json={"outcome": "found_safe", "note": ""}, headers=staff
        )
        assert closed.status_code == 200, closed.text
    # A drill, kept out of the real report and drawn in the drill view.
    drill = http.post(
        "/api/v1/incidents", json={"elder_id": elder.json()["id"], "drill": True}, headers=staff
    )
    assert drill.status_code == 201, drill.text


def test_report_view_draws_compliance_and_respond_times_as_charts(site: Site, browser: Any) -> None:
    incidents_with_answers(site)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, site.url, site.tokens["dispatcher"], next_path="/console")
    page.wait_for_url(re.compile(r".*/console$"))
    # report.js labels its button once its listeners are on: click only after that.
    page.wait_for_function("() => document.getElementById('report-toggle').textContent === '报告'")
    with page.expect_request(re.compile(r".*/reports/sla\?drill=false$")):
        page.click("#report-toggle")
    chart = page.locator("svg.chart.compliance")
    chart.wait_for()
    assert page.locator("#map").is_hidden()
    # Four groups (all, the trigger, the team, no team), a respond and an on-site bar each.
    labels = chart.locator("text.label").all_text_contents()
    assert labels == ["全部", "家属报告走失", "无救援队", "海宁救援队"]
    respond = chart.locator("rect.bar.respond")
    onsite = chart.locator("rect.bar.onsite")
    assert respond.count() == 4 and onsite.count() == 4
    values = [respond.nth(i).get_attribute("data-value") for i in range(4)]
    assert values == ["50", "50", "100", "0"]  # 60 s met; 250 s (the team's) not
    assert [onsite.nth(i).get_attribute("data-value") for i in range(4)] == ["0"] * 4
    # The all-group's 50 % bar is half as tall as the no-team group's 100 %.
    heights = [float(respond.nth(i).get_attribute("height") or 0) for i in (0, 2)]
    assert heights[0] == pytest.approx(heights[1] / 2)
    # Respond times: 30 s bins to 10 min plus one; 60 s and 250 s, the latter past the line.
    hist = page.locator("svg.chart.histogram").first
    bins = hist.locator("rect.bin")
    assert bins.count() == 21
    counts = [int(bins.nth(i).get_attribute("data-count") or 0) for i in range(21)]
    assert counts[2] == 1 and counts[8] == 1 and sum(counts) == 2
    assert "late" in (bins.nth(8).get_attribute("class") or "")
    assert "late" not in (bins.nth(2).get_attribute("class") or "")
    assert hist.locator("line.limit").count() == 1
    assert hist.locator("text.limit-label").text_content() == "3 分钟"
    line_x = float(hist.locator("line.limit").get_attribute("x1") or 0)
    assert (
        float(bins.nth(5).get_attribute("x") or 0)
        < line_x
        < float(bins.nth(6).get_attribute("x") or 0)
    )
    # Per volunteer: both alerted on both incidents, each accepted once.
    assert page.locator("svg.chart.volunteers text.value").all_text_contents() == ["1/2", "1/2"]
    # Drills: the same charts for the drill report.
    with page.expect_request(re.compile(r".*/reports/sla\?drill=true$")):
        page.click("#report-drill")
    page.wait_for_function(
        "() => document.querySelector('#report h2')?.textContent.includes('演练')"
    )
    assert page.get_attribute("#report-drill", "aria-pressed") == "true"
    page.locator("svg.chart.compliance").wait_for()
    # English labels after the language switch; back to the board and its map.
    page.click("#lang")
    page.wait_for_function(
        "() => document.querySelector('#report h2')?.textContent.includes('drills')"
    )
    assert page.locator("svg.chart.compliance text.label").first.text_content() == "All"
    page.click("#report-toggle")
    page.locator("#map").wait_for()
    assert page.locator("#report").is_hidden()
    assert not errors, errors
    context.close()
