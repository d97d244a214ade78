"""Province scale on one machine: three `homeward ingest` processes share the uplink through a
Mosquitto shared subscription, two `homeward ticker` processes (each with its alerts workers)
share the store. One elder's fixes are dealt out of order across the ingests, with
duplicates, and one ingest is SIGKILLed mid-stream: exactly one exit, no false alarm for a
neighbour who stayed in, every fix stored once, and every ladder step and page once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import redis
from paho.mqtt.enums import CallbackAPIVersion

from alerts import keys as alerts_keys
from alerts.incidents import storage
from alerts.notify.attempts import read_attempt
from devices import keys as devices_keys
from geofences import keys as geofences_keys
from locator.core.mqtt import address
from locator.mosquitto import mosquitto_binary
from locator.processes import read_heartbeat
from tests.alerts_harness import build_district, north
from tests.conftest import Api
from tests.factories import elder_body
from tests.ingest_harness import Publisher, wait_for

GROUP = "province"
SEED = 21


def _spawn(
    command: str, env: dict[str, str], data_dir: Path, **extra: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "locator", command],
        env={**env, "HOMEWARD_DATA_DIR": str(data_dir), **extra},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _subscribed(data_dir: Path) -> bool:
    beat = read_heartbeat(data_dir, "ingest")
    return beat is not None and beat.status.get("subscribed") is True


def _fix(t: float, metres: float, acc: float = 5) -> bytes:
    return json.dumps({"_type": "location", "tst": t, "acc": acc, **north(metres)}).encode()


class _Pushes:
    """A test subscriber on the volunteers' push topic: every page the MQTT channel sent."""

    def __init__(self, mqtt_url: str) -> None:
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"pushes-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_connect = lambda c, *_: c.subscribe("homeward/volunteers/+/alerts", 1)
        self.client.connect(*address(mqtt_url))
        self.client.loop_start()
        assert self._ready.wait(10), "the push subscriber did not subscribe"

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.seen[json.loads(msg.payload)["attempt_id"]] += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_three_ingests_out_of_order_and_one_killed_two_tickers(
    api: Api, redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    assert mosquitto_binary(), "shared subscriptions need Mosquitto (the embedded amqtt has none)"
    district = await build_district(api)
    walker = district.elder_id
    made = await api.http.post(
        "/api/v1/elders", json=elder_body("王阿公"), headers=api.auth("guardian_a")
    )
    stayer = int(made.json()["id"])
    zone = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [north(0)["lon"], north(0)["lat"]]},
        "properties": {"kind": "safe", "radius_m": 150},
    }
    r = await api.http.post(
        f"/api/v1/elders/{stayer}/zones", json=zone, headers=api.auth("guardian_a")
    )
    assert r.status_code == 201, r.text
    for device, elder in (("w-walker", walker), ("w-stayer", stayer)):
        body = {"device_id": device, "elder_id": elder}
        r = await api.http.post("/api/v1/devices", json=body, headers=api.auth("admin"))
        assert r.status_code == 201, r.text

    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWARD_")}
    env.update(
        HOMEWARD_REDIS_URL=redis_url,
        HOMEWARD_MQTT_URL=mqtt_url,
        HOMEWARD_VOICE_AFTER_S="2",
        HOMEWARD_RESPOND_SLA_S="4",
        HOMEWARD_ONSITE_SLA_S="6",
    )
    run = uuid.uuid4().hex[:6]  # fresh broker sessions for this run
    ingest_ids = [f"ingest-{n}-{run}" for n in range(3)]
    ingest_dirs = [tmp_path / f"ingest-{n}" for n in range(3)]

    def start_ingest(n: int) -> subprocess.Popen[bytes]:
        return _spawn(
            "ingest",
            env,
            ingest_dirs[n],
            HOMEWARD_INGEST_GROUP=GROUP,
            HOMEWARD_MQTT_CLIENT_ID=ingest_ids[n],
        )

    ticker_dirs = [tmp_path / "ticker-a", tmp_path / "ticker-b"]
    procs = [start_ingest(n) for n in range(3)] + [_spawn("ticker", env, d) for d in ticker_dirs]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    pushes = _Pushes(mqtt_url)
    publisher = Publisher(mqtt_url)
    try:
        for data_dir in ingest_dirs:
            wait_for(lambda d=data_dir: _subscribed(d), timeout=30)
        for data_dir in ticker_dirs:
            wait_for(lambda d=data_dir: read_heartbeat(d, "alerts") is not None, timeout=30)

        base = time.time() - 400
        sent = {"w-walker": 0, "w-stayer": 0}
        track = {
            "w-walker": devices_keys.track(walker, "w-walker"),
            "w-stayer": devices_keys.track(stayer, "w-stayer"),
        }

        def one_by_one(device: str, t: float, metres: float) -> None:
            """A fix sent and stored before the next: the state both elders start from."""
            publisher.send(f"homeward/devices/{device}/up", _fix(t, metres))
            sent[device] += 1
            wait_for(lambda: client.xlen(track[device]) == sent[device], timeout=10)

        for i in range(3):  # both at home, known inside
            one_by_one("w-walker", base + 10 * i, 0)
            one_by_one("w-stayer", base + 10 * i, 5 * i)

        # The burst: she walks out (5 fixes still inside, then 19 outside, 200 m and on); he
        # drifts indoors (up to 40 m) with one 250 m jump. Her walk is disordered locally
        # (blocks of three shuffled), so most of her fixes are current and the ingests race on
        # her zone state; his is shuffled whole. The two interleaved, a quarter sent twice, and
        # the order the broker deals them in is the ingests' race on top of that.
        rng = random.Random(SEED)
        walk = [
            _fix(base + 10 * i, 200 + 10 * (i - 8) if i >= 8 else rng.uniform(0, 30))
            for i in range(3, 27)
        ]
        walk = [f for n in range(0, len(walk), 3) for f in rng.sample(walk[n : n + 3], 3)]
        drift = [
            _fix(base + 10 * i, 250 if i == 9 else rng.uniform(-40, 40), 10) for i in range(3, 27)
        ]
        rng.shuffle(drift)
        sent["w-walker"] += len(walk)
        sent["w-stayer"] += len(drift)
        burst = [
            (device, fix)
            for pair in zip(walk, drift, strict=True)
            for device, fix in zip(("w-walker", "w-stayer"), pair, strict=True)
        ]
        for again in rng.sample(range(len(burst)), len(burst) // 4):
            burst.insert(rng.randrange(again + 1, len(burst) + 1), burst[again])
        half = len(burst) // 2
        for device, payload in burst[:half]:
            publisher.send(f"homeward/devices/{device}/up", payload)
        procs[0].send_signal(signal.SIGKILL)  # mid-stream, with whatever it held unacknowledged
        procs[0].wait(timeout=10)
        for device, payload in burst[half:]:
            publisher.send(f"homeward/devices/{device}/up", payload)
        # Its supervisor restarts it under the same client id: the broker hands its session
        # (what it held unacknowledged, what was dealt to it while down) to the new process.
        procs[0] = start_ingest(0)
        for device in sent:
            wait_for(lambda d=device: client.xlen(track[d]) >= sent[d], timeout=20)
        # She keeps reporting from outside: the last two fixes, in order.
        one_by_one("w-walker", base + 270, 400)
        one_by_one("w-walker", base + 280, 410)

        def kinds(elder_id: int) -> list[str]:
            return [f["kind"] for _, f in client.xrange(geofences_keys.elder_transitions(elder_id))]

        wait_for(lambda: "zone_exit" in kinds(walker), timeout=10)
        wait_for(lambda: storage.open_incident_id(client, walker) is not None, timeout=10)
        incident_id = storage.open_incident_id(client, walker)
        assert incident_id is not None

        def steps() -> list[str]:
            raw = client.lrange(alerts_keys.incident_timeline(walker, incident_id), 0, -1)
            return [e["step"] for e in map(json.loads, raw) if e["type"] == "step"]

        wait_for(lambda: len(steps()) >= 3, timeout=30)
        attempts = client.zrange(alerts_keys.incident_attempts(walker, incident_id), 0, -1)
        finished = ("queued", "sending", "retry")
        wait_for(
            lambda: all(
                getattr(read_attempt(client, a), "status", None) not in finished for a in attempts
            ),
            timeout=15,
        )
        time.sleep(1.0)  # anything doubled would show by now

        # Exactly one exit; nothing for the neighbour who stayed in (one jump, shuffled noise).
        assert kinds(walker) == ["zone_exit"]
        assert kinds(stayer) == []
        assert storage.open_incident_id(client, stayer) is None
        # Every distinct fix stored once: duplicates and redeliveries after the kill are not.
        assert client.xlen(track["w-walker"]) == sent["w-walker"] == 29
        assert client.xlen(track["w-stayer"]) == sent["w-stayer"] == 27

        # The uplink was shared, not copied to each: a plain subscription would hand every
        # ingest the whole stream (and the store would hide it as duplicates).
        def handled(n: int) -> int:
            beat = read_heartbeat(ingest_dirs[n], "ingest")
            return int(beat.status.get("handled", 0)) if beat else 0

        wait_for(lambda: handled(1) > 0 and handled(2) > 0, timeout=5)
        assert max(handled(1), handled(2)) < len(burst)
        # One incident, its ladder once: each step once, each page (step, recipient,
        # channel) made once and tried once, every volunteer push received once.
        assert client.zcard(alerts_keys.elder_incidents(walker)) == 1
        assert steps() == ["voice", "respond", "onsite"]
        read = {
            a: read_attempt(client, a)
            for a in client.zrange(alerts_keys.incident_attempts(walker, incident_id), 0, -1)
        }
        docs = {a: d for a, d in read.items() if d is not None}
        assert len(docs) == len(attempts) and len(docs) >= 10
        assert {a: d.tries for a, d in docs.items() if d.tries != 1} == {}
        pushed = {a for a, d in docs.items() if d.channel == "mqtt" and d.status == "sent"}
        assert pushed, "the volunteers were paged over MQTT"
        assert set(pushes.seen) == pushed
        assert max(pushes.seen.values()) == 1
    finally:
        publisher.close()
        pushes.close()
        for process in procs:
            if process.poll() is None:
                process.terminate()
        for process in procs:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        client.close()


def test_a_group_on_the_embedded_broker_is_refused_in_one_line(tmp_path: Path) -> None:
    """amqtt grants `$share/...` and then delivers nothing: an ingest that way would sit idle."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWARD_")}
    env.update(HOMEWARD_DATA_DIR=str(tmp_path), HOMEWARD_INGEST_GROUP=GROUP)
    result = subprocess.run(
        [sys.executable, "-m", "locator", "run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("homeward: HOMEWARD_INGEST_GROUP needs a broker with shared")
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert not (tmp_path / "runtime.json").exists()  # nothing was started


def test_a_group_name_is_one_topic_level() -> None:
    from locator.core.errors import ConfigError
    from locator.core.settings import load_settings
    from locator.ingest_loop import uplink_topics

    assert uplink_topics("") == ("homeward/devices/+/up", "owntracks/+/+", "owntracks/+/+/event")
    assert uplink_topics("g1")[0] == "$share/g1/homeward/devices/+/up"
    for bad in ("a/b", "a+", "#"):
        with pytest.raises(ConfigError, match="HOMEWARD_INGEST_GROUP"):
            load_settings(ingest_group=bad)
