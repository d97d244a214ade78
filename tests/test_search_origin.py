"""The search area starts from the Point Last Seen *and* the time last seen (issue 20, 1–3).

Real API, real Redis: a missing report without a place whose bracelet last spoke two hours
ago, a later fix, the family's time, a dispatcher's sighting that re-pages once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from alerts.incidents import sightings
from devices import keys as devices_keys
from locator.core import crs
from locator.core.clock import ManualClock, isoformat
from tests.alerts_harness import attempts, build_district, config, consume, exit_event, north
from tests.conftest import Api
from tests.factories import elder_body


@pytest.fixture
def client(alerts_client: redis.Redis) -> redis.Redis:
    return alerts_client


def _iso(epoch: float) -> str:
    return isoformat(datetime.fromtimestamp(epoch, tz=UTC))


def _fix(client: redis.Redis, elder_id: int, point: dict[str, float], tst: float) -> None:
    """Her latest good fix as the ingest script stores it (no course: no heading skew)."""
    client.hset(
        devices_keys.last_position(elder_id),
        mapping={
            "lat": point["lat"],
            "lon": point["lon"],
            "tst": str(tst),
            "order_t": str(tst),
            "received_ms": str(int(tst * 1000)),
            "good_lat": point["lat"],
            "good_lon": point["lon"],
            "good_acc": "10",
            "good_tst": str(tst),
        },
    )


def _rings(area: dict[str, Any]) -> dict[float, dict[str, Any]]:
    return {
        f["properties"]["probability"]: f
        for f in area["features"]
        if f["properties"].get("kind") == "ring"
    }


async def _area(api: Api, incident_id: int) -> dict[str, Any]:
    r = await api.http.get(
        f"/api/v1/incidents/{incident_id}/search-area", headers=api.auth("dispatcher")
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _report(api: Api, body: dict[str, Any]) -> int:
    r = await api.http.post("/api/v1/incidents", json=body, headers=api.auth("guardian_a"))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def test_a_report_without_a_place_starts_from_her_two_hour_old_fix(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    fix_at, fix_time = north(120), clock.time() - 7200
    _fix(client, d.elder_id, fix_at, fix_time)
    incident_id = await _report(api, {"elder_id": d.elder_id, "note": "不见了"})
    area = await _area(api, incident_id)
    origin = area["properties"]["origin"]
    assert origin["source"] == "bracelet_fix" and origin["place"] == "bracelet_fix"
    assert origin["time"] == _iso(fix_time)
    assert origin["at"] == pytest.approx(fix_at, abs=1e-6)
    assert area["properties"]["elapsed_s"] == pytest.approx(7200, abs=1)
    ninety = _rings(area)[0.9]["properties"]
    assert ninety["radius_m"] >= 3700  # two hours on foot: the study's 90% distance
    assert ninety["center"] == pytest.approx(fix_at, abs=1e-6)
    # The police hand-off page says it in words.
    page = await api.http.get(
        f"/api/v1/incidents/{incident_id}/handoff", headers=api.auth("dispatcher")
    )
    assert "2 小时 00 分 / 2 h 00 min" in page.text and "手环定位 bracelet fix" in page.text
    # A later good fix wins: the rings start again from it, small.
    clock.advance(60)
    later = north(1500)
    _fix(client, d.elder_id, later, clock.time() - 30)
    clock.advance(400)  # not live any more: rings
    area = await _area(api, incident_id)
    assert area["properties"]["mode"] == "estimate"
    assert area["properties"]["origin"]["at"] == pytest.approx(later, abs=1e-6)
    assert area["properties"]["origin"]["time"] == _iso(clock.time() - 430)
    assert _rings(area)[0.9]["properties"]["radius_m"] == pytest.approx(1.2 * 430 + 10, abs=0.2)


async def test_an_alarm_searches_from_the_live_bracelet(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    # The confirming fix was taken 20 s before the alarm was confirmed (t0).
    _fix(client, d.elder_id, north(300), clock.time() - 20)
    exit_event(client, d.elder_id, clock)
    consume(client, config(clock))
    r = await api.http.get("/api/v1/incidents", headers=api.auth("dispatcher"))
    area = await _area(api, r.json()["items"][0]["id"])
    assert area["properties"]["mode"] == "live"
    assert area["properties"]["origin"]["source"] == "bracelet_fix"
    assert area["properties"]["origin"]["time"] == _iso(clock.time() - 20)


async def test_the_familys_time_sets_the_rings_and_is_checked(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    now = clock.time()
    for bad, word in (
        (now + 3600, "future"),
        (now - 8 * 86400, "days ago"),
    ):
        r = await api.http.post(
            "/api/v1/incidents",
            json={"elder_id": d.elder_id, "last_seen_time": _iso(bad)},
            headers=api.auth("guardian_a"),
        )
        assert r.status_code == 422, r.text
        detail = r.json()["detail"][0]
        assert detail["loc"] == ["body", "last_seen_time"] and word in detail["msg"]
    seen = north(700)
    # A local time without an offset (14:10 in Haining) is the service's time zone.
    local = datetime.fromtimestamp(now - 5400, tz=ZoneInfo("Asia/Shanghai"))
    incident_id = await _report(
        api,
        {
            "elder_id": d.elder_id,
            "last_seen_at": seen,
            "last_seen_time": local.replace(tzinfo=None).isoformat(),
        },
    )
    origin = (await _area(api, incident_id))["properties"]["origin"]
    assert origin["source"] == "family" and origin["place"] == "family"
    assert origin["time"] == _iso(now - 5400)
    # A place without a time: the rings grow from the report.
    made = await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("guardian_a"))
    assert made.status_code == 201, made.text
    incident_id = await _report(api, {"elder_id": made.json()["id"], "last_seen_at": seen})
    area = await _area(api, incident_id)
    assert area["properties"]["origin"]["source"] == "report"
    assert area["properties"]["elapsed_s"] == 0


async def test_a_sighting_recentres_and_pages_around_it_once(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    _fix(client, d.elder_id, north(0), clock.time() - 3600)
    incident_id = await _report(api, {"elder_id": d.elder_id})
    far = f"volunteer:{d.vid('far2000')}"
    assert far not in {a["recipient"] for a in attempts(client, incident_id).values()}
    clock.advance(120)
    bus_stop, when = north(1800), clock.time() - 600
    url = f"/api/v1/incidents/{incident_id}/sighting"
    body = {"at": bus_stop, "time": _iso(when), "note": "邻居在公交站看到她"}
    # Only dispatch records a sighting (it pages people).
    r = await api.http.post(url, json=body, headers=api.auth("guardian_a"))
    assert r.status_code == 403, r.text
    r = await api.http.post(url, json=body, headers=api.auth("dispatcher"))
    assert r.status_code == 200, r.text
    entry = [e for e in r.json()["timeline"] if e["type"] == "sighting"][-1]
    assert entry["repaged"] is True and entry["note"] == body["note"]
    area = await _area(api, incident_id)
    origin = area["properties"]["origin"]
    assert origin["source"] == "sighting" and origin["time"] == _iso(when)
    assert origin["at"] == pytest.approx(bus_stop, abs=1e-6)
    assert area["properties"]["elapsed_s"] == pytest.approx(600, abs=1)
    # The volunteer 200 m from the bus stop is paged now (an outbox attempt), nobody twice.
    after_first = attempts(client, incident_id)
    new = [a for a in after_first.values() if a["recipient"] == far]
    assert new and new[0]["step"] == "nearby", after_first
    # A second, small correction re-centres but pages nobody.
    clock.advance(60)
    nudged = north(1900)
    r = await api.http.post(
        url, json={**body, "at": nudged, "note": "more exactly"}, headers=api.auth("dispatcher")
    )
    assert r.status_code == 200, r.text
    entry = [e for e in r.json()["timeline"] if e["type"] == "sighting"][-1]
    assert entry["repaged"] is False and entry["reason"] == "near_last_page"
    assert attempts(client, incident_id).keys() == after_first.keys()
    centre = (await _area(api, incident_id))["properties"]["origin"]["at"]
    assert crs.haversine_m(centre["lat"], centre["lon"], nudged["lat"], nudged["lon"]) < 1
    # A far one within ten minutes of the last page: re-centred, not paged again.
    r = await api.http.post(url, json={**body, "at": north(3500)}, headers=api.auth("dispatcher"))
    assert r.json()["timeline"][-1]["reason"] == "paged_recently"
    assert attempts(client, incident_id).keys() == after_first.keys()
    # A sighting far from home, or in the future, is refused naming the field.
    r = await api.http.post(url, json={**body, "at": north(30_000)}, headers=api.auth("dispatcher"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "at"]
    r = await api.http.post(
        url, json={**body, "time": _iso(clock.time() + 600)}, headers=api.auth("dispatcher")
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "time"]


def test_the_repage_rule() -> None:
    assert sightings.repage_reason(moved_m=900, since_last_s=None, fix_newer=False) == ""
    assert sightings.repage_reason(moved_m=900, since_last_s=601, fix_newer=False) == ""
    assert sightings.repage_reason(moved_m=400, since_last_s=None, fix_newer=False) == (
        "near_last_page"
    )
    assert sightings.repage_reason(moved_m=900, since_last_s=300, fix_newer=False) == (
        "paged_recently"
    )
    assert sightings.repage_reason(moved_m=900, since_last_s=None, fix_newer=True) == ("newer_fix")
    assert timedelta(seconds=sightings.REPAGE_EVERY_S) == timedelta(minutes=10)
