"""`homeward bench gateway`: GT06 bracelets on real sockets through `homeward gateway`,
Mosquitto and the real ingest, beside a bare asyncio reader of the same byte streams.

All on loopback in one temporary directory: a Redis 6.2 and a Mosquitto with the production
delivery limits, the ingest (`python -m locator ingest`) and the gateway (`python -m locator
gateway`) as their own processes, so the gateway's memory is its own VmRSS. Fleet processes
hold the bracelet sockets. Each server (the bare reader, then the gateway) gets the same run:
N sockets log in (held = login acked), every socket sends F location frames (0x12) and a
heartbeat whose ack is the barrier (the gateway acks a socket's frames in order, each after
its PUBACK), then — gateway only — a paced load stamped at send time, and each fix's
send-to-stored latency is read from its track entry's stream id (Redis's time of the XADD).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from devices.telemetry.readers import queue_track_length, queue_track_since
from locator.bench import bracelets
from locator.bench.ingest import machine, register_devices
from locator.bench.procstat import cpu_s, rss_kb
from locator.core.redis import sync_client
from locator.embedded import EmbeddedRedis, free_port
from locator.mosquitto import LocalMosquitto

TARGET_BYTES_PER_CONNECTION = 20 * 1024
TARGET_RATE = 5000
TARGET_P99_MS = 250


@dataclass
class ServerRun:
    """One server's share of the run."""

    held: int
    connect_s: float
    rss_idle_kb: int
    rss_held_kb: int
    rss_after_kb: int
    fixes: int
    blast_s: float
    blast_cpu_s: float  # the server's user + system CPU during the blast: steadier than rate

    @property
    def cpu_us_per_frame(self) -> float:
        return self.blast_cpu_s * 1e6 / self.fixes if self.fixes else 0.0

    @property
    def per_connection_bytes(self) -> float:
        return (self.rss_held_kb - self.rss_idle_kb) * 1024 / self.held if self.held else 0.0

    @property
    def rate(self) -> float:
        return self.fixes / self.blast_s if self.blast_s else 0.0


@dataclass
class GatewayBenchResult:
    connections: int
    frames: int
    fleets: int
    bare: ServerRun
    gateway: ServerRun
    offered_rate: float
    latencies_ms: list[float]
    stored: int
    expected: int

    def latency(self, q: float) -> float:
        lat = self.latencies_ms
        return lat[min(len(lat) - 1, int(len(lat) * q))] if lat else float("nan")


class _Fleets:
    """The fleet processes, each with its share of the bracelets."""

    def __init__(self, count: int, connections: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.procs = []
        for _ in range(count):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=bracelets.fleet_main, args=(there,), daemon=True)
            proc.start()
            self.pipes.append(here)
            self.procs.append(proc)
        self.shares = [list(range(i, connections, count)) for i in range(count)]

    def ask(self, command: str, *args: Any, share: bool = False, timeout: float = 900) -> list[Any]:
        for pipe, numbers in zip(self.pipes, self.shares, strict=True):
            pipe.send((command, (*args, numbers) if share else args))
        answers = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise RuntimeError(f"a bracelet fleet did not answer {command} in {timeout} s")
            answers.append(pipe.recv())
        return answers

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(("exit", ()))
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


def _drive(fleets: _Fleets, port: int, pid: int, *, frames: int, base_tst: int) -> ServerRun:
    """Connect every bracelet to ``port``, then blast; memory of ``pid`` around it."""
    time.sleep(1.0)  # the server settles (the gateway connects to the broker)
    idle = rss_kb(pid)
    connected = fleets.ask("connect", port, share=True)
    held = sum(h for h, _ in connected)
    connect_s = max(s for _, s in connected)
    time.sleep(0.5)
    held_kb = rss_kb(pid)
    cpu_before = cpu_s(pid)
    blasted = fleets.ask("blast", frames, base_tst)
    blast_cpu = cpu_s(pid) - cpu_before
    start, end = min(b[0] for b in blasted), max(b[1] for b in blasted)
    return ServerRun(
        held=held,
        connect_s=connect_s,
        rss_idle_kb=idle,
        rss_held_kb=held_kb,
        rss_after_kb=rss_kb(pid),
        fixes=sum(b[2] for b in blasted),
        blast_s=end - start,
        blast_cpu_s=blast_cpu,
    )


def _stored(redis_url: str, connections: int) -> int:
    client = sync_client(redis_url, process="bench")
    try:
        pipe = client.pipeline(transaction=False)
        for n in range(connections):
            queue_track_length(pipe, elder_id=n + 1, device_id=bracelets.imei(n))
        return sum(pipe.execute())
    finally:
        client.close()


def _wait_stored(redis_url: str, connections: int, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    stored = _stored(redis_url, connections)
    while stored < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        stored = _stored(redis_url, connections)
    return stored


def _latencies(redis_url: str, sent: list[tuple[int, int, float]], since_ms: int) -> list[float]:
    """Send → stored (the track entry's stream id is Redis's clock at the XADD), in ms."""
    when = {(n, tst): t for n, tst, t in sent}
    client = sync_client(redis_url, process="bench")
    try:
        pipe = client.pipeline(transaction=False)
        devices = sorted({n for n, _, _ in sent})
        for n in devices:
            queue_track_since(pipe, elder_id=n + 1, device_id=bracelets.imei(n), since_ms=since_ms)
        out = []
        for n, entries in zip(devices, pipe.execute(), strict=True):
            for entry_id, fields in entries:
                sent_at = when.get((n, int(float(fields["tst"]))))
                if sent_at is not None:
                    out.append(int(entry_id.split("-")[0]) - sent_at * 1000)
        return sorted(out)
    finally:
        client.close()


def _service(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("a") as err:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "locator", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


def _stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(
    *,
    connections: int,
    frames: int,
    rate: float,
    seconds: float,
    fleets: int,
    workdir: Path | None,
) -> GatewayBenchResult:
    bracelets.raise_nofile()  # inherited by the fleets and the gateway
    with tempfile.TemporaryDirectory(prefix="homeward-bench-gw-", dir=workdir) as tmp:
        root = Path(tmp)
        redis_server = EmbeddedRedis(root / "redis")
        broker = LocalMosquitto(root / "mosquitto", free_port())
        redis_url = redis_server.start()
        mqtt_url = broker.start()
        ingest = gateway = None
        crowd: _Fleets | None = None
        try:
            asyncio.run(
                register_devices(redis_url, connections, device_id=bracelets.imei, protocol="gt06")
            )
            env = {
                **os.environ,
                "HOMEWARD_REDIS_URL": redis_url,
                "HOMEWARD_MQTT_URL": mqtt_url,
                "HOMEWARD_DATA_DIR": str(root / "data"),
                "HOMEWARD_LOG_LEVEL": "warning",
                "HOMEWARD_GATEWAY_PORTS": f"gt06={free_port()}",
                "HOMEWARD_GATEWAY_CLIENT_ID": "bench-gateway",
            }
            ingest = _service(["ingest"], env, root / "ingest.log")
            crowd = _Fleets(fleets, connections)
            base_tst = int(time.time()) - 600 - frames  # in the past, one second per frame

            ctx = multiprocessing.get_context("spawn")
            here, there = ctx.Pipe()
            reader = ctx.Process(target=bracelets.bare_main, args=(there,), daemon=True)
            reader.start()
            port = here.recv()
            assert reader.pid is not None
            bare = _drive(crowd, port, reader.pid, frames=frames, base_tst=base_tst)
            crowd.ask("close")
            here.send("stop")
            here.recv()
            reader.join(timeout=10)

            gateway = _service(["gateway"], env, root / "gateway.log")
            assert gateway.stdout is not None
            line = gateway.stdout.readline()
            if "listening" not in line:
                log = (root / "gateway.log").read_text()[-2000:]
                raise RuntimeError(f"the gateway did not start: {line!r} {log}")
            port = int(env["HOMEWARD_GATEWAY_PORTS"].split("=")[1])
            ours = _drive(crowd, port, gateway.pid, frames=frames, base_tst=base_tst)
            expected = ours.fixes
            _wait_stored(redis_url, connections, expected, timeout=300)

            since_ms = int(time.time() * 1000)
            sent = [fix for part in crowd.ask("paced", rate / fleets, seconds) for fix in part]
            expected += len(sent)
            stored = _wait_stored(redis_url, connections, expected, timeout=120)
            latencies = _latencies(redis_url, sent, since_ms)
            crowd.ask("close")
            return GatewayBenchResult(
                connections=connections,
                frames=frames,
                fleets=fleets,
                bare=bare,
                gateway=ours,
                offered_rate=len(sent) / seconds if seconds else 0.0,
                latencies_ms=latencies,
                stored=stored,
                expected=expected,
            )
        finally:
            if crowd is not None:
                crowd.close()
            _stop(gateway)
            _stop(ingest)
            broker.stop()
            redis_server.stop()


def report(result: GatewayBenchResult) -> str:
    bare, ours = result.bare, result.gateway
    lat = result.latencies_ms

    def row(label: str, a: str, b: str, target: str = "") -> str:
        return f"{label:<34}{a:>20}{b:>20}   {target}".rstrip()

    def kb(run: ServerRun) -> str:
        return f"{run.per_connection_bytes / 1024:.1f} KB"

    def rss(run: ServerRun) -> str:
        return f"{run.rss_idle_kb // 1024}/{run.rss_held_kb // 1024}/{run.rss_after_kb // 1024}"

    return "\n".join(
        [
            f"machine: {machine()}",
            f"bracelets: {result.connections:,} GT06 sockets from {result.fleets} fleet "
            f"processes; {result.frames} location frames (0x12) each + a heartbeat barrier",
            row("", "bare asyncio reader", "homeward gateway"),
            row("connections held (login acked)", f"{bare.held:,}", f"{ours.held:,}"),
            row("connect + login, s", f"{bare.connect_s:.1f}", f"{ours.connect_s:.1f}"),
            row("RSS idle/held/after traffic, MB", rss(bare), rss(ours)),
            row("memory per connection", kb(bare), kb(ours), "(target <= 20 KB)"),
            row(
                "location frames/s acked",
                f"{bare.rate:,.0f}",
                f"{ours.rate:,.0f}",
                f"(target >= {TARGET_RATE:,})",
            ),
            row(
                "server CPU per frame (blast)",
                f"{bare.cpu_us_per_frame:.0f} us",
                f"{ours.cpu_us_per_frame:.0f} us",
                "(steadier than rates under load)",
            ),
            f"offered load: {result.offered_rate:,.0f} frames/s -> bracelet send-to-stored "
            f"latency p50 {statistics.median(lat) if lat else float('nan'):.1f} ms, "
            f"p99 {result.latency(0.99):.1f} ms, max {lat[-1] if lat else float('nan'):.1f} ms "
            f"({len(lat):,} fixes; target p99 < {TARGET_P99_MS})",
            f"track entries stored: {result.stored:,} (expected {result.expected:,})",
        ]
    )
