"""Retention run by the ticker, with the clock driven past each limit: tracks and events
(also an unbound bracelet's) after TRACK_RETENTION_S without any new fix, closed incidents'
names, places and texts after INCIDENT_RETENTION_S, the feed after a week, dead letters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from alerts import keys as alerts_keys
from alerts.incidents import service as incidents
from devices import keys as devices_keys
from devices.ingest.batch import Message
from devices.ingest.pipeline import UplinkStore
from locator.core import keys, timers
from locator.core.auth import Principal, Role
from locator.core.clock import ManualClock
from locator.core.redis import sync_client
from locator.retention import EVERY_S, JOB, Retention
from locator.ticker import Ticker
from tests.alerts_harness import config
from tests.conftest import Api
from tests.factories import HAINING, elder_body

DAY = 86400
TRACK_S = 30 * DAY
INCIDENT_S = 180 * DAY
NOTE = "Rn7 by the canal bridge"


@pytest.fixture
def clock() -> ManualClock:
    # Stream ids are the Redis server's clock: the service clock starts at the same time,
    # so the feed's and dead letters' time windows line up with their entry ids.
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def client(redis: object, redis_url: str) -> Iterator[redis.Redis]:
    sync = sync_client(redis_url, process="test")
    yield sync
    sync.close()


def send(store: UplinkStore, clock: ManualClock, device: str, **extra: object) -> None:
    t = clock.time()
    payload = {"_type": "location", **HAINING, "tst": t, "acc": 10, **extra}
    store.process([Message(f"homeward/devices/{device}/up", json.dumps(payload).encode(), t)])


async def register(api: Api, device: str) -> int:
    elder = await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("admin"))
    eid = int(elder.json()["id"])
    r = await api.http.post(
        "/api/v1/devices", json={"device_id": device, "elder_id": eid}, headers=api.auth("admin")
    )
    assert r.status_code == 201, r.text
    return eid


def sweep_at(ticker: Ticker, clock: ManualClock) -> None:
    ran = [job.id for job, result in ticker.run_once() if result == "swept"]
    assert ran == [JOB], "the retention sweep did not run"


async def test_the_ticker_forgets_what_is_past_retention(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    worn = await register(api, "r-1")
    unbound = await register(api, "r-2")
    # No offline checks in the way: only the retention sweep runs on this ticker.
    store = UplinkStore(client, clock=clock, retention_s=TRACK_S, offline_after_s=10 * 365 * DAY)
    cfg = config(clock, channels=frozenset({"log"}))
    ticker = Ticker(
        client,
        clock=clock,
        offline_after_s=1200,
        retention_policy=Retention(track_s=TRACK_S, incident_s=INCIDENT_S),
    )
    send(store, clock, "r-1")
    send(store, clock, "r-1", alarm="sos")  # her events stream, too
    send(store, clock, "r-2")
    store.process([Message("homeward/devices/r-1/up", b"not json", clock.time())])  # dead letter
    r = await api.http.delete("/api/v1/devices/r-2", headers=api.auth("admin"))
    assert r.status_code == 204  # r-2's track now gets no new fix, ever
    incident_id, _ = incidents.open_or_join(
        client,
        cfg,
        elder_id=worn,
        trigger="zone_exit",
        at=(30.5139, 120.6853),
        actor="system",
        channel="geofence",
        note=NOTE,
    )
    incidents.close(
        client,
        cfg,
        caller=Principal(Role.DISPATCHER),
        incident_id=incident_id,
        status="resolved",
        outcome="found_safe",
        note="Rn8 found at the market",
    )
    attempts = [
        str(a) for a in client.zrange(alerts_keys.incident_attempts(worn, incident_id), 0, -1)
    ]
    assert attempts and all(client.hget(alerts_keys.attempt(a), "text") for a in attempts)
    track_1, track_2 = devices_keys.track(worn, "r-1"), devices_keys.track(unbound, "r-2")
    events = devices_keys.elder_events(worn)
    assert client.xlen(track_1) == 2 and client.xlen(track_2) == 1 and client.xlen(events) >= 1
    assert client.xlen(alerts_keys.FEED) > 0 and client.xlen(keys.REJECTED) == 1

    # A day on: nothing is due yet; the sweep runs and comes back a minute later.
    clock.advance(DAY)
    sweep_at(ticker, clock)
    assert timers.due_at(client, JOB) == clock.time() + EVERY_S
    assert client.xlen(track_1) == 2 and client.xlen(track_2) == 1
    assert client.xlen(alerts_keys.FEED) > 0
    # Day 20: one more fix on the worn bracelet (it stays past the older fixes' limit).
    clock.advance(19 * DAY)
    send(store, clock, "r-1")
    sweep_at(ticker, clock)
    assert client.xlen(alerts_keys.FEED) == 0  # a week's window
    assert client.xlen(track_1) == 3

    # Past TRACK_RETENTION_S, with no new fix anywhere: the old fixes and events go.
    clock.advance(11 * DAY)
    sweep_at(ticker, clock)
    assert not client.exists(track_2), "the unbound bracelet's track outlived retention"
    assert [f["tst"] for _, f in client.xrange(track_1)] == [str(clock.time() - 11 * DAY)]
    assert not client.exists(events)
    assert client.xlen(keys.REJECTED) == 0
    assert client.zscore(keys.retention_streams_of(track_1), track_1) == pytest.approx(
        clock.time() - 11 * DAY, abs=0.01
    )  # the index moved on to the oldest entry left
    assert client.zscore(keys.retention_streams_of(track_2), track_2) is None
    # The closed incident is still whole: names and places go only after 180 days.
    fields = client.hgetall(alerts_keys.incident(worn, incident_id))
    assert fields["note"] == NOTE and fields["origin_lat"]

    clock.advance(INCIDENT_S - 31 * DAY + 60)
    sweep_at(ticker, clock)
    fields = client.hgetall(alerts_keys.incident(worn, incident_id))
    assert "note" not in fields and "origin_lat" not in fields and "origin_lon" not in fields
    assert fields["status"] == "resolved" and fields["outcome"] == "found_safe"
    assert float(fields["t0"]) > 0 and fields["resolved_at"] and fields["respond_deadline"]
    timeline = [
        json.loads(e)
        for e in client.lrange(alerts_keys.incident_timeline(worn, incident_id), 0, -1)
    ]
    text = json.dumps(timeline, ensure_ascii=False)
    assert "Rn7" not in text and "Rn8" not in text and "30.5139" not in text
    assert timeline[0]["type"] == "opened" and timeline[-1]["type"] == "resolved"
    for a in attempts:
        doc = client.hgetall(alerts_keys.attempt(a))
        assert doc["channel"] and not {"text", "phone", "data"} & set(doc)
    assert client.zscore(alerts_keys.INCIDENTS_CLOSED, str(incident_id)) is None
    # The SLA report still has its row.
    since = datetime.fromtimestamp(clock.time() - 200 * DAY, tz=UTC).isoformat()
    admin = {"Authorization": f"Bearer {await api.token(Role.ADMIN)}"}  # 180 days on
    report = await api.http.get("/api/v1/reports/sla", params={"from": since}, headers=admin)
    assert report.status_code == 200, report.text
    assert incident_id in [row["incident_id"] for row in report.json()["rows"]]
