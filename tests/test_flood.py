"""A flooding bracelet is throttled per device: through the real broker and ingest, one
device at 2,000 msg/s beside 100 that report normally; their fixes keep their latency."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import redis
from paho.mqtt.enums import CallbackAPIVersion

from devices import keys as devices_keys
from devices.ingest.batch import BatchOutcome
from devices.ingest.throttle import BURST
from locator.core import keys
from locator.core.clock import SystemClock
from locator.core.mqtt import address
from locator.core.redis import sync_client
from locator.ingest_loop import IngestLoop
from tests.conftest import Api
from tests.factories import HAINING, elder_body

NORMAL = 100
ROUNDS = 3
FLOOD_RATE = 2000  # messages a second
FLOOD_TOTAL = 4000


def _client(mqtt_url: str) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    host, port = address(mqtt_url)
    client.connect(host, port)
    client.loop_start()
    return client


def _fix(tst: float, n: int = 0) -> bytes:
    body = {
        "_type": "location",
        "lat": HAINING["lat"] + n * 1e-6,
        "lon": HAINING["lon"],
        "tst": tst,
        "acc": 10,
        "src": "gps",
    }
    return json.dumps(body).encode()


async def test_one_flooding_bracelet_cannot_slow_or_fill_for_the_others(
    api: Api, mqtt_url: str, redis_url: str, tmp_path: Path
) -> None:
    devices = [f"n-{i}" for i in range(NORMAL)] + ["flood-0"]
    for device_id in devices:
        elder = await api.http.post(
            "/api/v1/elders", json=elder_body(), headers=api.auth("guardian_a")
        )
        body = {"device_id": device_id, "elder_id": elder.json()["id"]}
        r = await api.http.post("/api/v1/devices", json=body, headers=api.auth("admin"))
        assert r.status_code == 201, r.text
    flood_elder = int(elder.json()["id"])
    client: redis.Redis = sync_client(redis_url, process="test")
    keys_before = int(client.dbsize())

    stored_at: dict[tuple[str, float], float] = {}
    lock = threading.Lock()

    def on_batch(outcome: BatchOutcome) -> None:
        now = time.monotonic()
        with lock:
            for position, _ in outcome.positions:
                stored_at.setdefault((position.device_id, position.fix_time.timestamp()), now)

    clock = SystemClock()
    loop = IngestLoop(
        mqtt_url=mqtt_url,
        redis_url=redis_url,
        data_dir=tmp_path,
        clock=clock,
        retention_s=30 * 86400,
        client_id=f"test-ingest-{uuid.uuid4().hex[:8]}",
        on_batch=on_batch,
        adaptive_reporting=False,
    )
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    assert loop.subscribed.wait(10)
    bracelets, flooder = _client(mqtt_url), _client(mqtt_url)
    published: dict[tuple[str, float], float] = {}
    start = clock.time()

    def flood() -> None:
        # "Late" fixes (older than the last one), as a broken bracelet replays them.
        began = time.monotonic()
        for i in range(FLOOD_TOTAL):
            flooder.publish("homeward/devices/flood-0/up", _fix(start - 3600 + i * 0.01), qos=1)
            ahead = began + (i + 1) / FLOOD_RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    flood_thread = threading.Thread(target=flood)
    try:
        flooder.publish("homeward/devices/flood-0/up", _fix(start), qos=1).wait_for_publish(5)
        flood_thread.start()
        for round_ in range(ROUNDS):
            infos = []
            for n, device_id in enumerate(devices[:NORMAL]):
                tst = float(int(start) + round_)
                published[(device_id, tst)] = time.monotonic()
                infos.append(bracelets.publish(f"homeward/devices/{device_id}/up", _fix(tst, n)))
            for info in infos:
                info.wait_for_publish(5)
            time.sleep(0.7)
        flood_thread.join(30)
        deadline = time.monotonic() + 15
        while len([k for k in stored_at if k in published]) < len(published):
            assert time.monotonic() < deadline, f"{len(stored_at)} of {len(published)} stored"
            time.sleep(0.05)
        # Let the ingest drain the rest of the flood before counting it.
        counts: dict[str, int] = {}
        for _ in range(100):
            r = await api.http.get("/api/v1/rejected/counts", headers=api.auth("admin"))
            counts = r.json()
            flood_track = int(client.xlen(devices_keys.track(flood_elder, "flood-0")))
            if counts.get("rate_limited", 0) + flood_track >= FLOOD_TOTAL + 1:
                break
            time.sleep(0.1)
    finally:
        flood_thread.join(30)
        stop.set()
        thread.join(10)
        bracelets.disconnect()
        flooder.disconnect()
        bracelets.loop_stop()
        flooder.loop_stop()

    latencies = sorted(stored_at[k] - published[k] for k in published)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < 1.0, f"p99 {p99:.3f} s, max {latencies[-1]:.3f} s"
    # The flood: its burst and ~1/s stored, the rest counted (the staff's totals show it).
    assert flood_track <= BURST + 1 + 40
    assert counts["rate_limited"] == FLOOD_TOTAL + 1 - flood_track
    # ... in a handful of sampled dead letters, not one per message.
    letters: Any = client.xrange(keys.REJECTED)
    sampled = [f for _, f in letters if f["reason"] == "rate_limited"]
    assert 1 <= len(sampled) <= 5 and all(f["device_id"] == "flood-0" for f in sampled)
    # Redis stays bounded: the 100 normal devices' keys plus a few, not one per message.
    assert int(client.dbsize()) - keys_before < NORMAL * 12
    client.close()


def test_an_alarm_still_passes_an_empty_bucket_now_and_then() -> None:
    from devices.ingest.throttle import Throttle

    throttle = Throttle(rate_per_s=1.0, burst=3, alarm_every_s=10.0)
    assert [throttle.allow("b", 100.0) for _ in range(4)] == [True, True, True, False]
    assert throttle.allow("b", 100.0, alarm=True)  # SOS from a flooding bracelet
    assert not throttle.allow("b", 100.0, alarm=True)  # ... but not a flood of SOS
    assert throttle.allow("other", 100.0)  # buckets are per device
    assert throttle.allow("b", 101.0)  # refilled at the sustained rate
