"""Stored script in names, in a real browser (Debian chromium) against the real app: an elder
whose name, address, description, medical notes and guardian are script payloads, and a
volunteer named like one, in an open incident. The console, the volunteer page (from the
SMS link), the family portal and the hand-off page show every one of them literally, as
text (tooltips too); nothing runs (``window.__pwned`` stays undefined), every page has the
Content-Security-Policy, and the browser reports no policy violation at all: our own
scripts, styles and Leaflet live within it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devices import keys as devices_keys
from tests import browser as harness
from tests.browser import login
from tests.factories import HAINING, elder_body, volunteer_body
from tests.test_pages_people import PHONE, Site, running_site, sent_link

browser = harness.browser

NAME = '<img src=x onerror="window.__pwned=1">'
ADDRESS = "<script>window.__pwned=2</script>"
DESCRIPTION = '<svg onload="window.__pwned=3">'
MEDICAL = '"><img src=x onerror=window.__pwned=4>'
GUARDIAN = "<img src=x onerror=window.__pwned=5>"
VOLUNTEER = "<img src=x onerror=window.__pwned=6>"
NOTE = "<iframe src=javascript:window.__pwned=7>"

# Runs before any page script: every violation the browser reports is kept for the test.
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(
  [e.violatedDirective, e.blockedURI, e.sourceFile, e.lineNumber, e.sample].join(" | ")));
"""


@pytest.fixture
def site(redis_url: str, mqtt_url: str, tmp_path: Path) -> Iterator[Site]:
    with running_site(redis_url, mqtt_url, tmp_path) as running:
        yield running


def _incident(site: Site) -> tuple[int, int, str]:
    body = elder_body(
        NAME,
        address=ADDRESS,
        description=DESCRIPTION,
        medical_notes=MEDICAL,
        guardians=[{"name": GUARDIAN, "phone": "+8613800138000", "relation": "<b>son</b>"}],
    )
    made = site.http.post("/api/v1/elders", json=body, headers=site.as_("guardian_a"))
    assert made.status_code == 201, made.text
    elder_id = int(made.json()["id"])
    vid = site.http.post(
        "/api/v1/volunteers", json=volunteer_body(1, name=VOLUNTEER), headers=site.as_("admin")
    ).json()["id"]
    site.http.post(
        f"/api/v1/volunteers/{vid}/location",
        json={"lat": HAINING["lat"] + 0.003, "lon": HAINING["lon"], "acc": 10},
        headers=site.as_("admin"),
    ).raise_for_status()
    # Her last fix, as the ingest stores it: the console and the family map draw a marker.
    now = site.clock.time()
    site.client.hset(
        devices_keys.last_position(elder_id),
        mapping={
            **{k: str(v) for k, v in HAINING.items()},
            "acc": "8",
            "src": "gps",
            "tst": str(now),
            "received_ms": str(int(now * 1000)),
        },
    )
    report = site.http.post(
        "/api/v1/incidents",
        json={"elder_id": elder_id, "note": NOTE, "last_seen_at": HAINING},
        headers=site.as_("guardian_a"),
    )
    assert report.status_code == 201, report.text
    incident_id = int(report.json()["id"])
    # The link is only in the SMS; no SMS provider here, so sign it as the SMS channel does.
    link = sent_link(site, incident_id, vid)
    assert link, "no link for the paired volunteer"
    return elder_id, incident_id, link


def _safe(page: Any, answer: Any) -> None:
    """Nothing ran, the page has its policy, and the browser saw no violation of it."""
    assert answer is not None and "script-src 'self'" in answer.headers["content-security-policy"]
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("window.__violations") == []
    assert page.locator("img[src='x'], svg[onload], iframe").count() == 0


def _tooltip(page: Any, selector: str, text: str) -> None:
    """Open a marker's tooltip (Leaflet listens for mouseover) and read it as text."""
    page.locator(selector).first.wait_for(state="attached")
    page.dispatch_event(selector, "mouseover")
    tip = page.locator(".leaflet-tooltip", has_text=text).first
    tip.wait_for(state="attached")
    assert text in (tip.text_content() or "")
    assert page.locator(".leaflet-tooltip img, .leaflet-tooltip svg").count() == 0


def test_names_with_script_are_text_on_every_page(site: Site, browser: Any) -> None:
    elder_id, incident_id, link = _incident(site)
    errors: list[str] = []

    def context(**kw: Any) -> Any:
        made = browser.new_context(locale="zh-CN", **kw)
        made.add_init_script(WATCH)
        return made

    staff = context(viewport={"width": 1280, "height": 800})
    page = staff.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    # The console: board card, detail panel, responders, timeline note, both tooltips.
    login(page, site.url, site.tokens["admin"], next_path="/console")
    page.wait_for_url(re.compile(r".*/console$"))
    card = page.locator(f".incident[data-incident-id='{incident_id}']")
    card.wait_for()
    assert card.locator(".name").text_content() == NAME
    page.locator("#detail:not(.hidden) h3").wait_for()
    assert NAME in (page.locator("#detail h3").text_content() or "")
    page.locator("#responders td", has_text=VOLUNTEER).first.wait_for()
    page.locator("#timeline li", has_text=NOTE).first.wait_for()
    _tooltip(page, "path.elder", NAME)
    _tooltip(page, "path.volunteer", VOLUNTEER)
    _safe(page, page.request.get(f"{site.url}/console"))
    # The police hand-off page, server-rendered: every field escaped.
    answer = page.goto(f"{site.url}/api/v1/incidents/{incident_id}/handoff")
    for text in (NAME, ADDRESS, DESCRIPTION, MEDICAL, GUARDIAN, NOTE):
        assert text in page.inner_text("body"), text
    assert page.locator("table.meta b").text_content() == NAME
    _safe(page, answer)
    # The API docs (vendored Swagger UI) live within the same policy.
    answer = page.goto(f"{site.url}/docs")
    page.locator(".swagger-ui .info").wait_for()
    _safe(page, answer)
    staff.close()

    # The volunteer page, opened from the SMS link on a phone.
    phone = context(viewport=PHONE)
    vpage = phone.new_page()
    vpage.on("pageerror", lambda e: errors.append(str(e)))
    answer = vpage.goto(link)
    vpage.wait_for_function("() => document.getElementById('elder-name').textContent.length > 0")
    assert vpage.locator("#elder-name").text_content() == NAME
    vpage.wait_for_function("() => document.getElementById('description').textContent.length > 0")
    assert vpage.locator("#description").text_content() == DESCRIPTION
    _tooltip(vpage, "path.elder-marker", NAME)
    _safe(vpage, answer)
    # Her alert in the volunteer's list.
    answer = vpage.goto(f"{site.url}/v")
    item = vpage.locator(f"a.alert-link[href='/v/{incident_id}'] b")
    item.wait_for()
    assert item.text_content() == NAME
    _safe(vpage, answer)
    phone.close()

    # The family portal: the list of her family's elders, then her page.
    family = context(viewport=PHONE)
    fpage = family.new_page()
    fpage.on("pageerror", lambda e: errors.append(str(e)))
    login(fpage, site.url, site.tokens["guardian_a"], next_path="/family")
    fpage.wait_for_url(re.compile(r".*/family$"))
    listed = fpage.locator(f"a.elder-link[href='/family/elders/{elder_id}']")
    listed.wait_for()
    assert listed.locator("b").text_content() == NAME
    assert listed.locator("span").text_content() == ADDRESS
    _safe(fpage, fpage.request.get(f"{site.url}/family"))
    answer = fpage.goto(f"{site.url}/family/elders/{elder_id}")
    fpage.wait_for_function("() => document.getElementById('elder-name').textContent.length > 0")
    assert fpage.locator("#elder-name").text_content() == NAME
    assert fpage.locator("#elder-description").text_content() == DESCRIPTION
    fpage.locator("#incidents li[data-status=open]").wait_for()
    _tooltip(fpage, "path.elder-marker", NAME)
    _safe(fpage, answer)
    family.close()
    assert not errors, errors


def test_pages_answer_with_the_policy_over_http(site: Site) -> None:
    """The live server (uvicorn, not only the ASGI app) sends the headers on pages and JSON."""
    page = httpx.get(f"{site.url}/login")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "https://tile.openstreetmap.org" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    data = site.http.get("/api/v1/config")
    assert data.headers["content-security-policy"].startswith("default-src 'none'")
