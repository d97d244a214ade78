"""A walk for the privacy tests: her bracelet bound, fixes stored through the real ingest
store, and an incident opened the way the ingest's zone stage opens one."""

from __future__ import annotations

import json

import redis

from alerts.incidents import storage
from devices.ingest.batch import Message
from devices.ingest.pipeline import UplinkStore
from locator.core.clock import ManualClock
from tests.alerts_harness import LAT, LON, config, consume, exit_event, north
from tests.conftest import Api

DEVICE = "b-1"


async def bind(api: Api, elder_id: int) -> None:
    body = {"device_id": DEVICE, "elder_id": elder_id}
    r = await api.http.post("/api/v1/devices", json=body, headers=api.auth("admin"))
    assert r.status_code == 201, r.text


def walk(
    client: redis.Redis, clock: ManualClock, metres: tuple[float, ...], *, last_alarm: str = ""
) -> None:
    """One fix per minute at home and then north of it, stored as the ingest stores them;
    the last fix may carry an alarm (the ingest then emits her device event)."""
    store = UplinkStore(client, clock=clock, retention_s=2_592_000, offline_after_s=1200)
    for m in metres:
        clock.advance(60)
        point = north(m) if m else {"lat": LAT, "lon": LON}
        fix = {"_type": "location", **point, "tst": clock.time(), "acc": 8, "src": "gps"}
        if last_alarm and m == metres[-1]:
            fix["alarm"] = last_alarm
        message = Message(f"homeward/devices/{DEVICE}/up", json.dumps(fix).encode(), clock.time())
        assert store.process([message]).outcomes["stored"] == 1


def open_incident(client: redis.Redis, elder_id: int, clock: ManualClock) -> int:
    exit_event(client, elder_id, clock)
    assert consume(client, config(clock)) == 1
    incident_id = storage.open_incident_id(client, elder_id)
    assert incident_id is not None
    return incident_id
