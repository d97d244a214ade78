"""The store's rules, message by message, with a controlled clock (real Redis, no broker)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from devices import keys as devices_keys
from devices.ingest.batch import Message
from devices.ingest.pipeline import UplinkStore
from locator.core import keys
from locator.core.clock import ManualClock
from locator.core.redis import sync_client
from locator.ticker import Ticker
from tests.conftest import Api
from tests.factories import HAINING, elder_body

LAT, LON = HAINING["lat"], HAINING["lon"]
UP = "homeward/devices/b-1/up"


@pytest.fixture
def client(redis: object, redis_url: str) -> Iterator[redis.Redis]:
    sync = sync_client(redis_url, process="test")
    yield sync
    sync.close()


@pytest.fixture
def store(client: redis.Redis, clock: ManualClock) -> UplinkStore:
    return UplinkStore(client, clock=clock, retention_s=86400, offline_after_s=1200)


@pytest.fixture
async def elder_id(api: Api) -> int:
    elder = (
        await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("guardian_a"))
    ).json()
    body = {"device_id": "b-1", "elder_id": elder["id"]}
    assert (
        await api.http.post("/api/v1/devices", json=body, headers=api.auth("admin"))
    ).status_code == 201
    return int(elder["id"])


def send(
    store: UplinkStore, clock: ManualClock, payload: dict[str, Any] | bytes, *, retain: bool = False
) -> dict[str, int]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return dict(store.process([Message(UP, body, clock.time(), retain=retain)]).outcomes)


def fix(t: float, lat: float = LAT, lon: float = LON, **extra: Any) -> dict[str, Any]:
    return {"_type": "location", "lat": lat, "lon": lon, "tst": t, "acc": 10, **extra}


async def events(api: Api, elder_id: int) -> list[dict[str, Any]]:
    items = (
        await api.http.get(f"/api/v1/elders/{elder_id}/events", headers=api.auth("guardian_a"))
    ).json()["items"]
    return list(reversed(items))


async def position(api: Api, elder_id: int) -> dict[str, Any]:
    result: dict[str, Any] = (
        await api.http.get(f"/api/v1/elders/{elder_id}/position", headers=api.auth("guardian_a"))
    ).json()
    return result


# --- alarms are never lost with their fix -----------------------------------------------
async def test_sos_pressed_indoors_without_a_fix_still_raises_the_alarm(
    api: Api, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    send(store, clock, fix(clock.time() - 60))
    outcome = send(store, clock, fix(clock.time(), lat=0, lon=0, alarm="sos"))
    assert outcome["rejected:null_island"] == 1
    [sos] = await events(api, elder_id)
    assert (sos["type"], sos["at"]) == ("sos", {"lat": LAT, "lon": LON})  # at the last known place


async def test_an_alarm_on_an_impossible_jump_or_a_future_fix_still_goes_out(
    api: Api, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    t = clock.time()
    send(store, clock, fix(t - 60))
    assert send(store, clock, fix(t - 50, lat=LAT + 0.5, alarm="fall"))["rejected:too_fast"] == 1
    assert send(store, clock, fix(t + 3600, alarm="sos"))["rejected:future_fix"] == 1
    assert [e["type"] for e in await events(api, elder_id)] == ["fall", "sos"]
    assert (await position(api, elder_id))["lat"] == LAT


async def test_sos_repeating_the_last_fix_is_not_a_duplicate(
    api: Api, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    t = clock.time() - 30
    send(store, clock, fix(t))
    send(store, clock, fix(t, alarm="sos"))
    assert [e["type"] for e in await events(api, elder_id)] == ["sos"]


async def test_redelivered_messages_raise_nothing_twice(
    api: Api, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    status = {"_type": "status", "tst": clock.time(), "batt": 50, "alarm": "removed"}
    sos_fix = fix(clock.time() - 5, alarm="sos")
    for _ in range(2):  # the broker delivers the same QoS 1 messages again
        send(store, clock, status)
        send(store, clock, sos_fix)
    assert [e["type"] for e in await events(api, elder_id)] == ["removed", "sos"]


def test_a_redelivered_bad_message_is_dead_lettered_once(
    client: redis.Redis, store: UplinkStore, clock: ManualClock
) -> None:
    for _ in range(3):
        send(store, clock, b"{broken")
    assert client.xlen(keys.REJECTED) == 1
    assert client.hget(keys.REJECTED_COUNTS, "invalid_json") == "1"


# --- where the elder is -------------------------------------------------------------------
async def test_an_accepted_outlier_does_not_freeze_the_elder(
    api: Api, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    t = clock.time() - 4000
    send(store, clock, fix(t))
    send(store, clock, fix(t + 3600, lat=LAT + 0.45))  # 50 km after an hour: plausible, accepted
    assert (await position(api, elder_id))["lat"] == LAT + 0.45
    # But she is at home: the next fix is "impossible" from the outlier...
    assert send(store, clock, fix(t + 3660))["rejected:too_fast"] == 1
    # ...and the one after agrees with it, so the elder is re-anchored, not frozen.
    assert send(store, clock, fix(t + 3720, lat=LAT + 0.0002))["stored"] == 1
    pos = await position(api, elder_id)
    assert pos["lat"] == LAT + 0.0002 and "reanchored" in pos["flags"]


async def test_a_single_jump_is_still_rejected_between_good_fixes(
    api: Api, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    t = clock.time() - 100
    send(store, clock, fix(t))
    assert send(store, clock, fix(t + 10, lat=LAT + 0.05))["rejected:too_fast"] == 1
    assert send(store, clock, fix(t + 20, lat=LAT + 0.0001))["stored"] == 1
    assert send(store, clock, fix(t + 30, lat=LAT + 0.05))["rejected:too_fast"] == 1
    assert (await position(api, elder_id))["lat"] == LAT + 0.0001


async def test_a_clock_running_ahead_does_not_make_later_fixes_late(
    api: Api, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    send(store, clock, fix(clock.time() + 240))  # 4 min ahead: within the skew we accept
    clock.advance(60)
    assert send(store, clock, fix(clock.time(), lat=LAT + 0.001))["stored"] == 1
    assert (await position(api, elder_id))["lat"] == LAT + 0.001


def test_a_redelivered_backlog_of_late_fixes_is_stored_once(
    client: redis.Redis, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    t = clock.time()
    send(store, clock, fix(t - 10))
    backlog = [Message(UP, json.dumps(fix(t - 5000 + i * 30)).encode(), t) for i in range(80)]
    store.process(backlog)
    store.process(backlog)  # redelivered after a crash before the acks
    assert client.xlen(devices_keys.track(elder_id, "b-1")) == 81


# --- liveness -------------------------------------------------------------------------------
async def test_a_retained_replay_is_not_a_sign_of_life(
    api: Api, client: redis.Redis, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    payload = fix(clock.time())
    send(store, clock, payload)
    clock.advance(1300)
    [(_, result)] = Ticker(client, clock=clock, offline_after_s=1200).run_once()
    assert result == "offline"
    # The ingest restarts and the broker replays the phone's retained last location.
    assert send(store, clock, payload, retain=True) == {"retained": 1}
    device = (await api.http.get("/api/v1/devices/b-1", headers=api.auth("guardian_a"))).json()
    assert device["online"] is False
    assert [e["type"] for e in await events(api, elder_id)] == ["device_offline"]


async def test_a_last_will_then_silence_is_reported_offline(
    api: Api, client: redis.Redis, clock: ManualClock, elder_id: int
) -> None:
    await api.http.delete("/api/v1/devices/b-1", headers=api.auth("guardian_a"))
    body = {
        "device_id": "phone-1",
        "elder_id": elder_id,
        "protocol": "owntracks",
        "external_id": "li/phone",
    }
    await api.http.post("/api/v1/devices", json=body, headers=api.auth("admin"))
    store = UplinkStore(client, clock=clock, retention_s=86400, offline_after_s=1200)
    topic = "owntracks/li/phone"
    store.process(
        [
            Message(
                topic,
                json.dumps(
                    {"_type": "location", "lat": LAT, "lon": LON, "tst": clock.time()}
                ).encode(),
                clock.time(),
            )
        ]
    )
    clock.advance(10)
    store.process(
        [
            Message(
                topic,
                json.dumps({"_type": "lwt", "tst": clock.time() - 3600}).encode(),
                clock.time(),
            )
        ]
    )
    clock.advance(1300)
    assert [r for _, r in Ticker(client, clock=clock, offline_after_s=1200).run_once()] == [
        "offline"
    ]
    assert [e["type"] for e in await events(api, elder_id)] == ["device_lastwill", "device_offline"]


async def test_a_longer_device_offline_window_is_honoured_even_by_a_stale_cache(
    api: Api, client: redis.Redis, store: UplinkStore, clock: ManualClock, elder_id: int
) -> None:
    send(store, clock, fix(clock.time()))  # routes cached with the default 1200 s
    await api.http.delete("/api/v1/devices/b-1", headers=api.auth("guardian_a"))
    body = {"device_id": "b-1", "elder_id": elder_id, "offline_after_s": 3600}
    await api.http.post("/api/v1/devices", json=body, headers=api.auth("admin"))
    clock.advance(60)
    send(store, clock, fix(clock.time()))
    ticker = Ticker(client, clock=clock, offline_after_s=1200)
    clock.advance(1300)
    assert [r for _, r in ticker.run_once()] in ([], ["alive"])  # not yet: 3600 s is the rule
    clock.advance(2400)
    assert [r for _, r in ticker.run_once()] == ["offline"]
