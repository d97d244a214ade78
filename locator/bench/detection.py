"""`homeward bench fences --detection`: how fast real exits are confirmed, and at what cost.

Elder-days from the simulator (half calm, half with one wandering walk) go through the real
pipeline — Mosquitto, the ingest with its zone engine, the ticker — in simulated time that
advances in lockstep: a tick's fixes are published, the ingest stores them, the commands it
sends reach the simulated bracelets, the ticker fires what is due, then time moves on. So
the measured latency is the algorithm's (intervals, debounce, command round trips), not this
machine's speed. Latency counts from the true exit to the fix that confirmed the zone_exit.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.ingest.batch import BatchOutcome
from geofences.service import shard_transitions
from locator.core.mqtt import MqttPublisher, address
from locator.core.redis import sync_client
from locator.embedded import EmbeddedRedis, free_port
from locator.ingest_loop import IngestLoop
from locator.mosquitto import LocalMosquitto
from locator.simulate import driver
from locator.simulate.model import DAY_S
from locator.ticker import Ticker

TICK_S = 5.0
MISS_AFTER_S = 600.0


class SimClock:
    """Simulated time, moved only by the replay."""

    def __init__(self, start: float) -> None:
        self.t = start

    def time(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)


class CountingPublisher:
    def __init__(self, inner: MqttPublisher) -> None:
        self.inner, self.sent = inner, 0

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.inner.publish(topic, payload, qos=qos)
        self.sent += 1


@dataclass
class ConfigResult:
    interval_s: float
    adaptive: bool
    elder_days: int
    false_alarms: int
    misses: int
    latencies: list[float]
    commands: int

    def line(self) -> str:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p90 = lat[min(len(lat) - 1, int(0.9 * len(lat)))] if lat else float("nan")
        per_100 = 100 * self.false_alarms / self.elder_days
        return (
            f"base {self.interval_s:>4.0f} s  adaptive {'on ' if self.adaptive else 'off'}  "
            f"false alarms/100 elder-days {per_100:4.1f}  "
            f"missed {self.misses}/{len(lat) + self.misses}  "
            f"latency p50 {p50:5.0f} s  p90 {p90:5.0f} s  "
            f"commands/elder-day {self.commands / self.elder_days:5.1f}"
        )


def _wait(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def run_config(*, interval_s: float, adaptive: bool, elders: int, seed: int) -> ConfigResult:
    with tempfile.TemporaryDirectory(prefix="homeward-detect-") as tmp:
        root = Path(tmp)
        redis_server = EmbeddedRedis(root / "redis")
        broker = LocalMosquitto(root / "mosquitto", free_port())
        redis_url, mqtt_url = redis_server.start(), broker.start()
        try:
            return _replay(
                redis_url,
                mqtt_url,
                root,
                interval_s=interval_s,
                adaptive=adaptive,
                elders=elders,
                seed=seed,
            )
        finally:
            broker.stop()
            redis_server.stop()


def _replay(
    redis_url: str,
    mqtt_url: str,
    root: Path,
    *,
    interval_s: float,
    adaptive: bool,
    elders: int,
    seed: int,
) -> ConfigResult:
    day_start = time.time() - 2 * DAY_S
    clock = SimClock(day_start)
    bracelets = driver.build(
        elders, interval_s=interval_s, wander_fraction=0.5, day_start=day_start, seed=seed
    )
    asyncio.run(driver.register(redis_url, bracelets))
    by_id = {b.device_id: b for b in bracelets}

    processed = 0
    lock = threading.Condition()

    def on_batch(outcome: BatchOutcome) -> None:
        nonlocal processed
        with lock:
            processed += sum(v for k, v in outcome.outcomes.items() if ":" not in k)

    ingest = IngestLoop(
        mqtt_url=mqtt_url,
        redis_url=redis_url,
        data_dir=root,
        clock=clock,
        retention_s=30 * 86400,
        client_id=f"detect-{uuid.uuid4().hex[:6]}",
        on_batch=on_batch,
        adaptive_reporting=adaptive,
    )
    stop = threading.Event()
    worker = threading.Thread(target=ingest.run, args=(stop,), daemon=True)
    worker.start()
    received = 0

    def on_command(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        nonlocal received
        bracelet = by_id.get(msg.topic.split("/")[2])
        if bracelet is not None:
            bracelet.command(json.loads(msg.payload), clock.time())
        received += 1

    sim = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"detect-sim-{uuid.uuid4().hex[:6]}")
    subscribed = threading.Event()
    sim.on_message = on_command
    sim.on_subscribe = lambda *a: subscribed.set()
    host, port = address(mqtt_url)
    sim.connect(host, port)
    sim.loop_start()
    sim.subscribe("homeward/devices/+/cmd", qos=1)
    client = sync_client(redis_url, process="bench")
    ticker_publisher = CountingPublisher(
        MqttPublisher(mqtt_url, client_id=f"detect-ticker-{uuid.uuid4().hex[:6]}")
    )
    ticker = Ticker(client, clock=clock, offline_after_s=1200, publisher=ticker_publisher)
    try:
        if not (subscribed.wait(10) and ingest.connected.wait(10)):
            raise RuntimeError("broker did not take the subscriptions")
        time.sleep(0.3)
        published = 0
        end = day_start + DAY_S
        while True:
            due = min(b.due() for b in bracelets)
            if due > end:
                break
            clock.t = max(clock.t, due)
            tick_end = clock.t + TICK_S
            for bracelet in bracelets:
                while bracelet.due() <= tick_end:
                    for payload in bracelet.emit():
                        sim.publish(
                            f"homeward/devices/{bracelet.device_id}/up", json.dumps(payload), qos=1
                        )
                        published += 1
            clock.t = tick_end
            target = published
            if not _wait(lambda target=target: processed >= target):
                raise RuntimeError(f"ingest processed {processed} of {published}")
            ticker.run_once()
            sent = ingest.commands_sent + ticker_publisher.sent
            _wait(lambda sent=sent: received >= sent, timeout=2.0)
        exits = _exits(client, bracelets)
    finally:
        stop.set()
        worker.join(timeout=10)
        ticker_publisher.inner.close()
        sim.disconnect()
        sim.loop_stop()
        client.close()
    false_alarms, misses, latencies = 0, 0, []
    for bracelet in bracelets:
        mine = sorted(exits.get(bracelet.device_id, []))
        truth = bracelet.episode.exit_time if bracelet.episode else None
        if truth is None:
            false_alarms += len(mine)
            continue
        early = [t for t in mine if t < truth]
        false_alarms += len(early)
        confirmed = [t for t in mine if truth <= t <= truth + MISS_AFTER_S]
        if confirmed:
            latencies.append(confirmed[0] - truth)
        else:
            misses += 1
    return ConfigResult(
        interval_s=interval_s,
        adaptive=adaptive,
        elder_days=elders,
        false_alarms=false_alarms,
        misses=misses,
        latencies=latencies,
        commands=ingest.commands_sent + ticker_publisher.sent,
    )


def _exits(client: Any, bracelets: list[Any]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    entries = shard_transitions(client)
    # One exit relayed twice (a crash between relay and pop) is one exit: keyed by source.
    unique = {fields.get("source") or entry_id: fields for entry_id, fields in entries}
    for fields in unique.values():
        if fields["kind"] == "zone_exit":
            out.setdefault(fields["device_id"], []).append(float(fields["tst"]))
    return out


def run(*, elders: int, intervals: list[float], seed: int) -> str:
    from locator.bench.ingest import machine

    lines = [
        f"machine: {machine()}",
        f"elder-days per configuration: {elders} (half with one wandering walk)",
    ]
    for interval in intervals:
        for adaptive in (False, True):
            lines.append(
                run_config(interval_s=interval, adaptive=adaptive, elders=elders, seed=seed).line()
            )
    return "\n".join(lines)
