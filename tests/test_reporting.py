"""Adaptive reporting under a controlled clock, through the real ingest and a real broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from alerts import keys as alerts_keys
from devices import keys as devices_keys
from geofences.geometry import LocalFrame
from locator.core.clock import ManualClock
from locator.core.mqtt import MqttPublisher
from locator.core.redis import sync_client
from locator.ticker import Ticker
from tests.conftest import Api
from tests.factories import HAINING, elder_body
from tests.ingest_harness import Publisher, RunningIngest, wait_for
from tests.test_ingest import Listener

LAT, LON = HAINING["lat"], HAINING["lon"]
FRAME = LocalFrame(LAT, LON)


async def setup(api: Api, **device: Any) -> int:
    elder = (
        await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("guardian_a"))
    ).json()
    body = {"device_id": "b-1", "elder_id": elder["id"], **device}
    assert (
        await api.http.post("/api/v1/devices", json=body, headers=api.auth("admin"))
    ).status_code == 201
    zone = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [LON, LAT]},
        "properties": {"kind": "safe", "radius_m": 150},
    }
    assert (
        await api.http.post(
            f"/api/v1/elders/{elder['id']}/zones", json=zone, headers=api.auth("guardian_a")
        )
    ).status_code == 201
    return int(elder["id"])


def walk(
    bracelet: Publisher,
    ingest: RunningIngest,
    clock: ManualClock,
    metres: list[float],
    topic: str = "homeward/devices/b-1/up",
    *,
    acc: float = 10,
    every_s: float = 20,
) -> None:
    for n, m in enumerate(metres, start=ingest.processed + 1):
        clock.advance(every_s)
        lat, lon = FRAME.latlon(0, m)
        bracelet.send(
            topic, {"_type": "location", "lat": lat, "lon": lon, "tst": clock.time(), "acc": acc}
        )
        ingest.wait_processed(n)


def drain(listener: Listener, sent: int) -> list[tuple[str, dict[str, Any]]]:
    """The commands received since the last drain, once all ``sent`` so far have arrived."""
    consumed: int = getattr(listener, "consumed", 0)
    wait_for(lambda: consumed + len(listener.messages) >= sent, timeout=5)
    got, listener.messages[:] = list(listener.messages), []
    listener.consumed = consumed + len(got)  # type: ignore[attr-defined]
    return got


async def test_first_fix_outside_goes_fast_once_then_restores(
    api: Api, mqtt_url: str, redis_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    elder_id = await setup(api, report_interval_s=30)
    listener = Listener(mqtt_url, "homeward/devices/+/cmd")
    ingest = RunningIngest(mqtt_url, redis_url, tmp_path, clock)
    bracelet = Publisher(mqtt_url)
    client = sync_client(redis_url, process="test")
    publisher = MqttPublisher(mqtt_url, client_id=f"test-ticker-{uuid.uuid4().hex[:6]}")
    try:
        walk(bracelet, ingest, clock, [0, 0, 0])
        assert drain(listener, ingest.loop.commands_sent) == []  # at home: nothing to ask
        walk(bracelet, ingest, clock, [400])  # first fix outside
        assert [
            m["action"] + str(m.get("seconds", ""))
            for _, m in drain(listener, ingest.loop.commands_sent)
        ] == [
            "reportLocation",
            "setInterval15",
        ]
        walk(bracelet, ingest, clock, [420, 440, 0, 500])  # one window at a time
        assert drain(listener, ingest.loop.commands_sent) == []
        ticker = Ticker(client, clock=clock, offline_after_s=1200, publisher=publisher)
        clock.advance(600)
        results = [r for job, r in ticker.run_once() if job.kind == "fastmode"]
        assert results == ["restored"]
        assert [m.get("seconds") for _, m in drain(listener, ingest.loop.commands_sent + 1)] == [
            30
        ]  # the device's own base
        assert not client.exists(devices_keys.fast_mode(elder_id))
    finally:
        publisher.close()
        client.close()
        bracelet.close()
        ingest.close()
        listener.close()


async def test_an_open_incident_keeps_the_bracelet_fast(
    api: Api, mqtt_url: str, redis_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    elder_id = await setup(api)
    ingest = RunningIngest(mqtt_url, redis_url, tmp_path, clock)
    bracelet = Publisher(mqtt_url)
    client: redis_lib.Redis = sync_client(redis_url, process="test")
    publisher = MqttPublisher(mqtt_url, client_id=f"test-ticker-{uuid.uuid4().hex[:6]}")
    try:
        walk(bracelet, ingest, clock, [0, 0, 400])
        client.set(alerts_keys.open_incident(elder_id), "1")
        clock.advance(600)
        ticker = Ticker(client, clock=clock, offline_after_s=1200, publisher=publisher)
        assert [r for job, r in ticker.run_once() if job.kind == "fastmode"] == ["extended"]
        assert client.exists(devices_keys.fast_mode(elder_id))
    finally:
        publisher.close()
        client.close()
        bracelet.close()
        ingest.close()


async def test_an_owntracks_phone_only_gets_report_location(
    api: Api, mqtt_url: str, redis_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    await setup(api, protocol="owntracks", external_id="li/phone")
    listener = Listener(mqtt_url, "owntracks/+/+/cmd")
    ingest = RunningIngest(mqtt_url, redis_url, tmp_path, clock)
    phone = Publisher(mqtt_url)
    try:
        walk(phone, ingest, clock, [0, 0, 400], topic="owntracks/li/phone")
        assert [(t, m["action"]) for t, m in drain(listener, ingest.loop.commands_sent)] == [
            ("owntracks/li/phone/cmd", "reportLocation")
        ]
    finally:
        phone.close()
        ingest.close()
        listener.close()


def actions(listener: Listener, ingest: RunningIngest) -> list[str]:
    return [
        m["action"] + str(m.get("seconds", ""))
        for _, m in drain(listener, ingest.loop.commands_sent)
    ]


@dataclass
class Rig:
    """A real ingest on a real broker, a bracelet, and a listener on the command topics."""

    listener: Listener
    ingest: RunningIngest
    bracelet: Publisher
    client: redis_lib.Redis


@pytest.fixture
def rig(mqtt_url: str, redis_url: str, clock: ManualClock, tmp_path: Path) -> Iterator[Rig]:
    listener = Listener(mqtt_url, "homeward/devices/+/cmd")
    ingest = RunningIngest(mqtt_url, redis_url, tmp_path, clock)
    bracelet = Publisher(mqtt_url)
    client = sync_client(redis_url, process="test")
    try:
        yield Rig(listener, ingest, bracelet, client)
    finally:
        client.close()
        bracelet.close()
        ingest.close()
        listener.close()


async def test_a_slow_bracelet_is_asked_again_after_an_unsure_fix(
    api: Api, clock: ManualClock, rig: Rig
) -> None:
    """600 s fixes: a fix that proves nothing asks for one more; a second one goes fast."""
    elder_id = await setup(api, report_interval_s=600)
    walk(rig.bracelet, rig.ingest, clock, [0, 0], every_s=600)
    assert actions(rig.listener, rig.ingest) == []  # proven inside: nothing to ask
    walk(rig.bracelet, rig.ingest, clock, [0], acc=1500, every_s=600)  # a cell-sized fix
    assert actions(rig.listener, rig.ingest) == ["reportLocation"]
    walk(rig.bracelet, rig.ingest, clock, [140], acc=30, every_s=8)  # the answer: near the line
    assert actions(rig.listener, rig.ingest) == ["reportLocation", "setInterval15"]
    assert rig.client.exists(devices_keys.fast_mode(elder_id))
    walk(rig.bracelet, rig.ingest, clock, [150, 145], acc=30, every_s=15)  # fast already
    assert actions(rig.listener, rig.ingest) == []


async def test_follow_ups_stop_at_four_an_hour_and_skip_fast_bracelets(
    api: Api, clock: ManualClock, rig: Rig
) -> None:
    elder_id = await setup(api, report_interval_s=300)
    # A cell run at home: each unsure fix is asked about once, the answer proves her in.
    for _ in range(6):
        walk(rig.bracelet, rig.ingest, clock, [0], acc=1500, every_s=300)
        walk(rig.bracelet, rig.ingest, clock, [0], acc=20, every_s=8)
    assert actions(rig.listener, rig.ingest) == ["reportLocation"] * 4
    assert not rig.client.exists(devices_keys.fast_mode(elder_id))
    clock.advance(3600)  # a new hour
    walk(rig.bracelet, rig.ingest, clock, [0], acc=1500, every_s=300)
    assert actions(rig.listener, rig.ingest) == ["reportLocation"]


async def test_a_60_s_bracelet_is_asked_for_gps_after_a_cell_fix_but_never_goes_fast_for_it(
    api: Api, clock: ManualClock, rig: Rig
) -> None:
    elder_id = await setup(api, report_interval_s=60)
    walk(rig.bracelet, rig.ingest, clock, [0, 0], every_s=60)
    # A cell fix never counts: it asks for a GPS fix (the brief), whatever the interval.
    walk(rig.bracelet, rig.ingest, clock, [0], acc=1500, every_s=60)
    assert actions(rig.listener, rig.ingest) == ["reportLocation"]
    # Its answer is a cell fix too: at 60 s the next fix comes soon anyway, no window.
    walk(rig.bracelet, rig.ingest, clock, [0], acc=1500, every_s=8)
    assert actions(rig.listener, rig.ingest) == []
    assert not rig.client.exists(devices_keys.fast_mode(elder_id))
    # Near the line but counting: at 60 s the next fix settles it, nothing to ask.
    walk(rig.bracelet, rig.ingest, clock, [140], acc=30, every_s=60)
    assert actions(rig.listener, rig.ingest) == []
