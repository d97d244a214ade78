"""The console's actions and countdown colours in a real browser, on the real app with a
controlled server clock: amber in the last minute, red once breached; notify more, call the
team, the hand-off pack, track replay, cancel; the detail in names and words, never ids.
(The live story is in test_console.py.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alerts import keys as alerts_keys
from devices import keys as devices_keys
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


def district(site: Site) -> tuple[int, list[int], list[int]]:
    """An elder with a zone, five volunteers 100–500 m north, a team of two (far away)."""
    http, admin = site.http, site.as_("admin")
    elder = http.post("/api/v1/elders", json=elder_body(), headers=site.as_("guardian_a"))
    assert elder.status_code == 201, elder.text
    elder_id = int(elder.json()["id"])
    zone = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [north(0)["lon"], north(0)["lat"]]},
        "properties": {"kind": "safe", "radius_m": 150},
    }
    made = http.post(f"/api/v1/elders/{elder_id}/zones", json=zone, headers=site.as_("guardian_a"))
    assert made.status_code == 201, made.text
    nearby = []
    for n in range(1, 6):
        vid = http.post("/api/v1/volunteers", json=volunteer_body(n), headers=admin).json()["id"]
        http.post(
            f"/api/v1/volunteers/{vid}/location", json={**north(100 * n), "acc": 10}, headers=admin
        ).raise_for_status()
        nearby.append(int(vid))
    team = [
        int(http.post("/api/v1/volunteers", json=volunteer_body(n), headers=admin).json()["id"])
        for n in (6, 7)
    ]
    body = {
        "name": "海宁救援队",
        "members": [
            {"volunteer_id": team[0], "role": "lead"},
            {"volunteer_id": team[1], "role": "member"},
        ],
    }
    assert http.post("/api/v1/teams", json=body, headers=admin).status_code == 201
    return elder_id, nearby, team


def end_y(path_d: str) -> float:
    """The y of the last point of an SVG path ("M430 494L430 372" → 372)."""
    return float(re.findall(r"-?\d+(?:\.\d+)?", path_d)[-1])


def colour(page: Any) -> str:
    el = page.locator(".incident .countdown.respond").first
    el.wait_for()
    return next(c for c in ("ok", "amber", "red") if c in (el.get_attribute("class") or ""))


def test_countdown_colours_and_every_action(site: Site, browser: Any) -> None:
    elder_id, nearby, team = district(site)
    # Her last hour, for the replay: six fixes walking north.
    start = site.clock.time()
    for n in range(6):
        point, tst = north(50 * n), start - 3000 + 300 * n
        site.client.xadd(
            devices_keys.track(elder_id, "b-1"),
            {
                "tst": str(tst),
                "lat": str(point["lat"]),
                "lon": str(point["lon"]),
                "acc": "10",
                "flags": "",
                "received_ms": str(round(tst * 1000)),
            },
            id=f"{round(tst * 1000)}-0",  # stream ids are arrival times, as the ingest writes
        )
    site.client.sadd(devices_keys.elder_track_devices(elder_id), "b-1")
    report = site.http.post(
        "/api/v1/incidents",
        json={"elder_id": elder_id, "note": "在菜场走散", "last_seen_at": north(250)},
        headers=site.as_("guardian_a"),
    )
    assert report.status_code == 201, report.text
    incident_id = report.json()["id"]
    url = f"/api/v1/incidents/{incident_id}"
    staff = site.as_("dispatcher")

    def responders() -> set[int]:
        got = site.http.get(url, headers=staff).json()["responders"]
        return {int(r["volunteer_id"]) for r in got}

    assert responders() == set(nearby[:3])  # the 3 nearest within 1 km
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, site.url, site.tokens["dispatcher"], next_path="/console")
    page.locator("#detail:not(.hidden)").wait_for()
    assert colour(page) == "ok"
    # The server's clock, not the browser's, decides: 50 s left is amber, past it red.
    site.clock.advance(130)
    page.reload()
    assert colour(page) == "amber"
    site.clock.advance(60)
    page.reload()
    assert colour(page) == "red"
    assert "超时" in page.inner_text(".incident .countdown.respond")
    # Notify more: the two volunteers not yet alerted; then the team.
    page.click("#notify-more")
    page.wait_for_function("() => document.querySelectorAll('#responders tr').length === 5")
    assert responders() == set(nearby)
    page.click("#call-team")
    page.wait_for_function("() => document.querySelectorAll('#responders tr').length === 7")
    assert responders() == set(nearby) | set(team)
    paged = page.locator("#timeline li[data-type=dispatcher_paged]")
    paged.last.wait_for()
    assert "调度员 · 调度台" in paged.last.inner_text() and "呼叫救援队" in paged.last.inner_text()
    human(page)
    # The hand-off pack opens with the session cookie.
    href = page.get_attribute("#handoff", "href")
    assert href == f"{url}/handoff"
    handoff = context.request.get(site.url + href)
    assert handoff.status == 200 and "张阿婆" in handoff.text()
    # Track replay: the slider walks her track back and forth.
    page.click("#replay")
    page.locator("path.track").wait_for(state="attached")
    assert page.get_attribute("#replay-slider", "max") == "6"
    full = page.get_attribute("path.track", "d") or ""
    page.locator("#replay-slider").fill("2")
    shorter = page.get_attribute("path.track", "d") or ""
    # Her path runs due north (Leaflet draws it as one segment): the shorter replay ends
    # further south, lower on the screen.
    assert end_y(shorter) > end_y(full)
    # Cancel, after the confirm dialog.
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    page.locator("#detail-status.cancelled").wait_for()
    assert site.http.get(url, headers=staff).json()["status"] == "cancelled"
    assert page.locator(".incident").count() == 0
    assert not errors, errors
    context.close()


RAW = re.compile(r"volunteer:\d+|guardian:|dispatcher:| · api\b|_")


def human(page: Any) -> str:
    """The detail panel's text, with no raw ids, channel codes or snake_case left in it."""
    text = str(page.inner_text("#detail"))
    assert not RAW.search(text), RAW.findall(text)
    return text


def entry(page: Any, kind: str) -> str:
    return str(page.inner_text(f"#timeline li[data-type={kind}]"))


def test_the_detail_names_people_and_says_what_happened(site: Site, browser: Any) -> None:
    elder_id, nearby, _ = district(site)
    report = site.http.post(
        "/api/v1/incidents",
        json={"elder_id": elder_id, "note": "<b>穿蓝外套</b>", "last_seen_at": north(250)},
        headers=site.as_("guardian_a"),
    )
    assert report.status_code == 201, report.text
    incident_id = report.json()["id"]
    url = f"/api/v1/incidents/{incident_id}"
    # The nearest volunteer accepts, through the volunteer page's API.
    volunteer = {"Authorization": f"Bearer {mint(site.redis_url, Role.VOLUNTEER, str(nearby[0]))}"}
    assert site.http.post(f"{url}/ack", headers=volunteer).status_code == 200
    # What the outbox and the SMS answers record, as they record it.
    attempts = [
        str(a)
        for a in site.client.zrange(alerts_keys.incident_attempts(elder_id, incident_id), 0, -1)
    ]
    guardian = next(
        a for a in attempts if site.client.hget(alerts_keys.attempt(a), "recipient") == "guardian:0"
    )
    site.client.hset(
        alerts_keys.attempt(guardian),
        mapping={"status": "failed", "error": "twilio 21211: invalid number"},
    )
    volunteer_attempt = next(
        a
        for a in attempts
        if site.client.hget(alerts_keys.attempt(a), "recipient") == f"volunteer:{nearby[1]}"
    )
    site.client.hset(
        alerts_keys.attempt(volunteer_attempt),
        mapping={"status": "sent", "error": "recorded in the notifications log"},
    )
    at = site.http.get(url, headers=site.as_("dispatcher")).json()["timeline"][0]["at"]
    for made_up in (
        {
            "type": "note",
            "text": "guardian +8613800138000 says safe (SMS)",
            "actor": "guardian:+8613800138000",
            "channel": "sms",
        },
        {"type": "drone_launched", "actor": "system", "channel": "drone_link"},
    ):
        site.client.rpush(
            alerts_keys.incident_timeline(elder_id, incident_id), json.dumps({"at": at, **made_up})
        )
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, site.url, site.tokens["dispatcher"], next_path="/console")
    page.locator("#timeline li[data-type=accepted]").wait_for()
    # Names come in after their look-ups: the guardian's from her elder's record.
    page.locator("#notifications td", has_text="李明").first.wait_for()
    human(page)
    accepted = entry(page, "accepted")
    assert "接单" in accepted and "志愿者1" in accepted and "网页/App" in accepted, accepted
    opened = entry(page, "opened")
    # Her family's note is text, never markup; the trigger, who and how are in words.
    assert "家属报告走失" in opened and "<b>穿蓝外套</b>" in opened, opened
    assert "家属 · 网页/App" in opened, opened
    assert page.locator("#timeline b", has_text="穿蓝外套").count() == 0
    notified = page.locator("#timeline li[data-type=notified]").first.inner_text()
    assert "志愿者1、志愿者2、志愿者3" in notified and "首轮" in notified, notified
    note = entry(page, "note")
    assert "家属 李明短信回复平安" in note and note.count("李明") == 1, note
    # A type this page does not know yet reads as words, never breaks the panel.
    assert "Drone launched 系统 · drone link" in entry(page, "drone_launched")
    row = page.locator("#notifications tr", has_text="家属 李明").first.inner_text()
    assert "记录" in row, row  # the log channel (no SMS provider in tests)
    assert "失败" in row and "号码无效" in row, row
    assert page.locator("#notifications td", has_text="已记入通知日志").count() >= 1
    assert page.locator("#log td", has_text="家属 李明").count() >= 1  # the log across incidents
    # In English on one click: the same details, in English, still no raw ids.
    page.click("#lang")
    page.locator("#detail h4", has_text="Timeline").wait_for()
    text = human(page)
    accepted = entry(page, "accepted")
    assert "Accepted" in accepted and "志愿者1" in accepted and "web/app" in accepted, accepted
    assert "Reported missing" in entry(page, "opened")
    assert 'Guardian 李明 replied "safe" by SMS' in entry(page, "note")
    assert "invalid number" in text and "failed" in text and "twilio" not in text.lower()
    assert "recorded in the log" in text
    log = str(page.inner_text("#log"))
    assert not RAW.search(log), RAW.findall(log)
    assert not errors, errors
    context.close()


@pytest.mark.parametrize(
    "next_path",
    ["//evil.example/x", "/%09/evil.example", "/%5Cevil.example", "javascript:alert(1)"],
)
def test_login_never_follows_next_off_the_site(site: Site, browser: Any, next_path: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{site.url}/login?next={next_path}")
        page.fill("#token", site.tokens["dispatcher"])
        page.click("button[type=submit]")
        page.wait_for_load_state()
        page.wait_for_function("() => location.pathname !== '/login'")
        assert page.url.startswith(site.url), page.url
    finally:
        context.close()
