"""End to end: bracelet fixes over MQTT → ingest → zone exit → incident → MQTT pages,
with the alerts worker threads as `homeward ticker` runs them, and the live feed over SSE."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from alerts import keys as alerts_keys
from alerts.incidents import storage
from geofences import keys as geofences_keys
from locator.alerts_loop import EVENTS_TOPIC, start_workers
from locator.app import create_app
from locator.core.clock import ManualClock
from locator.core.mqtt import MqttPublisher
from locator.core.redis import sync_client
from locator.core.settings import load_settings
from tests.alerts_harness import District, build_district, config, north
from tests.browser import LiveServer
from tests.conftest import Api
from tests.ingest_harness import Publisher, RunningIngest, wait_for
from tests.test_ingest import Listener


@dataclass
class Pipeline:
    """The real path from bracelet to pages: broker, ingest, alerts workers (as the ticker
    process runs them), and a listener on every volunteer's push topic."""

    client: redis.Redis
    ingest: RunningIngest
    bracelet: Publisher
    pages: Listener


@pytest.fixture
def pipeline(
    mqtt_url: str, redis_url: str, clock: ManualClock, tmp_path: Path
) -> Iterator[Pipeline]:
    pages = Listener(mqtt_url, "homeward/volunteers/+/alerts")
    client = sync_client(redis_url, process="test")
    publisher = MqttPublisher(mqtt_url, client_id=f"test-alerts-{uuid.uuid4().hex[:6]}")
    stop = threading.Event()
    workers = start_workers(
        client, config(clock), publisher=publisher, stop=stop, data_dir=tmp_path
    )
    ingest = RunningIngest(mqtt_url, redis_url, tmp_path, clock)
    bracelet = Publisher(mqtt_url)
    try:
        yield Pipeline(client, ingest, bracelet, pages)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=5)
        bracelet.close()
        ingest.close()
        pages.close()
        publisher.close()
        client.close()


async def district_with_bracelet(api: Api) -> District:
    d = await build_district(api)
    r = await api.http.post(
        "/api/v1/devices",
        json={"device_id": "b-1", "elder_id": d.elder_id},
        headers=api.auth("dispatcher"),
    )
    assert r.status_code == 201, r.text
    return d


async def test_an_exit_pages_both_paired_volunteers_within_a_second(
    api: Api, mqtt_url: str, clock: ManualClock, pipeline: Pipeline
) -> None:
    d = await district_with_bracelet(api)
    client, ingest, bracelet, pages = (
        pipeline.client,
        pipeline.ingest,
        pipeline.bracelet,
        pipeline.pages,
    )
    events = Listener(mqtt_url, EVENTS_TOPIC)
    try:
        for published, metres in enumerate((0, 0, 300), start=1):
            clock.advance(15)
            bracelet.send(
                "homeward/devices/b-1/up",
                {"_type": "location", **north(metres), "tst": clock.time(), "acc": 10},
            )
            ingest.wait_processed(published)
        assert storage.open_incident_id(client, d.elder_id) is None  # one fix confirms nothing
        clock.advance(15)
        started = time.monotonic()
        bracelet.send(
            "homeward/devices/b-1/up",
            {"_type": "location", **north(320), "tst": clock.time(), "acc": 10},
        )
        pair = {
            f"homeward/volunteers/{d.vid('pair1')}/alerts",
            f"homeward/volunteers/{d.vid('pair2')}/alerts",
        }
        wait_for(lambda: pair <= {t for t, _ in pages.messages}, timeout=5)
        latency = time.monotonic() - started
        assert latency < 1.0, f"paired volunteers paged {latency:.2f} s after the fix"
        incident_id = storage.open_incident_id(client, d.elder_id)
        assert incident_id is not None

        def guardians_sent() -> bool:
            found = storage.load(client, incident_id)
            ids = client.zrange(alerts_keys.incident_attempts(found.elder_id, incident_id), 0, -1)
            docs = [client.hgetall(alerts_keys.attempt(str(a))) for a in ids]
            return {
                d["recipient"]
                for d in docs
                if d["recipient"].startswith("guardian") and d["status"] == "sent"
            } == {"guardian:0", "guardian:1"}

        wait_for(guardians_sent, timeout=5)
        latency = time.monotonic() - started
        assert latency < 1.0, f"guardians notified {latency:.2f} s after the fix"
        log = await api.http.get(
            f"/api/v1/notifications?incident_id={incident_id}", headers=api.auth("dispatcher")
        )
        assert {n["recipient"] for n in log.json()["items"] if n["status"] == "sent"} >= {
            "guardian:0",
            "guardian:1",
        }
        # The integration feed carries the change.
        wait_for(lambda: any(m["incident_id"] == incident_id for _, m in events.messages))
        opened = next(m for _, m in events.messages if m["incident_id"] == incident_id)
        assert opened["status"] == "open" and "opened" in opened["change"]
        # Any client may subscribe to any volunteer's topic: the push says a link went by
        # SMS, and carries none (nor does the integration feed).
        alerts = [m for _, m in pages.messages if m["type"] == "alert"]
        assert alerts and all("[链接已发送]" in m["text"] for m in alerts)
        assert "?t=" not in json.dumps([*pages.messages, *events.messages], ensure_ascii=False)
        # The first accept stands the others down over the same channel.
        pages.messages.clear()
        r = await api.http.post(f"/api/v1/incidents/{incident_id}/ack", headers=d.auth("pair1"))
        assert r.status_code == 200 and r.json()["status"] == "acknowledged"
        wait_for(lambda: len(pages.messages) >= 4)
        assert {m["type"] for _, m in pages.messages} == {"covered"}
        assert f"homeward/volunteers/{d.vid('pair1')}/alerts" not in {t for t, _ in pages.messages}
        wait_for(lambda: any(m.get("status") == "acknowledged" for _, m in events.messages))
        # The elder's bracelet keeps reporting fast while the incident is open.
        assert client.exists(alerts_keys.open_incident(d.elder_id))
    finally:
        events.close()


async def test_the_whole_ladder_through_the_broker_ingest_and_ticker(
    api: Api, clock: ManualClock, pipeline: Pipeline
) -> None:
    """Decline → next nearest; the respond deadline (not before) → team and dispatcher; a
    late accept; a shared location → on site; resolve; a manual report; returned home."""
    from locator.ticker import Ticker

    d = await district_with_bracelet(api)
    client, ingest, bracelet, pages = (
        pipeline.client,
        pipeline.ingest,
        pipeline.bracelet,
        pipeline.pages,
    )
    ticker = Ticker(client, clock=clock, offline_after_s=3600, alerts=config(clock))

    def topic(name: str) -> str:
        return f"homeward/volunteers/{d.vid(name)}/alerts"

    def paged(kind: str) -> set[str]:
        return {t for t, m in pages.messages if m["type"] == kind}

    def walk(*metres: float, every: float = 15) -> None:
        for m in metres:
            clock.advance(every)
            bracelet.send(
                "homeward/devices/b-1/up",
                {"_type": "location", **north(m), "tst": clock.time(), "acc": 10},
            )
            ingest.wait_processed(ingest.processed + 1)

    walk(0, 0, 300, 320)
    wait_for(lambda: {topic("pair1"), topic("near200")} <= paged("alert"), timeout=5)
    incident_id = storage.open_incident_id(client, d.elder_id)
    assert incident_id is not None
    url = f"/api/v1/incidents/{incident_id}"
    # A decline pages the next nearest at once.
    r = await api.http.post(f"{url}/decline", headers=d.auth("near200"))
    assert r.status_code == 200, r.text
    wait_for(lambda: topic("near900") in paged("alert"), timeout=5)
    # Nobody accepts: the team is called at the respond deadline, not a second before.
    clock.advance(179)  # t0 is the confirming fix's time
    ticker.run_once()
    queued = client.zrange(alerts_keys.incident_attempts(d.elder_id, incident_id), 0, -1)
    assert not [a for a in queued if ".respond." in a]  # not queued, so never sent
    clock.advance(1)
    ticker.run_once()
    wait_for(lambda: {topic("lead"), topic("member")} <= paged("team_call"), timeout=5)
    staff = api.auth("dispatcher")
    incident = (await api.http.get(url, headers=staff)).json()
    assert incident["respond_breached"] is True
    notified = await api.http.get(f"/api/v1/notifications?incident_id={incident_id}", headers=staff)
    assert f"dispatcher:{d.dispatcher_id}" in {n["recipient"] for n in notified.json()["items"]}
    # The team member accepts, rides over: the shared location next to her is on site.
    r = await api.http.post(f"{url}/ack", headers=d.auth("member"))
    assert r.json()["status"] == "acknowledged"
    wait_for(lambda: topic("pair1") in paged("covered"), timeout=5)
    r = await api.http.post(
        f"/api/v1/volunteers/{d.vid('member')}/location",
        json={**north(330), "acc": 10},
        headers=d.auth("member"),
    )
    assert r.status_code == 200, r.text
    assert (await api.http.get(url, headers=staff)).json()["status"] == "on_site"
    r = await api.http.post(f"{url}/resolve", json={"outcome": "found_safe"}, headers=staff)
    assert r.json()["status"] == "resolved"
    assert storage.open_incident_id(client, d.elder_id) is None
    # Later the family reports her missing again: one new incident, paged afresh.
    pages.messages.clear()
    r = await api.http.post(
        "/api/v1/incidents",
        json={"elder_id": d.elder_id, "note": "又不见了"},
        headers=api.auth("guardian_a"),
    )
    assert r.status_code == 201, r.text
    manual = r.json()["id"]
    assert manual != incident_id and r.json()["trigger"] == "missing"
    wait_for(lambda: topic("pair2") in paged("alert"), timeout=5)
    # She walks home: everyone stands down, "returned_home" is suggested.
    walk(200, 100, 0, 0)
    wait_for(lambda: topic("pair1") in paged("returned_home"), timeout=5)
    back = (await api.http.get(f"/api/v1/incidents/{manual}", headers=staff)).json()
    assert back["suggested_outcome"] == "returned_home"
    assert {r["state"] for r in back["responders"]} == {"stood_down"}


@pytest.fixture
def server(redis: object, redis_url: str, mqtt_url: str, tmp_path: Path) -> Iterator[str]:
    """The real app on a loopback port (SSE needs a real connection, not ASGITransport)."""
    settings = load_settings(data_dir=tmp_path)
    app = create_app(settings, redis_url=redis_url, mqtt_url=mqtt_url, clock=ManualClock())
    with LiveServer(app) as live:
        yield live.url


def _read_events(response: httpx.Response, count: int) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in current:
                events.append(current)
                if len(events) == count:
                    return events
            current = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        current[name] = value
    return events


async def test_live_feed_over_sse_with_ticket_and_resume(api: Api, server: str) -> None:
    d = await build_district(api)
    with httpx.Client(base_url=server, timeout=10) as http:
        assert http.get("/api/v1/stream?ticket=nope").status_code == 401
        assert http.get("/api/v1/stream").status_code == 401
        ticket = http.post("/api/v1/stream/ticket", headers=api.auth("dispatcher")).json()
        other = http.post("/api/v1/stream/ticket", headers=api.auth("guardian_b")).json()
        with http.stream("GET", ticket["url"]) as staff:
            assert staff.headers["content-type"].startswith("text/event-stream")
            report = {"elder_id": d.elder_id, "note": "没回家"}
            r = http.post("/api/v1/incidents", json=report, headers=api.auth("guardian_a"))
            assert r.status_code == 201, r.text
            incident_id = r.json()["id"]
            r = http.post(f"/api/v1/incidents/{incident_id}/ack", headers=d.auth("pair2"))
            assert r.status_code == 200, r.text
            first, second = _read_events(staff, 2)
            assert json.loads(first["data"])["status"] == "open"
            assert json.loads(second["data"])["status"] == "acknowledged"
            assert first["event"] == "incident"
        headers = {"Last-Event-ID": first["id"]}
        with http.stream("GET", ticket["url"], headers=headers) as resumed:
            [again] = _read_events(resumed, 1)
            assert again["id"] == second["id"]
        # Another family's guardian, replaying the whole feed, sees none of it: the server
        # sends its first keepalive (after reading everything) with no event before it.
        with http.stream("GET", other["url"], headers={"Last-Event-ID": "0-0"}) as fam_b:
            seen = []
            for line in fam_b.iter_lines():
                if line.startswith(": keepalive"):
                    break
                seen.append(line)
            assert not [x for x in seen if x.startswith("data")]
        bad = http.get(ticket["url"], headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 422 and "last-event-id" in bad.text.lower()


async def test_pause_silences_zone_alarms_but_not_sos(
    api: Api, clock: ManualClock, pipeline: Pipeline
) -> None:
    d = await district_with_bracelet(api)
    r = await api.http.put(
        f"/api/v1/elders/{d.elder_id}/pause",
        json={"until": "2026-11-23T10:00:00Z", "reason": "他和我在一起"},
        headers=api.auth("guardian_a"),
    )
    assert r.status_code == 200, r.text
    client, ingest, bracelet = pipeline.client, pipeline.ingest, pipeline.bracelet
    for n, metres in enumerate((0, 400, 500, 600, 700), start=1):
        clock.advance(15)
        bracelet.send(
            "homeward/devices/b-1/up",
            {"_type": "location", **north(metres), "tst": clock.time(), "acc": 10},
        )
        ingest.wait_processed(n)
    # Paused: the engine announced no exit, so there is nothing for alerts to act on.
    assert client.xlen(geofences_keys.elder_transitions(d.elder_id)) == 0
    assert storage.open_incident_id(client, d.elder_id) is None
    clock.advance(15)
    bracelet.send(
        "homeward/devices/b-1/up",
        {"_type": "location", **north(700), "tst": clock.time(), "acc": 10, "alarm": "sos"},
    )
    wait_for(lambda: storage.open_incident_id(client, d.elder_id) is not None, timeout=5)
    incident_id = storage.open_incident_id(client, d.elder_id)
    assert incident_id is not None
    assert storage.load(client, incident_id).fields["trigger"] == "sos"
