"""Zones through the API, and zone transitions through the real ingest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devices import keys as devices_keys
from devices.ingest.batch import Message
from devices.ingest.pipeline import UplinkStore
from geofences import keys as geofences_keys
from geofences.evaluator import ZoneEvaluator
from geofences.geometry import LocalFrame
from locator.core import shards
from locator.core.clock import ManualClock
from locator.core.crs import haversine_m, wgs84_to_gcj02
from locator.core.redis import sync_client
from locator.core.settings import load_settings
from tests.conftest import Api, both_backends
from tests.factories import HAINING, elder_body
from tests.ingest_harness import Publisher, RunningIngest

LAT, LON = HAINING["lat"], HAINING["lon"]
FRAME = LocalFrame(LAT, LON)

# Zones, pause and their use by the store once more on the local 3-master Redis Cluster.
pytestmark = both_backends


def circle(radius: float = 150, **props: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [LON, LAT]},
        "properties": {"kind": "safe", "radius_m": radius, **props},
    }


def square(
    d: float = 0.002, kind: str = "safe", lat: float = LAT, lon: float = LON
) -> dict[str, Any]:
    ring = [
        [lon - d, lat - d],
        [lon + d, lat - d],
        [lon + d, lat + d],
        [lon - d, lat + d],
        [lon - d, lat - d],
    ]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"kind": kind},
    }


async def new_elder(api: Api, who: str = "guardian_a") -> int:
    elder = (await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth(who))).json()
    return int(elder["id"])


async def add_zone(
    api: Api, elder_id: int, feature: dict[str, Any], who: str = "guardian_a"
) -> Any:
    return await api.http.post(
        f"/api/v1/elders/{elder_id}/zones", json=feature, headers=api.auth(who)
    )


def loc(response: Any) -> list[Any]:
    return list(response.json()["detail"][0]["loc"])


async def test_zones_are_created_listed_read_and_deleted(api: Api) -> None:
    elder_id = await new_elder(api)
    created = await add_zone(api, elder_id, circle(name="家"))
    assert created.status_code == 201, created.text
    assert created.json()["warnings"] == []
    polygon = await add_zone(api, elder_id, square(kind="danger"))
    assert polygon.status_code == 201
    listed = (
        await api.http.get(f"/api/v1/elders/{elder_id}/zones", headers=api.auth("guardian_a"))
    ).json()
    assert [(z["properties"]["kind"], z["geometry"]["type"]) for z in listed["items"]] == [
        ("safe", "Point"),
        ("danger", "Polygon"),
    ]
    zone_id = created.json()["id"]
    url = f"/api/v1/elders/{elder_id}/zones/{zone_id}"
    assert (await api.http.get(url, headers=api.auth("guardian_b"))).status_code == 403
    assert (await api.http.delete(url, headers=api.auth("guardian_a"))).status_code == 204
    assert (await api.http.get(url, headers=api.auth("guardian_a"))).status_code == 404


async def test_small_circle_warns(api: Api) -> None:
    response = await add_zone(api, await new_elder(api), circle(radius=120))
    assert response.status_code == 201
    assert "150 m" in response.json()["warnings"][0]


@pytest.mark.parametrize(
    ("feature", "where", "words"),
    [
        (circle(radius=50), ["properties", "radius_m"], "100"),
        (circle(radius=None), ["properties", "radius_m"], "needs radius_m"),
        (
            {**square(), "properties": {"kind": "safe", "radius_m": 200}},
            ["properties", "radius_m"],
            "only a Point",
        ),
        (
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[LON, LAT], [LON + 0.001, LAT], [LON, LAT]]],
                },
                "properties": {"kind": "safe"},
            },
            ["geometry", "coordinates", 0],
            "at least 4",
        ),
        (
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [LON, LAT],
                            [LON + 0.002, LAT + 0.002],
                            [LON + 0.002, LAT],
                            [LON, LAT + 0.002],
                            [LON, LAT],
                        ]
                    ],
                },
                "properties": {"kind": "safe"},
            },
            ["geometry", "coordinates"],
            "Self-intersection",
        ),
        (
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [LON, LAT],
                            [LON + 0.002, LAT],
                            [LON + 0.002, LAT + 0.002],
                            [LON, LAT + 0.002],
                        ]
                    ],
                },
                "properties": {"kind": "safe"},
            },
            ["geometry", "coordinates", 0],
            "closed",
        ),
        (square(lat=LAT + 0.3), ["geometry", "coordinates"], "20 km"),
        (
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [LON, 95]},
                "properties": {"kind": "safe", "radius_m": 200},
            },
            ["geometry", "coordinates"],
            "lat",
        ),
    ],
)
async def test_invalid_zones_get_422_naming_the_problem(
    api: Api, feature: dict[str, Any], where: list[Any], words: str
) -> None:
    response = await add_zone(api, await new_elder(api), feature)
    assert response.status_code == 422, response.text
    assert loc(response)[1:] == where
    assert words in response.json()["detail"][0]["msg"]


async def test_a_zone_drawn_on_amap_round_trips_within_a_metre(api: Api) -> None:
    elder_id = await new_elder(api)
    gcj_lat, gcj_lon = wgs84_to_gcj02(LAT, LON)
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [gcj_lon, gcj_lat]},
        "properties": {"kind": "safe", "radius_m": 200, "crs": "gcj02"},
    }
    created = (await add_zone(api, elder_id, feature)).json()
    stored_lon, stored_lat = created["geometry"]["coordinates"]
    assert haversine_m(stored_lat, stored_lon, LAT, LON) < 1.0  # stored in WGS-84
    shown = (
        await api.http.get(
            f"/api/v1/elders/{elder_id}/zones",
            params={"crs": "gcj02"},
            headers=api.auth("guardian_a"),
        )
    ).json()
    back_lon, back_lat = shown["items"][0]["geometry"]["coordinates"]
    assert haversine_m(back_lat, back_lon, gcj_lat, gcj_lon) < 1.0
    assert shown["items"][0]["properties"]["crs"] == "gcj02"


async def test_pause_is_bounded_and_owned(api: Api, clock: ManualClock) -> None:
    elder_id = await new_elder(api)
    url = f"/api/v1/elders/{elder_id}/pause"
    until = "2026-11-23T10:00:00Z"
    ok = await api.http.put(
        url, json={"until": until, "reason": "他和我在一起"}, headers=api.auth("guardian_a")
    )
    assert ok.status_code == 200 and ok.json()["until"] == until
    assert (await api.http.get(url, headers=api.auth("guardian_a"))).json()[
        "reason"
    ] == "他和我在一起"
    assert (
        await api.http.put(
            url, json={"until": "2026-11-23T07:00:00Z"}, headers=api.auth("guardian_a")
        )
    ).status_code == 422
    assert (
        await api.http.put(
            url, json={"until": "2026-11-25T07:00:00Z"}, headers=api.auth("guardian_a")
        )
    ).status_code == 422
    assert (
        await api.http.put(url, json={"until": until}, headers=api.auth("guardian_b"))
    ).status_code == 403
    assert (await api.http.delete(url, headers=api.auth("guardian_a"))).status_code == 204
    assert (await api.http.get(url, headers=api.auth("guardian_a"))).status_code == 404


# --- through the pipeline ---------------------------------------------------------------------
@pytest.fixture
def client(redis: object, store_url: str, on_cluster: bool) -> Iterator[redis.Redis]:
    sync = sync_client(store_url, process="test", cluster=on_cluster)
    yield sync
    sync.close()


def north(metres: float) -> float:
    return FRAME.latlon(0, metres)[0]


def fix_message(
    clock: ManualClock, metres_north: float, topic: str = "homeward/devices/b-1/up", acc: float = 10
) -> Message:
    payload = {
        "_type": "location",
        "lat": north(metres_north),
        "lon": LON,
        "tst": clock.time(),
        "acc": acc,
    }
    return Message(topic, json.dumps(payload).encode(), clock.time())


def store(client: redis.Redis, clock: ManualClock) -> UplinkStore:
    evaluator = ZoneEvaluator(client, timezone=load_settings().zone)
    return UplinkStore(client, clock=clock, retention_s=86400, evaluator=evaluator)


async def transitions(api: Api, elder_id: int) -> list[str]:
    items = (
        await api.http.get(f"/api/v1/elders/{elder_id}/transitions", headers=api.auth("guardian_a"))
    ).json()["items"]
    return [t["kind"] for t in reversed(items)]


async def with_device(api: Api, **device: Any) -> int:
    elder_id = await new_elder(api)
    body = {"device_id": "b-1", "elder_id": elder_id, **device}
    assert (
        await api.http.post("/api/v1/devices", json=body, headers=api.auth("admin"))
    ).status_code == 201
    return elder_id


async def test_zone_state_survives_a_restart(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    elder_id = await with_device(api)
    await add_zone(api, elder_id, circle())
    first = store(client, clock)
    for metres in (0, 0, 400):  # settle inside, then one fix outside
        clock.advance(30)
        first.process([fix_message(clock, metres)])
    second = store(client, clock)  # the ingest restarted: a fresh cache, state from Redis
    clock.advance(30)
    second.process([fix_message(clock, 420)])
    assert await transitions(api, elder_id) == ["zone_exit"]
    state = json.loads(client.hget(geofences_keys.zone_state(elder_id), "z1") or "{}")
    assert state["t"] == "outside"


async def test_a_paused_elder_raises_nothing_then_the_next_fix_counts(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    elder_id = await with_device(api)
    await add_zone(api, elder_id, circle())
    pipeline = store(client, clock)
    for metres in (0, 0):
        clock.advance(30)
        pipeline.process([fix_message(clock, metres)])
    await api.http.put(
        f"/api/v1/elders/{elder_id}/pause",
        json={"until": "2026-11-23T08:10:00Z"},
        headers=api.auth("guardian_a"),
    )
    for metres in (500, 520, 540):
        clock.advance(30)
        pipeline.process([fix_message(clock, metres)])
    assert await transitions(api, elder_id) == []
    clock.advance(600)  # the pause is over and she is still out
    pipeline.process([fix_message(clock, 560)])
    assert await transitions(api, elder_id) == ["zone_exit"]


async def test_a_zone_drawn_while_the_ingest_runs_is_used_from_the_next_batch(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    elder_id = await with_device(api)
    pipeline = store(client, clock)
    clock.advance(30)
    pipeline.process([fix_message(clock, 0)])  # no zones yet: cached as "nothing to do"
    await add_zone(api, elder_id, circle())
    for metres in (0, 0, 0, 500, 500):
        clock.advance(30)
        pipeline.process([fix_message(clock, metres)])
    assert await transitions(api, elder_id) == ["zone_exit"]


async def test_owntracks_leaving_twice_in_a_row_through_the_broker_is_one_exit(
    api: Api, mqtt_url: str, redis_url: str, clock: ManualClock, tmp_path: Path, on_cluster: bool
) -> None:
    if on_cluster:
        pytest.skip("the broker-fed ingest on a cluster: tests/test_cluster.py")
    elder_id = await with_device(api, protocol="owntracks", external_id="li/phone")
    await add_zone(api, elder_id, circle(radius=200))
    ingest = RunningIngest(mqtt_url, redis_url, tmp_path, clock)
    phone = Publisher(mqtt_url)
    try:
        for sent, metres in enumerate((0, 10, 450, 470, 490), start=1):
            clock.advance(20)
            payload = {
                "_type": "location",
                "lat": str(north(metres)),
                "lon": str(LON),
                "tst": str(int(clock.time())),
                "acc": "12",
                "tid": "li",
            }
            phone.send("owntracks/li/phone", payload)
            ingest.wait_processed(sent)
        assert await transitions(api, elder_id) == ["zone_exit"]
        [exit_] = (
            await api.http.get(
                f"/api/v1/elders/{elder_id}/transitions", headers=api.auth("guardian_a")
            )
        ).json()["items"]
        assert exit_["zone_id"] == "z1" and exit_["outside_all_safe"] is True
        assert abs(exit_["at"]["lat"] - north(470)) < 1e-6  # confirmed by the second fix outside
        stream = client_stream(redis_url)
        assert [f["kind"] for _, f in stream] == ["zone_exit"]
    finally:
        phone.close()
        ingest.close()


def client_stream(redis_url: str) -> list[tuple[str, dict[str, str]]]:
    sync = sync_client(redis_url, process="test")
    try:
        shard_streams = [geofences_keys.transitions(shard) for shard in shards.every()]
        return [e for stream in shard_streams for e in sync.xrange(stream)]
    finally:
        sync.close()


async def test_a_batch_retried_after_redis_lost_its_scripts_loses_no_exit(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    elder_id = await with_device(api)
    await add_zone(api, elder_id, circle())
    pipeline = store(client, clock)
    for metres in (0, 0, 400):
        clock.advance(30)
        pipeline.process([fix_message(clock, metres)])
    client.script_flush()  # what a Redis restart does to the script cache
    for metres in (420, 440, 460, 480):
        clock.advance(30)
        pipeline.process([fix_message(clock, metres)])
    assert await transitions(api, elder_id) == ["zone_exit"]
    assert (
        json.loads(client.hget(geofences_keys.zone_state(elder_id), "z1") or "{}")["t"] == "outside"
    )


async def test_late_fixes_in_a_batch_do_not_drop_the_live_ones(
    api: Api, client: redis.Redis, clock: ManualClock
) -> None:
    elder_id = await with_device(api)
    await add_zone(api, elder_id, circle())
    pipeline = store(client, clock)
    clock.advance(600)
    now = clock.time()
    batch = []
    for offset, metres in ((-100, 0), (-400, 400), (-380, 420), (-60, 0), (-30, 0)):
        payload = {
            "_type": "location",
            "lat": north(metres),
            "lon": LON,
            "tst": now + offset,
            "acc": 10,
        }
        batch.append(Message("homeward/devices/b-1/up", json.dumps(payload).encode(), now))
    outcome = pipeline.process(batch)
    assert outcome.outcomes["rejected"] == 0
    assert client.xlen(devices_keys.track(elder_id, "b-1")) == 5


async def test_more_zone_validation(api: Api) -> None:
    elder_id = await new_elder(api)
    huge = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [10**400, LAT]},
        "properties": {"kind": "safe", "radius_m": 200},
    }
    assert (
        await api.http.post(
            f"/api/v1/elders/{elder_id}/zones",
            content=json.dumps(huge),
            headers={**api.auth("guardian_a"), "Content-Type": "application/json"},
        )
    ).status_code == 422
    canal = square(d=0.0001, kind="danger")  # about 20 m across
    response = await add_zone(api, elder_id, canal)
    assert response.status_code == 201 and "across" in response.json()["warnings"][0]
    sliver = square(d=0.00001, kind="danger")
    assert (await add_zone(api, elder_id, sliver)).status_code == 422
    bad_cursor = await api.http.get(
        f"/api/v1/elders/{elder_id}/transitions",
        params={"cursor": "x"},
        headers=api.auth("guardian_a"),
    )
    assert bad_cursor.status_code == 422
