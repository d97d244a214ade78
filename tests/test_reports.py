"""Search area, SLA report, police hand-off and watching the watcher (issue "Alerts III")."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import pytest
import redis

from alerts import keys as alerts_keys
from alerts import search_area
from alerts.incidents import service as incidents
from alerts.incidents import storage
from devices import keys as devices_keys
from geofences import keys as geofences_keys
from locator.core import keys, timers
from locator.core.auth import Principal, Role
from locator.core.clock import ManualClock
from locator.ticker import Ticker
from tests.alerts_harness import (
    build_district,
    config,
    consume,
    device_event,
    exit_event,
    north,
)
from tests.conftest import Api


@pytest.fixture
def client(alerts_client: redis.Redis) -> redis.Redis:
    return alerts_client


def test_rings_follow_the_brief_at_0_10_30_60_minutes() -> None:
    radii = {
        minutes: [r.radius_m for r in search_area.rings(minutes * 60)]
        for minutes in (0, 10, 30, 60)
    }
    # 1.2 m/s walking, capped by Grampian 0.7 / 1.2 / 2.0 / 3.7 / 5.8 km.
    assert radii[0] == [0, 0, 0, 0, 0]
    assert radii[10] == [700, 720, 720, 720, 720]
    assert radii[30] == [700, 1200, 2000, 2160, 2160]
    assert radii[60] == [700, 1200, 2000, 3700, 4320]
    assert [r.probability for r in search_area.rings(600)] == [0.5, 0.7, 0.8, 0.9, 0.95]
    assert [r.capped_by for r in search_area.rings(1800)] == [
        "study",
        "study",
        "study",
        "walking",
        "walking",
    ]
    assert search_area.typical_reach_m(600) == 480  # 0.8 m/s
    assert search_area.rings(600, accuracy_m=25)[0].radius_m == 725


def test_rings_lean_along_the_heading() -> None:
    area = search_area.area(
        lat=30.5, lon=120.7, accuracy_m=0, elapsed_s=1800, heading_deg=90, live=False
    )
    ring = area["features"][3]  # the 80% ring, 2 km
    centre = ring["properties"]["center"]
    assert centre["lon"] > 120.7 and abs(centre["lat"] - 30.5) < 1e-4  # pushed east
    assert ring["properties"]["shift_m"] == pytest.approx(700, abs=1)
    # The last fix stays inside every ring.
    assert all(
        f["properties"]["shift_m"] < f["properties"]["radius_m"] for f in area["features"][1:]
    )


async def test_search_area_is_live_while_reporting_then_rings(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    start = clock.time()
    near, far = north(280), north(300)
    client.hset(
        devices_keys.last_position(d.elder_id),
        mapping={
            "lat": far["lat"],
            "lon": far["lon"],
            "acc": "12",
            "tst": str(start),
            "order_t": str(start),
            "received_ms": str(int(start * 1000)),
            "device_id": "b-1",
            "good_lat": far["lat"],
            "good_lon": far["lon"],
            "good_acc": "12",
            "good_tst": str(start),
        },
    )
    for point, t in ((near, start - 60), (far, start)):
        client.xadd(
            devices_keys.track(d.elder_id, "b-1"),
            {
                "tst": str(t),
                "lat": str(point["lat"]),
                "lon": str(point["lon"]),
                "acc": "12",
                "flags": "",
            },
        )
    exit_event(client, d.elder_id, clock)
    consume(client, config(clock))
    incident_id = storage.open_incident_id(client, d.elder_id)
    url = f"/api/v1/incidents/{incident_id}/search-area"
    live = (await api.http.get(url, headers=api.auth("dispatcher"))).json()
    assert live["properties"]["mode"] == "live"
    assert live["features"][1]["properties"]["radius_m"] == 12
    clock.advance(600)  # ten minutes without a fix
    rings = (await api.http.get(url, headers=api.auth("guardian_a"))).json()
    assert rings["properties"]["mode"] == "estimate"
    assert rings["properties"]["heading_deg"] == pytest.approx(0, abs=1)  # she walked north
    assert [f["properties"]["radius_m"] for f in rings["features"][1:]] == [712, 732, 732, 732, 732]
    assert (await api.http.get(url, headers=api.auth("guardian_b"))).status_code == 403


async def test_a_missing_report_is_searched_from_its_place_until_the_bracelet_says_more(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    old = north(50)
    client.hset(
        devices_keys.last_position(d.elder_id),
        mapping={
            "good_lat": old["lat"],
            "good_lon": old["lon"],
            "good_acc": "10",
            "good_tst": str(clock.time() - 3600),
            "device_id": "b-1",
        },
    )
    seen = north(900)
    r = await api.http.post(
        "/api/v1/incidents",
        json={"elder_id": d.elder_id, "note": "在公交站走散", "last_seen_at": seen},
        headers=api.auth("guardian_a"),
    )
    assert r.status_code == 201, r.text
    url = f"/api/v1/incidents/{r.json()['id']}/search-area"
    area = (await api.http.get(url, headers=api.auth("dispatcher"))).json()
    assert area["properties"]["mode"] == "estimate"  # the hour-old fix says nothing now
    centre = area["features"][0]["geometry"]["coordinates"]
    assert centre == pytest.approx([seen["lon"], seen["lat"]], abs=1e-6)
    # The bracelet reports again after the report: that fix is where to look.
    clock.advance(60)
    now_at = north(1000)
    client.hset(
        devices_keys.last_position(d.elder_id),
        mapping={
            "good_lat": now_at["lat"],
            "good_lon": now_at["lon"],
            "good_acc": "15",
            "good_tst": str(clock.time()),
            "order_t": str(clock.time()),
            "tst": str(clock.time()),
            "received_ms": str(int(clock.time() * 1000)),
        },
    )
    live = (await api.http.get(url, headers=api.auth("dispatcher"))).json()
    assert live["properties"]["mode"] == "live"
    assert live["features"][0]["geometry"]["coordinates"] == pytest.approx(
        [now_at["lon"], now_at["lat"]], abs=1e-6
    )


def _answer(
    client: redis.Redis,
    clock: ManualClock,
    incident_id: int,
    vid: int,
    action: str,
    channel: str = "api",
) -> None:
    incidents.answer(
        client,
        config(clock),
        caller=Principal(Role.VOLUNTEER, str(vid)),
        incident_id=incident_id,
        action=action,
        channel=channel,
    )


async def seed(api: Api, client: redis.Redis, clock: ManualClock) -> dict[str, int]:
    """Four incidents whose figures are known in advance."""
    d = await build_district(api)
    staff = Principal(Role.DISPATCHER)
    cfg = config(clock)
    # A: exit at 08:00:00; pair1 accepts by SMS at +60 s, arrives at +300 s, resolved +900 s.
    exit_event(client, d.elder_id, clock)
    consume(client, cfg)
    a = storage.open_incident_id(client, d.elder_id)
    assert a is not None
    clock.advance(20)
    _answer(client, clock, a, d.vid("near200"), "decline")
    clock.advance(40)
    _answer(client, clock, a, d.vid("pair1"), "ack", channel="sms")
    clock.advance(240)
    _answer(client, clock, a, d.vid("pair1"), "arrive")
    clock.advance(600)
    incidents.close(
        client, cfg, caller=staff, incident_id=a, status="resolved", outcome="found_safe"
    )
    # B: SOS at 09:00; nobody answers; the team member accepts at +240 s (respond breached),
    # arrives at +700 s (on-site breached); resolved.
    clock.advance(3600 - 900)
    device_event(client, d.elder_id, clock, "sos", metres=500)
    consume(client, cfg)
    b = storage.open_incident_id(client, d.elder_id)
    assert b is not None
    tick = Ticker(client, clock=clock, offline_after_s=1200, alerts=cfg)
    clock.advance(180)
    tick.run_once()
    tick.run_once()  # voice (90 s) and respond (180 s): the team is paged
    clock.advance(60)
    _answer(client, clock, b, d.vid("member"), "ack")
    clock.advance(460)
    _answer(client, clock, b, d.vid("member"), "arrive")
    incidents.close(
        client, cfg, caller=staff, incident_id=b, status="resolved", outcome="found_injured"
    )
    # C: a manual report at 10:00, cancelled a minute later (listed, not counted).
    clock.advance(3600 - 700)
    c, _ = incidents.open_or_join(
        client,
        cfg,
        elder_id=d.elder_id,
        trigger="missing",
        at=None,
        actor="guardian",
        channel="api",
    )
    clock.advance(60)
    incidents.close(client, cfg, caller=staff, incident_id=c, status="cancelled", outcome=None)
    # D: an exit at 11:00, still inside its respond window when the report is made.
    clock.advance(3600 - 60)
    exit_event(client, d.elder_id, clock, metres=330)
    consume(client, cfg)
    dd = storage.open_incident_id(client, d.elder_id)
    assert dd is not None
    clock.advance(30)
    return {"A": a, "B": b, "C": c, "D": dd, **{f"v:{k}": v for k, v in d.volunteers.items()}}


async def test_sla_report_rows_and_aggregates_match_the_timelines(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    ids = await seed(api, client, clock)
    r = await api.http.get(
        "/api/v1/reports/sla?from=2026-11-23T00:00:00Z&to=2026-11-24T00:00:00Z",
        headers=api.auth("dispatcher"),
    )
    assert r.status_code == 200, r.text
    report = r.json()
    rows = {row["incident_id"]: row for row in report["rows"]}
    a, b, c, d = (rows[ids[k]] for k in "ABCD")
    assert (a["trigger"], a["t0"], a["respond_s"], a["onsite_s"]) == (
        "zone_exit",
        "2026-11-23T08:00:00Z",
        60.0,
        300.0,
    )
    assert a["first_accept_by"] == ids["v:pair1"] and a["first_accept_channel"] == "sms"
    assert a["first_accept_at"] == "2026-11-23T08:01:00Z"
    assert a["first_on_site_at"] == "2026-11-23T08:05:00Z"
    assert a["resolved_at"] == "2026-11-23T08:15:00Z" and a["outcome"] == "found_safe"
    assert not a["respond_breached"] and not a["onsite_breached"]
    assert a["team"] is None
    assert (b["trigger"], b["respond_s"], b["onsite_s"]) == ("sos", 240.0, 700.0)
    assert b["respond_breached"] and b["onsite_breached"] and b["team"] == "海宁救援队"
    assert c["status"] == "cancelled" and c["respond_s"] is None
    assert d["respond_sla"] == "pending" and not d["respond_breached"]
    overall = report["overall"]
    assert overall == {
        "incidents": 4,
        "counted": 3,
        "respond_p50_s": 60.0,
        "respond_p90_s": 240.0,
        "onsite_p50_s": 300.0,
        "onsite_p90_s": 700.0,
        "respond_compliance_pct": 50.0,
        "onsite_compliance_pct": 50.0,
    }
    assert report["by_trigger"]["zone_exit"]["incidents"] == 2
    assert report["by_trigger"]["zone_exit"]["respond_compliance_pct"] == 100.0
    assert report["by_trigger"]["sos"]["respond_compliance_pct"] == 0.0
    assert report["by_trigger"]["missing"]["counted"] == 0
    assert report["by_team"]["海宁救援队"]["respond_p50_s"] == 240.0
    volunteers = {v["volunteer_id"]: v for v in report["by_volunteer"]}
    assert volunteers[ids["v:pair1"]] == {
        "volunteer_id": ids["v:pair1"],
        "name": "志愿者1",
        "alerted": 4,
        "accepts": 1,  # A
        "declines": 0,
        "no_answers": 1,  # B: silent past the respond deadline
        "stood_down": 1,  # C: cancelled after a minute, before they answered
        "awaiting": 1,  # D: its 3 minutes are still running
        "answered": 1,
        "accept_p50_s": 60.0,  # A: paged at t0, accepted a minute later
        "accept_p90_s": 60.0,
        "on_site_p50_s": 300.0,  # ... and on site 5 minutes after the page
        "on_site_p90_s": 300.0,
    }
    assert volunteers[ids["v:near200"]]["declines"] == 1
    assert volunteers[ids["v:member"]]["accepts"] == 1
    team = report["by_team"]["海宁救援队"]
    # B: lead and member paged at the respond step (180 s); the member accepted at 240 s and
    # was on site at 700 s: 60 s and 520 s from their own page.
    assert {k: team[k] for k in ("alerted", "answered", "accept_p50_s", "on_site_p50_s")} == {
        "alerted": 2,
        "answered": 1,
        "accept_p50_s": 60.0,
        "on_site_p50_s": 520.0,
    }
    # The same rows as CSV.
    r = await api.http.get("/api/v1/reports/sla?format=csv", headers=api.auth("admin"))
    assert r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert len(table) == 4
    first = next(t for t in table if t["incident_id"] == str(ids["A"]))
    assert (first["respond_s"], first["onsite_s"], first["respond_breached"]) == (
        "60.0",
        "300.0",
        "False",
    )
    # A window that holds only B; families see their own; volunteers none; bad times are 422.
    only_b = await api.http.get(
        "/api/v1/reports/sla?from=2026-11-23T08:30:00Z&to=2026-11-23T09:30:00Z",
        headers=api.auth("dispatcher"),
    )
    assert [row["incident_id"] for row in only_b.json()["rows"]] == [ids["B"]]
    other = await api.http.get("/api/v1/reports/sla", headers=api.auth("guardian_b"))
    assert other.json()["rows"] == []
    bad = await api.http.get("/api/v1/reports/sla?from=yesterday", headers=api.auth("admin"))
    assert bad.status_code == 422 and "from" in bad.text


async def test_handoff_page_has_every_field(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    await api.http.patch(
        f"/api/v1/elders/{d.elder_id}",
        json={"photo_url": "https://example.org/zhang.jpg"},
        headers=api.auth("guardian_a"),
    )
    start = clock.time()
    for n, metres in enumerate((0, 100, 200, 300)):
        point = north(metres)
        client.xadd(
            devices_keys.track(d.elder_id, "b-1"),
            {
                "tst": str(start - 600 + 120 * n),
                "lat": str(point["lat"]),
                "lon": str(point["lon"]),
                "acc": "9",
                "flags": "",
            },
        )
    client.sadd(devices_keys.elder_track_devices(d.elder_id), "b-1")
    last = north(300)
    client.hset(
        devices_keys.last_position(d.elder_id),
        mapping={
            "lat": last["lat"],
            "lon": last["lon"],
            "good_lat": last["lat"],
            "good_lon": last["lon"],
            "good_acc": "9",
            "good_tst": str(start - 240),
            "tst": str(start - 240),
            "order_t": str(start - 240),
            "received_ms": str(int((start - 240) * 1000)),
            "device_id": "b-1",
        },
    )
    exit_event(client, d.elder_id, clock)
    consume(client, config(clock))
    incident_id = storage.open_incident_id(client, d.elder_id)
    url = f"/api/v1/incidents/{incident_id}/handoff"
    r = await api.http.get(url, headers=api.auth("dispatcher"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for expected in (
        "张阿婆",
        "https://example.org/zhang.jpg",
        "灰色外套，拄拐杖",
        "阿尔茨海默病中期",
        "李明",
        "+8613800138000",
        "王芳",
        "海宁市西山社区",
        f"{last['lat']}",
        "<svg",
        "<polyline",
        "50%",
        "95%",
        "opened",
        "notified",
        "zone_exit",
    ):
        assert expected in page, expected
    assert page.count("<tr><td>2026-11-23 15:") >= 4  # four track rows, local time
    assert (await api.http.get(url, headers=api.auth("guardian_b"))).status_code == 403
    assert (await api.http.get(url, headers=d.auth("pair1"))).status_code == 403


async def test_a_stopped_ticker_turns_health_red_and_raises_the_degraded_event(
    api: Api, client: redis.Redis, clock: ManualClock, tmp_path: Path
) -> None:
    ticker = Ticker(client, clock=clock, offline_after_s=1200)
    stop = threading.Event()
    thread = threading.Thread(
        target=ticker.run, args=(stop,), kwargs={"data_dir": tmp_path}, daemon=True
    )
    thread.start()
    try:
        from tests.ingest_harness import wait_for

        wait_for(lambda: client.hexists(keys.HEARTBEATS, "ticker"))
        healthy = await api.http.get("/healthz")
        assert healthy.status_code == 200 and healthy.json()["alerting"] == "ok"
    finally:
        stop.set()
        thread.join(timeout=5)
    clock.advance(10)
    assert (await api.http.get("/healthz")).status_code == 200  # within the threshold
    clock.advance(6)  # 16 s since the last beat: more than 15 s
    sick = await api.http.get("/healthz")
    assert sick.status_code == 503
    assert "ticker: no heartbeat for 16 s" in sick.json()["alerting"]
    events = [f for _, f in client.xrange(alerts_keys.FEED) if f["type"] == "system"]
    assert len(events) == 1 and json.loads(events[0]["data"])["status"] == "degraded"
    await api.http.get("/healthz")
    assert (
        len([f for _, f in client.xrange(alerts_keys.FEED) if f["type"] == "system"]) == 1
    )  # once
    # Overdue timers say the same without any heartbeat to go by.
    client.hdel(keys.HEARTBEATS, "ticker")
    timers.schedule(client, "offline|1|b-1", due=clock.time() - 31)
    body = (await api.http.get("/healthz")).json()
    assert body["status"] == "degraded" and "timers: 1 overdue" in body["alerting"]
    metrics = await api.http.get("/metrics", headers=api.auth("admin"))
    assert "homeward_timers_overdue 1.0" in metrics.text
    assert "homeward_system_degraded 1.0" in metrics.text
    assert 'homeward_open_incidents{sla="awaiting_response"}' in metrics.text
    # Back to normal: one "ok" event follows.
    client.zrem(keys.job_timers("offline|1|b-1"), "offline|1|b-1")
    assert (await api.http.get("/healthz")).status_code == 200
    states = [
        json.loads(f["data"])["status"]
        for _, f in client.xrange(alerts_keys.FEED)
        if f["type"] == "system"
    ]
    assert states == ["degraded", "ok"]


async def test_an_alarm_the_alerts_stage_cannot_handle_stays_pending_and_degrades_health(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    """A poison alarm is never dropped, and never silent: health names it until handled."""
    arrived_ms = round((clock.time() - 40) * 1000)
    client.xadd(
        devices_keys.device_events(0),
        {"type": "sos", "elder_id": "not-a-number"},
        id=f"{arrived_ms}-0",
    )
    assert consume(client, config(clock)) == 0  # the handler failed: not acknowledged
    body = (await api.http.get("/healthz")).json()
    assert body["status"] == "degraded"
    assert "alarms: 1 not handled, oldest 40 s" in body["alerting"]
    metrics = await api.http.get("/metrics", headers=api.auth("admin"))
    assert "homeward_alarms_waiting 1.0" in metrics.text
    assert "homeward_alarms_oldest_seconds 40.0" in metrics.text
    # Acknowledged (an operator handled it by hand): health is green again.
    client.xack(devices_keys.device_events(0), "alerts", f"{arrived_ms}-0")
    assert (await api.http.get("/healthz")).status_code == 200


async def test_back_home_before_any_accept_is_no_breach_and_nobody_failed_to_answer(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    d = await build_district(api)
    cfg = config(clock)
    exit_event(client, d.elder_id, clock)
    consume(client, cfg)
    incident_id = storage.open_incident_id(client, d.elder_id)
    assert incident_id is not None
    zone_id = next(iter(client.hkeys(geofences_keys.zones(d.elder_id))))  # type: ignore[call-overload]
    clock.advance(60)  # home after a minute: everyone stands down
    exit_event(client, d.elder_id, clock, metres=50, kind="zone_enter", zone_id=str(zone_id))
    consume(client, cfg)
    clock.advance(3 * 3600)  # nobody closes it for hours
    r = await api.http.get("/api/v1/reports/sla", headers=api.auth("dispatcher"))
    row = next(x for x in r.json()["rows"] if x["incident_id"] == incident_id)
    assert (row["respond_sla"], row["onsite_sla"]) == ("n/a", "n/a")
    assert not row["respond_breached"] and not row["onsite_breached"]
    pair1 = next(v for v in r.json()["by_volunteer"] if v["volunteer_id"] == d.vid("pair1"))
    assert (pair1["stood_down"], pair1["no_answers"]) == (1, 0)
    assert r.json()["overall"]["respond_compliance_pct"] is None  # nothing decided
