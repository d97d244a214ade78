"""No fix lost: the ingest killed with SIGKILL mid-stream, and Redis down for a while.

Both run against a real Mosquitto (with the production delivery limits) when one is
installed: persistent sessions and QoS 1 redelivery are the broker's half of the promise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devices import keys as devices_keys
from devices.elders import service as elders
from devices.elders.schemas import ElderCreate
from devices.registry import service as registry
from devices.registry.schemas import DeviceCreate
from locator.core.auth import Principal, Role
from locator.core.clock import SystemClock
from locator.core.redis import async_client
from locator.embedded import EmbeddedRedis
from locator.ingest_loop import IngestLoop
from locator.mosquitto import mosquitto_binary
from locator.processes import read_heartbeat
from tests.conftest import Api
from tests.factories import HAINING, elder_body
from tests.ingest_harness import Publisher, wait_for

pytestmark = pytest.mark.skipif(
    mosquitto_binary() is None and not os.environ.get("HOMEWARD_TEST_MQTT_URL"),
    reason="needs a real Mosquitto (Debian package mosquitto)",
)
DEVICES = 10


def stored(client: redis.Redis, elder_ids: list[int]) -> int:
    pipe = client.pipeline(transaction=False)
    for n, elder_id in enumerate(elder_ids):
        pipe.xlen(devices_keys.track(elder_id, f"d-{n}"))
    return sum(pipe.execute())


def fixes(count: int) -> Iterator[tuple[str, bytes]]:
    """Distinct fixes from DEVICES bracelets, interleaved, all at the same place."""
    base = time.time() - 4000
    for i in range(count):
        device = i % DEVICES
        payload = {
            "_type": "location",
            "lat": HAINING["lat"],
            "lon": HAINING["lon"],
            "tst": base + i,
            "acc": 10,
        }
        yield f"homeward/devices/d-{device}/up", json.dumps(payload).encode()


async def register_devices(api: Api) -> list[int]:
    elder_ids = []
    for n in range(DEVICES):
        elder = (
            await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("admin"))
        ).json()
        await api.http.post(
            "/api/v1/devices",
            json={"device_id": f"d-{n}", "elder_id": elder["id"]},
            headers=api.auth("admin"),
        )
        elder_ids.append(int(elder["id"]))
    return elder_ids


def start_ingest(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "locator", "ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_subscribed(data_dir: Path) -> None:
    def ready() -> bool:
        heartbeat = read_heartbeat(data_dir, "ingest")
        return heartbeat is not None and heartbeat.status.get("subscribed") is True

    wait_for(ready, timeout=20)


async def test_sigkill_mid_stream_loses_nothing_and_stores_nothing_twice(
    api: Api, redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    elder_ids = await register_devices(api)
    sync = redis.Redis.from_url(redis_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWARD_")}
    env.update(
        HOMEWARD_REDIS_URL=redis_url,
        HOMEWARD_MQTT_URL=mqtt_url,
        HOMEWARD_DATA_DIR=str(tmp_path),
        HOMEWARD_MQTT_CLIENT_ID=f"kill-test-{uuid.uuid4().hex[:6]}",
    )
    ingest = start_ingest(env)
    wait_subscribed(tmp_path)
    total = 3000
    publisher = Publisher(mqtt_url)
    done = threading.Event()
    sent = 0

    def publish_all() -> None:
        nonlocal sent
        for topic, payload in fixes(total):
            publisher.send(topic, payload)
            sent += 1
        done.set()

    thread = threading.Thread(target=publish_all, daemon=True)
    thread.start()
    try:
        wait_for(lambda: stored(sync, elder_ids) >= 600, timeout=30)
        ingest.send_signal(signal.SIGKILL)
        ingest.wait(timeout=10)
        killed_at = stored(sync, elder_ids)
        assert 0 < killed_at < total, "the kill did not land mid-stream: nothing was tested"
        sent_at_kill = sent
        # Fixes keep arriving at the broker while no ingest runs.
        wait_for(lambda: sent >= min(total, sent_at_kill + 200), timeout=30)
        ingest = start_ingest(env)
        assert done.wait(60)
        # The broker redelivers in order, so once the last fix published is stored, every
        # redelivered one before it has been processed too.
        wait_for(lambda: stored(sync, elder_ids) >= total, timeout=60)
        assert stored(sync, elder_ids) == total  # exactly once: redelivery made no second fix
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(timeout=15)
        publisher.close()
        sync.close()


async def test_a_redis_outage_holds_acks_and_loses_nothing(
    api: Api, mqtt_url: str, tmp_path: Path
) -> None:
    outage_s = float(os.environ.get("HOMEWARD_TEST_OUTAGE_S", "30"))
    server = EmbeddedRedis(tmp_path / "own-redis")
    url = server.start()
    # This test's own Redis: it will be stopped and started again on the same port and AOF.
    from locator.app import create_app  # noqa: F401 - the registry below goes through the API's store

    own = async_client(url, process="test")
    admin = Principal(Role.ADMIN)
    elder_ids = []
    for n in range(DEVICES):
        elder = await elders.create(
            own, caller=admin, body=ElderCreate.model_validate(elder_body()), clock=SystemClock()
        )
        await registry.register(
            own,
            caller=admin,
            body=DeviceCreate(device_id=f"d-{n}", elder_id=elder.id),
            clock=SystemClock(),
        )
        elder_ids.append(elder.id)
    await own.aclose()

    loop = IngestLoop(
        mqtt_url=mqtt_url,
        redis_url=url,
        data_dir=tmp_path,
        clock=SystemClock(),
        retention_s=86400 * 30,
        client_id=f"outage-test-{uuid.uuid4().hex[:6]}",
    )
    stop = threading.Event()
    worker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    worker.start()
    sync = redis.Redis.from_url(url)
    publisher = Publisher(mqtt_url)
    try:
        assert loop.subscribed.wait(10)
        stream = list(fixes(600))
        for topic, payload in stream[:300]:
            publisher.send(topic, payload)
        wait_for(lambda: stored(sync, elder_ids) == 300, timeout=20)
        sync.close()
        server.stop()
        for topic, payload in stream[300:]:
            publisher.send(topic, payload)  # the broker takes them; the ingest cannot store them
        wait_for(lambda: not loop.redis_ok, timeout=20)

        def says_redis_unreachable() -> bool:
            heartbeat = read_heartbeat(tmp_path, "ingest")
            problem = heartbeat.problem() if heartbeat is not None else None
            return bool(problem and "Redis unreachable" in problem)

        # The flag flips just before the heartbeat file is rewritten: wait for the file.
        wait_for(says_redis_unreachable, timeout=10)
        time.sleep(outage_s)
        server.start()
        sync = redis.Redis.from_url(url)
        wait_for(lambda: stored(sync, elder_ids) >= 600, timeout=60)
        assert stored(sync, elder_ids) == 600
        assert loop.redis_ok
    finally:
        stop.set()
        worker.join(timeout=15)
        publisher.close()
        sync.close()
        server.stop()


async def test_mqtt5_session_with_expiry_keeps_what_arrives_while_the_ingest_is_down(
    api: Api, redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    if os.environ.get("HOMEWARD_TEST_MQTT_URL"):
        pytest.skip("needs the local Mosquitto (MQTT 5)")
    elder_ids = await register_devices(api)
    sync = redis.Redis.from_url(redis_url)
    url = mqtt_url + "?protocol=5"
    client_id = f"v5-test-{uuid.uuid4().hex[:6]}"

    def run_ingest() -> tuple[IngestLoop, threading.Event, threading.Thread]:
        loop = IngestLoop(
            mqtt_url=url,
            redis_url=redis_url,
            data_dir=tmp_path,
            clock=SystemClock(),
            retention_s=86400 * 30,
            client_id=client_id,
        )
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
        thread.start()
        assert loop.subscribed.wait(10)
        return loop, stop, thread

    publisher = Publisher(mqtt_url)
    try:
        stream = list(fixes(200))
        _, stop, thread = run_ingest()
        for topic, payload in stream[:100]:
            publisher.send(topic, payload)
        wait_for(lambda: stored(sync, elder_ids) == 100, timeout=20)
        stop.set()
        thread.join(timeout=10)
        for topic, payload in stream[100:]:
            publisher.send(topic, payload)  # nobody is connected: the v5 session queues them
        _, stop, thread = run_ingest()
        wait_for(lambda: stored(sync, elder_ids) == 200, timeout=20)
        stop.set()
        thread.join(timeout=10)
    finally:
        publisher.close()
        sync.close()
