"""The family portal's privacy card in a real browser (Debian chromium): her access log
shows the guardian's own read, the export downloads her data as JSON, and deleting her asks
for her name first (cancelling keeps her, confirming removes her from the list)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import browser as harness
from tests.browser import login, shot
from tests.factories import HAINING
from tests.test_pages_people import PHONE, Site, running_site

browser = harness.browser  # Debian's chromium, per module


@pytest.fixture
def site(redis_url: str, mqtt_url: str, tmp_path: Path) -> Iterator[Site]:
    with running_site(redis_url, mqtt_url, tmp_path) as running:
        yield running


def test_family_sees_who_read_her_data_exports_it_and_deletes_her_after_typing_her_name(
    site: Site, browser: Any
) -> None:
    body = {
        "name": "林奶奶",
        "home": HAINING,
        "medical_notes": "阿尔茨海默病",
        "guardians": [{"name": "林涛", "phone": "+8613800138077", "relation": "son"}],
    }
    made = site.http.post("/api/v1/elders", json=body, headers=site.as_("guardian_a"))
    assert made.status_code == 201, made.text
    elder_id = made.json()["id"]
    other = site.http.post(
        "/api/v1/elders", json={**body, "name": "林爷爷"}, headers=site.as_("guardian_a")
    ).json()
    context = browser.new_context(viewport=PHONE, locale="en-US")
    page = context.new_page()
    page.add_init_script("localStorage.setItem('hw.locale', 'en')")
    login(page, site.url, site.tokens["guardian_a"], next_path=f"/family/elders/{elder_id}")
    page.wait_for_url(f"**/family/elders/{elder_id}")

    # Her log lists this page's own read of her record: "You · read her record", as text.
    own_read = "#access-log li.access[data-action='record.read'][data-role='guardian']"
    page.wait_for_selector(own_read)
    assert "You" in page.text_content(own_read) and "read her record" in page.text_content(own_read)
    assert page.locator("#access-log li[data-action='record.create']").count() == 1
    assert page.locator("#access-log script, #access-log img").count() == 0

    # Export: a JSON file with everything about her, and the export shows in the log.
    with page.expect_download() as download:
        page.click("#export")
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["record"]["name"] == "林奶奶"
    assert exported["guardians"][0]["phone"] == "+8613800138077"
    page.wait_for_selector("#access-log li.access[data-action='export']")
    shot(page, "family-privacy")

    # Delete: a confirmation; cancelling keeps her.
    page.click("#erase")
    page.wait_for_selector("#erase-confirm:not(.hidden)")
    assert "林奶奶" in page.text_content("#erase-text")
    assert page.is_disabled("#erase-yes")
    page.click("#erase-no")
    page.wait_for_selector("#erase-confirm", state="hidden")
    kept = site.http.get(f"/api/v1/elders/{elder_id}", headers=site.as_("guardian_a"))
    assert kept.status_code == 200
    # A wrong name does not arm the button; her name does, and she is gone from the list.
    page.click("#erase")
    page.fill("#erase-name", "林爷爷")
    assert page.is_disabled("#erase-yes")
    page.fill("#erase-name", "林奶奶")
    assert page.is_enabled("#erase-yes")
    page.click("#erase-yes")
    page.wait_for_url("**/family")
    page.wait_for_selector("#elders a.elder-link")
    names = page.locator("#elders a.elder-link b").all_text_contents()
    assert names == ["林爷爷"], names
    assert "deleted" in page.text_content("#status-line")
    gone = site.http.get(f"/api/v1/elders/{elder_id}", headers=site.as_("guardian_a"))
    assert gone.status_code == 404
    assert site.http.get(f"/api/v1/elders/{other['id']}", headers=site.as_("guardian_a")).is_success
    context.close()
