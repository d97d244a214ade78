"""The ingest end to end: real broker → real ingest loop → real Redis → HTTP API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import redis
from paho.mqtt.enums import CallbackAPIVersion

from devices import keys as devices_keys
from devices.ingest.batch import Message
from devices.ingest.pipeline import UplinkStore
from locator.core import redis as redis_module
from locator.core import shards
from locator.core.clock import ManualClock
from locator.core.mqtt import address
from locator.core.redis import sync_client
from locator.ingest_loop import IngestLoop
from tests.conftest import Api
from tests.factories import HAINING, elder_body
from tests.ingest_harness import Publisher, RunningIngest

LAT, LON = HAINING["lat"], HAINING["lon"]


@pytest.fixture
def bracelet(mqtt_url: str) -> Iterator[Publisher]:
    publisher = Publisher(mqtt_url)
    yield publisher
    publisher.close()


@pytest.fixture
def ingest(
    api: Api, mqtt_url: str, redis_url: str, clock: ManualClock, tmp_path: Path
) -> Iterator[RunningIngest]:
    running = RunningIngest(mqtt_url, redis_url, tmp_path, clock)
    yield running
    running.close()


async def register(api: Api, device_id: str = "b-1", who: str = "guardian_a", **device: Any) -> int:
    elder = (await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth(who))).json()
    body = {"device_id": device_id, "elder_id": elder["id"], **device}
    # Staff bind directly; a guardian would need the bracelet's claim code.
    response = await api.http.post("/api/v1/devices", json=body, headers=api.auth("admin"))
    assert response.status_code == 201, response.text
    return int(elder["id"])


def fix(t: float, lat: float = LAT, lon: float = LON, **extra: Any) -> dict[str, Any]:
    return {"_type": "location", "lat": lat, "lon": lon, "tst": t, "acc": 10, "src": "gps", **extra}


UP = "homeward/devices/b-1/up"


async def position(api: Api, elder_id: int) -> dict[str, Any]:
    response = await api.http.get(
        f"/api/v1/elders/{elder_id}/position", headers=api.auth("guardian_a")
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def track(api: Api, elder_id: int) -> list[dict[str, Any]]:
    response = await api.http.get(
        f"/api/v1/elders/{elder_id}/track",
        params={"since": "2026-11-22T00:00:00Z", "until": "2026-11-24T00:00:00Z"},
        headers=api.auth("guardian_a"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "FeatureCollection"
    features: list[dict[str, Any]] = response.json()["features"]
    return features


async def rejected_reasons(api: Api) -> list[str]:
    items = (
        await api.http.get("/api/v1/rejected", params={"limit": 200}, headers=api.auth("admin"))
    ).json()["items"]
    return [i["reason"] for i in reversed(items)]


async def test_a_fix_moves_the_elder_and_updates_the_device(
    api: Api, ingest: RunningIngest, bracelet: Publisher, clock: ManualClock
) -> None:
    elder_id = await register(api)
    t0 = clock.time()
    bracelet.send(UP, fix(t0 - 5, batt=76, vel=3, cog=90))
    ingest.wait_processed(1)
    pos = await position(api, elder_id)
    assert (pos["lat"], pos["lon"], pos["acc"], pos["src"], pos["battery"], pos["stale"]) == (
        LAT,
        LON,
        10.0,
        "gps",
        76,
        False,
    )
    assert pos["tst"] == "2026-11-23T07:59:55Z" and pos["received_at"] == "2026-11-23T08:00:00Z"
    device = (await api.http.get("/api/v1/devices/b-1", headers=api.auth("guardian_a"))).json()
    assert (device["last_seen"], device["battery"], device["online"]) == (
        "2026-11-23T08:00:00Z",
        76,
        True,
    )
    [feature] = await track(api, elder_id)
    assert feature["geometry"] == {"type": "Point", "coordinates": [LON, LAT]}
    assert feature["properties"]["speed_kmh"] == 3.0 and feature["properties"]["flags"] == []
    clock.advance(601)
    assert (await position(api, elder_id))["stale"] is True


async def test_out_of_order_fix_is_kept_in_the_track_but_never_moves_the_elder(
    api: Api, ingest: RunningIngest, bracelet: Publisher, clock: ManualClock
) -> None:
    elder_id = await register(api)
    t0 = clock.time()
    bracelet.send(UP, fix(t0 - 10, lat=LAT + 0.001))
    bracelet.send(UP, fix(t0 - 100, lat=LAT + 0.002))  # buffered while out of coverage
    ingest.wait_processed(2)
    assert (await position(api, elder_id))["lat"] == LAT + 0.001
    features = await track(api, elder_id)
    assert [f["properties"]["flags"] for f in features] == [["late"], []]
    assert [f["geometry"]["coordinates"][1] for f in features] == [LAT + 0.002, LAT + 0.001]


async def test_an_exact_duplicate_is_rejected_and_stored_once(
    api: Api, ingest: RunningIngest, bracelet: Publisher, clock: ManualClock
) -> None:
    elder_id = await register(api)
    payload = fix(clock.time() - 5)
    bracelet.send(UP, payload)
    bracelet.send(UP, payload)  # a stale repeat: same fix, same time, sent again
    ingest.wait_processed(2)
    assert len(await track(api, elder_id)) == 1
    assert await rejected_reasons(api) == ["duplicate"]


async def test_spoofing_is_rejected(
    api: Api, ingest: RunningIngest, bracelet: Publisher, clock: ManualClock
) -> None:
    elder_id = await register(api)
    await register(api, "b-2", who="guardian_b")
    bracelet.send(UP, fix(clock.time() - 5, device_id="b-2", lat=LAT + 0.01))
    ingest.wait_processed(1)
    assert await rejected_reasons(api) == ["spoofed"]
    assert (
        await api.http.get(f"/api/v1/elders/{elder_id}/position", headers=api.auth("admin"))
    ).status_code == 404


async def test_implausible_jump_is_rejected_but_a_vague_cell_fix_is_flagged(
    api: Api, ingest: RunningIngest, bracelet: Publisher, clock: ManualClock
) -> None:
    elder_id = await register(api)
    t0 = clock.time()
    bracelet.send(UP, fix(t0 - 60))
    bracelet.send(UP, fix(t0 - 50, lat=LAT + 0.05))  # 5.5 km in 10 s claiming 10 m
    bracelet.send(UP, fix(t0 - 40, lat=LAT + 0.015, acc=1500, src="cell"))  # vague, not impossible
    bracelet.send(UP, fix(t0 - 30, lat=LAT + 0.0002))  # back to GPS near the last good fix
    ingest.wait_processed(4)
    assert await rejected_reasons(api) == ["too_fast"]
    features = await track(api, elder_id)
    assert [f["properties"]["flags"] for f in features] == [[], ["low_quality"], []]
    pos = await position(api, elder_id)
    assert pos["lat"] == LAT + 0.0002 and pos["flags"] == []


async def test_alarms_and_low_battery_become_events_once_per_change(
    api: Api, ingest: RunningIngest, bracelet: Publisher, clock: ManualClock
) -> None:
    elder_id = await register(api)
    t0 = clock.time()
    bracelet.send(UP, fix(t0 - 50, alarm="sos", batt=50))
    bracelet.send(UP, fix(t0 - 40, batt=19))
    bracelet.send(UP, fix(t0 - 30, batt=18))
    bracelet.send(UP, {"_type": "status", "tst": t0 - 25, "batt": 30})
    bracelet.send(UP, {"_type": "status", "tst": t0 - 20, "batt": 15, "alarm": "removed"})
    ingest.wait_processed(5)
    events = (
        await api.http.get(f"/api/v1/elders/{elder_id}/events", headers=api.auth("guardian_a"))
    ).json()["items"]
    assert [e["type"] for e in reversed(events)] == ["sos", "low_battery", "low_battery", "removed"]
    sos = events[-1]
    assert sos["at"] == {"lat": LAT, "lon": LON} and sos["device_id"] == "b-1"
    stream = await api.redis.xrange(devices_keys.device_events(shards.shard_of(elder_id)))
    assert [f["type"] for _, f in stream] == ["sos", "low_battery", "low_battery", "removed"]
    assert {f["elder_id"] for _, f in stream} == {str(elder_id)}


async def test_an_unchanged_battery_level_is_judged_again_only_when_flagged_low(
    api: Api, ingest: RunningIngest, bracelet: Publisher, clock: ManualClock
) -> None:
    # The store skips judging a level it stored and found not low; a flag the bracelet's
    # own alarm set at that level is still cleared by the next fix without it.
    elder_id = await register(api)
    t0 = clock.time()
    bracelet.send(UP, fix(t0 - 50, batt=50))
    bracelet.send(UP, fix(t0 - 40, batt=50))
    bracelet.send(UP, fix(t0 - 30, batt=50, alarm="low_battery"))
    bracelet.send(UP, fix(t0 - 20, batt=50))
    bracelet.send(UP, fix(t0 - 10, batt=19))
    ingest.wait_processed(5)
    stream = await api.redis.xrange(devices_keys.device_events(shards.shard_of(elder_id)))
    assert [f["type"] for _, f in stream] == ["low_battery", "low_battery"]
    state = await api.redis.hgetall(devices_keys.device_state(elder_id, "b-1"))
    assert (state["battery"], state["low_battery"]) == ("19", "1")


async def test_unknown_device_then_registered_then_deleted(
    api: Api, ingest: RunningIngest, bracelet: Publisher, clock: ManualClock
) -> None:
    t0 = clock.time()
    bracelet.send(UP, fix(t0 - 50))
    ingest.wait_processed(1)
    elder_id = await register(api)
    bracelet.send(UP, fix(t0 - 40))  # the unknown answer cached a moment ago must not stick
    ingest.wait_processed(2)
    assert len(await track(api, elder_id)) == 1
    await api.http.delete("/api/v1/devices/b-1", headers=api.auth("guardian_a"))
    bracelet.send(UP, fix(t0 - 30, lat=LAT + 0.001))
    ingest.wait_processed(3)
    assert await rejected_reasons(api) == ["unknown_device", "unknown_device"]
    assert (await position(api, elder_id))["lat"] == LAT


async def test_owntracks_phone_is_a_working_bracelet(
    api: Api, ingest: RunningIngest, bracelet: Publisher, clock: ManualClock
) -> None:
    elder_id = await register(api, "phone-1", protocol="owntracks", external_id="li/phone")
    t0 = clock.time()
    bracelet.send(
        "owntracks/li/phone",
        {
            "_type": "location",
            "lat": str(LAT),
            "lon": str(LON),
            "tst": str(int(t0 - 5)),
            "acc": "12.5",
            "batt": "55",
            "tid": "li",
            "topic": "owntracks/li/phone",
        },
    )
    bracelet.send("owntracks/li/phone", {"_type": "waypoint", "desc": "home"})
    bracelet.send("owntracks/li/phone", {"_type": "lwt", "tst": int(t0)})
    ingest.wait_processed(3)
    pos = await position(api, elder_id)
    assert (pos["lat"], pos["acc"], pos["battery"]) == (LAT, 12.5, 55)
    # A last will is an event; whether the phone is offline is the ticker's call (it may
    # reconnect at once), so it stays online until OFFLINE_AFTER_S of silence.
    device = (await api.http.get("/api/v1/devices/phone-1", headers=api.auth("guardian_a"))).json()
    assert device["online"] is True
    events = (
        await api.http.get(f"/api/v1/elders/{elder_id}/events", headers=api.auth("guardian_a"))
    ).json()["items"]
    assert [e["type"] for e in events] == ["device_lastwill"]


# --- the malformed corpus ------------------------------------------------------------------
def corpus(t: float) -> list[tuple[str, bytes, str]]:
    """(topic, payload, expected reason): at least 30 ways a payload goes wrong."""

    def j(obj: object) -> bytes:
        return json.dumps(obj).encode()

    good = {"_type": "location", "lat": LAT, "lon": LON, "tst": t, "acc": 10}
    up = UP
    return [
        (up, b"", "invalid_json"),
        (up, b"{", "invalid_json"),
        (up, b"null", "not_an_object"),
        (up, b"42", "not_an_object"),
        (up, b"[]", "not_an_object"),
        (up, b"\xc3\x28", "invalid_json"),
        (up, b"x" * 5000, "oversized"),
        (up, j({**good, "_type": None}), "missing_field"),
        (up, j({k: v for k, v in good.items() if k != "_type"}), "missing_field"),
        (up, j({**good, "_type": "selfie"}), "unknown_type"),
        (up, j({k: v for k, v in good.items() if k != "lat"}), "missing_field"),
        (up, j({k: v for k, v in good.items() if k != "tst"}), "missing_field"),
        (up, j({**good, "lat": "30.5"}), "wrong_type"),
        (up, j({**good, "lon": [120]}), "wrong_type"),
        (up, j({**good, "tst": {"s": 1}}), "wrong_type"),
        (up, j({**good, "acc": False}), "wrong_type"),
        (up, j({**good, "src": 3}), "wrong_type"),
        (up, j({**good, "lat": 90.5}), "out_of_range"),
        (up, j({**good, "lon": 180.01}), "out_of_range"),
        (up, j({**good, "acc": -1}), "out_of_range"),
        (up, j({**good, "batt": 101}), "out_of_range"),
        (up, j({**good, "cog": 400}), "out_of_range"),
        (up, j({**good, "src": "magic"}), "out_of_range"),
        (up, j({**good, "alarm": "boom"}), "out_of_range"),
        (up, b'{"_type":"location","lat":NaN,"lon":120.6,"tst":1}', "not_finite"),
        (up, b'{"_type":"location","lat":30.5,"lon":-Infinity,"tst":1}', "not_finite"),
        (up, j({**good, "lat": 0, "lon": 0}), "null_island"),
        (up, j({**good, "tst": t + 3600}), "future_fix"),
        (up, j({**good, "device_id": "someone-else"}), "spoofed"),
        ("homeward/devices/ghost/up", j(good), "unknown_device"),
        ("owntracks/nobody/phone", j(good), "unknown_device"),
        ("owntracks/li/phone", j({**good, "topic": "owntracks/x/y"}), "spoofed"),
        ("owntracks/li/phone", j({"_type": "encrypted", "data": "AAAA"}), "encrypted"),
        (up, j({**good, "lat": LAT + 0.2, "tst": t - 1}), "too_fast"),
        (up, j({**good, "tst": t - 2}), "duplicate"),
    ]


async def test_malformed_corpus_through_the_broker(
    api: Api, ingest: RunningIngest, bracelet: Publisher, clock: ManualClock
) -> None:
    elder_id = await register(api)
    await register(api, "phone-1", protocol="owntracks", external_id="li/phone")
    t = clock.time()
    baseline = fix(t - 2)
    bracelet.send(UP, baseline)
    ingest.wait_processed(1)
    cases = corpus(t)
    assert len(cases) >= 30
    for topic, payload, _ in cases:
        bracelet.send(topic, payload)
    ingest.wait_processed(1 + len(cases))
    assert ingest.thread.is_alive()
    expected: dict[str, int] = {}
    for _, _, reason in cases:
        expected[reason] = expected.get(reason, 0) + 1
    counts = (await api.http.get("/api/v1/rejected/counts", headers=api.auth("admin"))).json()
    assert counts == expected
    assert await rejected_reasons(api) == [reason for _, _, reason in cases]
    # No rejected fix moved the elder or reached the track.
    pos = await position(api, elder_id)
    assert (pos["lat"], pos["lon"], pos["tst"]) == (LAT, LON, "2026-11-23T07:59:58Z")
    assert len(await track(api, elder_id)) == 1
    # The ingest is still healthy: a good fix afterwards is stored.
    bracelet.send(UP, fix(t - 1, lat=LAT + 0.0001))
    ingest.wait_processed(2 + len(cases))
    assert (await position(api, elder_id))["lat"] == LAT + 0.0001
    metrics = (await api.http.get("/metrics", headers=api.auth("admin"))).text
    assert 'homeward_ingest_rejected_total{reason="null_island"}' in metrics


async def test_rejected_is_scoped_to_the_guardians_own_devices(
    api: Api, ingest: RunningIngest, bracelet: Publisher, clock: ManualClock
) -> None:
    await register(api, "b-1", who="guardian_a")
    await register(api, "b-2", who="guardian_b")
    bracelet.send(UP, fix(clock.time(), lat=0, lon=0))
    bracelet.send("homeward/devices/b-2/up", fix(clock.time(), lat=0, lon=0))
    bracelet.send("homeward/devices/ghost/up", b"{}")
    ingest.wait_processed(3)
    mine = (await api.http.get("/api/v1/rejected", headers=api.auth("guardian_a"))).json()["items"]
    assert [(i["device_id"], i["reason"]) for i in mine] == [("b-1", "null_island")]
    assert (
        len(
            (await api.http.get("/api/v1/rejected", headers=api.auth("dispatcher"))).json()["items"]
        )
        == 3
    )
    assert (
        await api.http.get("/api/v1/rejected/counts", headers=api.auth("guardian_a"))
    ).status_code == 403


# --- downlink ------------------------------------------------------------------------------
class Listener:
    def __init__(self, mqtt_url: str, topic: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.got = threading.Event()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: (
            self.messages.append((m.topic, json.loads(m.payload))),
            self.got.set(),
        )
        self.client.on_subscribe = lambda *a: subscribed.set()
        host, port = address(mqtt_url)
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(5)

    def next(self) -> tuple[str, dict[str, Any]]:
        assert self.got.wait(5), "no command arrived"
        self.got.clear()
        return self.messages.pop(0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_commands_reach_the_device_in_its_protocol(api: Api, mqtt_url: str) -> None:
    await register(api, "b-1")
    await register(api, "phone-1", protocol="owntracks", external_id="li/phone")
    listener = Listener(mqtt_url, "#")
    try:
        sent = await api.http.post(
            "/api/v1/devices/b-1/commands",
            json={"action": "setInterval", "seconds": 15},
            headers=api.auth("guardian_a"),
        )
        assert sent.status_code == 202, sent.text
        assert listener.next() == (
            "homeward/devices/b-1/cmd",
            {"_type": "cmd", "action": "setInterval", "seconds": 15},
        )
        await api.http.post(
            "/api/v1/devices/phone-1/commands",
            json={"action": "reportLocation"},
            headers=api.auth("dispatcher"),
        )
        assert listener.next() == (
            "owntracks/li/phone/cmd",
            {"_type": "cmd", "action": "reportLocation"},
        )
        cannot = await api.http.post(
            "/api/v1/devices/phone-1/commands",
            json={"action": "setInterval", "seconds": 15},
            headers=api.auth("admin"),
        )
        assert cannot.status_code == 422 and cannot.json()["detail"][0]["loc"] == ["body", "action"]
        no_seconds = await api.http.post(
            "/api/v1/devices/b-1/commands",
            json={"action": "setInterval"},
            headers=api.auth("admin"),
        )
        assert no_seconds.status_code == 422 and no_seconds.json()["detail"][0]["loc"] == [
            "body",
            "seconds",
        ]
        other_family = await api.http.post(
            "/api/v1/devices/b-1/commands",
            json={"action": "reportLocation"},
            headers=api.auth("guardian_b"),
        )
        assert other_family.status_code == 403
    finally:
        listener.close()


# --- one round trip per batch ----------------------------------------------------------------
class CountingRedis:
    """Counts round trips on a real client: single commands and pipeline executions."""

    def __init__(self, url: str) -> None:
        self.client = sync_client(url, process="test")
        self.round_trips = 0
        original_execute = self.client.execute_command
        original_pipeline = self.client.pipeline

        def execute_command(*args: Any, **kwargs: Any) -> Any:
            self.round_trips += 1
            return original_execute(*args, **kwargs)

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = original_pipeline(*args, **kwargs)
            original = pipe.execute

            def execute(*a: Any, **k: Any) -> Any:
                self.round_trips += 1
                return original(*a, **k)

            pipe.execute = execute  # type: ignore[method-assign]
            return pipe

        self.client.execute_command = execute_command  # type: ignore[method-assign]
        self.client.pipeline = pipeline  # type: ignore[method-assign]
        # The ingest's streaming pipeline writes while it is filled but waits once, in execute.
        counted = self

        class Streaming(redis_module.StreamingPipeline):
            def execute(self, raise_on_error: bool = True) -> list[Any]:
                counted.round_trips += 1
                return super().execute(raise_on_error)

        self._original_streaming = redis_module.StreamingPipeline
        redis_module.StreamingPipeline = Streaming  # type: ignore[misc]

    def close(self) -> None:
        redis_module.StreamingPipeline = self._original_streaming  # type: ignore[misc]
        self.client.close()


async def test_a_batch_costs_one_round_trip_not_one_per_message(
    api: Api, redis_url: str, clock: ManualClock
) -> None:
    for n in range(50):
        await register(api, f"d-{n}", who="admin")
    counting = CountingRedis(redis_url)
    store = UplinkStore(counting.client, clock=clock, retention_s=86400)
    t = clock.time()

    def batch(offset: float) -> list[Message]:
        return [
            Message(f"homeward/devices/d-{n}/up", json.dumps(fix(t - offset)).encode(), t)
            for n in range(50)
        ]

    try:
        store.process(batch(20))  # first sight of 50 devices: their routes are looked up once
        counting.round_trips = 0
        outcome = store.process(batch(10))
    finally:
        counting.close()
    assert outcome.outcomes["stored"] == 50
    assert counting.round_trips == 1


async def test_the_dedupe_window_keeps_the_newest_ids_in_a_small_sorted_set(
    api: Api, redis_url: str, clock: ManualClock
) -> None:
    elder_id = await register(api)
    client = sync_client(redis_url, process="test")
    dedupe = devices_keys.fix_dedupe(elder_id, "b-1")
    # Ids left by the store's older scoring (plus the arrival time): the oldest of all.
    client.zadd(dedupe, {f"old-{n}": 1_000 + n for n in range(10)})
    store = UplinkStore(client, clock=clock, retention_s=86400)
    t = clock.time()
    messages = [Message(UP, json.dumps(fix(t - 300 + n)).encode(), t - 300 + n) for n in range(200)]
    sizes = []
    try:
        for message in messages:
            store.process([message])
            sizes.append(client.zcard(dedupe))
        # Never past 96 (a small sorted set stays one flat list up to 128 entries).
        assert max(sizes) == 96 and min(sizes[100:]) == 64
        assert client.object("encoding", dedupe) in ("ziplist", "listpack")
        assert not [m for m in client.zrange(dedupe, 0, -1) if m.startswith("old-")]
        # The newest 64 are all there: a redelivery of any of them is a duplicate.
        again = store.process(messages[-64:])
        assert again.outcomes.get("stored", 0) == 0
        assert client.xlen(devices_keys.track(elder_id, "b-1")) == 200
    finally:
        client.close()


async def test_an_uplink_failing_in_redis_loses_none_of_its_batch(
    api: Api, redis_url: str, mqtt_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    # One store call carries the batch: an error in one uplink is that uplink's alone.
    broken, fine = await register(api, "d-broken"), await register(api, "d-fine")
    client = sync_client(redis_url, process="test")
    client.set(devices_keys.fix_dedupe(broken, "d-broken"), "not a sorted set")
    store = UplinkStore(client, clock=clock, retention_s=86400)
    t = clock.time()
    batch = [
        Message(f"homeward/devices/{device}/up", json.dumps(fix(t - 10)).encode(), t)
        for device in ("d-broken", "d-fine")
    ]
    loop = IngestLoop(
        mqtt_url=mqtt_url, redis_url=redis_url, data_dir=tmp_path, clock=clock, retention_s=86400
    )
    try:
        # Its own error, not a wrapper's: "@user_script: ..." would hide an outage's code.
        with pytest.raises(redis.ResponseError, match=r"^WRONGTYPE"):
            store.process(batch)
        assert client.hget(devices_keys.last_position(fine), "tst") == repr(t - 10)
        # The ingest then stores the batch message by message: the failing one is dead-lettered,
        # the other was stored with the batch already.
        outcome = loop._isolate(store, batch)
    finally:
        loop._redis.close()
        client.close()
    assert outcome.outcomes["rejected:internal_error"] == 1
    assert outcome.outcomes["rejected:duplicate"] == 1


async def test_filtered_rejected_pages_do_not_skip_entries(
    api: Api, ingest: RunningIngest, bracelet: Publisher, clock: ManualClock
) -> None:
    await register(api, "b-1")
    for n in range(7):
        bracelet.send(UP, fix(clock.time() - 100 + n, lat=0, lon=0))  # null_island
        bracelet.send("homeward/devices/ghost/up", fix(clock.time() - 100 + n))  # unknown_device
    ingest.wait_processed(14)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, "reason": "null_island", **({"cursor": cursor} if cursor else {})}
        page = (
            await api.http.get("/api/v1/rejected", params=params, headers=api.auth("admin"))
        ).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 7
