"""`homeward simulate`: simulated elders' bracelets publishing over MQTT, answering commands.

``protocol`` native publishes our JSON, owntracks the app's JSON on ``owntracks/<user>/<dev>``;
gt06, jt808, watch and h02 bracelets open a TCP socket each to `homeward gateway` and speak
the protocol's bytes (`locator.simulate.tcp`), answering its commands there.

Time runs ``speed`` times faster than the wall clock, and the simulated day ends at "now":
fixes carry times in the past, in order, so the real ingest accepts them as a bracelet
uploading its day. Each elder gets a 200 m safe circle at home.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.elders import service as elders
from devices.elders.schemas import ElderCreate
from devices.registry import service as registry
from devices.registry.schemas import DeviceCreate
from geofences.zones import service as zones
from geofences.zones.schemas import ZoneFeature
from locator.core.auth import Principal, Role
from locator.core.clock import SystemClock
from locator.core.mqtt import address
from locator.core.redis import async_client
from locator.simulate import tcp
from locator.simulate.model import Bracelet, elder_home, plan_episode

SAFE_RADIUS_M = 200.0


@dataclass
class SimReport:
    elders: int
    fixes: int = 0
    commands: int = 0
    exits: list[tuple[str, float]] = field(default_factory=list)  # (device, true exit time)
    noise: dict[str, int] = field(default_factory=dict)


async def register(redis_url: str, bracelets: list[Bracelet], protocol: str = "native") -> None:
    """Elders, bracelets and home circles, through the registry's own services."""
    client = async_client(redis_url, process="simulate")
    admin = Principal(Role.ADMIN, "simulate")
    clock = SystemClock()
    try:
        for n, bracelet in enumerate(bracelets):
            body = ElderCreate.model_validate(
                {
                    "name": f"模拟老人 {n + 1}",
                    "home": {"lat": bracelet.home[0], "lon": bracelet.home[1]},
                    "guardians": [
                        {"name": "家属", "phone": f"+8613{random.randint(100000000, 999999999)}"}
                    ],
                }
            )
            elder = await elders.create(client, caller=admin, body=body, clock=clock)
            device = DeviceCreate(
                device_id=bracelet.device_id,
                elder_id=elder.id,
                protocol=protocol,
                external_id=owntracks_id(bracelet.device_id) if protocol == "owntracks" else None,
                report_interval_s=int(bracelet.interval_s),
            )
            await registry.register(client, caller=admin, body=device, clock=clock)
            zone = ZoneFeature.model_validate(
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "Point",
                        "coordinates": [bracelet.home[1], bracelet.home[0]],
                    },
                    "properties": {"kind": "safe", "name": "家", "radius_m": SAFE_RADIUS_M},
                }
            )
            await zones.create(client, caller=admin, elder_id=elder.id, feature=zone, clock=clock)
    finally:
        await client.aclose()


def owntracks_id(device_id: str) -> str:
    """The OwnTracks app's user/device for a simulated phone (its topic's two levels)."""
    return f"sim/{device_id}"


def build(
    elders: int,
    *,
    interval_s: float,
    wander_fraction: float,
    day_start: float,
    seed: int,
    protocol: str = "native",
) -> list[Bracelet]:
    rng = random.Random(seed)
    prefix = uuid.uuid4().hex[:6]
    number = random.randrange(1_000_000)  # ids of several runs do not collide
    bracelets = []
    for n in range(elders):
        own = random.Random(rng.random())
        name = (
            tcp.device_id_for(protocol, number, n)
            if protocol in tcp.TCP_PROTOCOLS
            else f"sim-{prefix}-{n}"
        )
        bracelet = Bracelet(name, elder_home(own), own, interval_s, day_start)
        if n < round(elders * wander_fraction):
            bracelet.episode = plan_episode(own, day_start, SAFE_RADIUS_M)
        bracelets.append(bracelet)
    return bracelets


def run(
    *,
    redis_url: str,
    mqtt_url: str,
    elders: int,
    speed: float,
    interval_s: float,
    hours: float,
    wander_fraction: float,
    seed: int,
    stop: threading.Event | None = None,
    protocol: str = "native",
    gateway: tuple[str, dict[str, int]] | None = None,
) -> SimReport:
    """Register the elders, then send their day at ``speed`` until it ends or ``stop``.

    ``gateway`` (host, protocol → port) is where TCP bracelets connect."""
    stop = stop or threading.Event()
    duration = hours * 3600
    day_start = time.time() - duration
    bracelets = build(
        elders,
        interval_s=interval_s,
        wander_fraction=wander_fraction,
        day_start=day_start,
        seed=seed,
        protocol=protocol,
    )
    asyncio.run(register(redis_url, bracelets, protocol))
    if protocol in tcp.TCP_PROTOCOLS:
        if gateway is None or protocol not in gateway[1]:
            raise ValueError(f"no gateway port for {protocol}")
        return _run_tcp(bracelets, protocol, gateway, day_start, duration, speed, stop)
    by_id = {b.device_id: b for b in bracelets}
    report = SimReport(elders=elders)
    report.exits = [
        (b.device_id, b.episode.exit_time) for b in bracelets if b.episode and b.episode.exit_time
    ]
    wall0 = time.monotonic()

    def sim_now() -> float:
        return day_start + (time.monotonic() - wall0) * speed

    lock = threading.Lock()

    def on_command(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        device_id = msg.topic.split("/")[2]
        bracelet = by_id.get(device_id)
        if bracelet is None:
            return
        with lock:
            bracelet.command(json.loads(msg.payload), sim_now())
            report.commands += 1

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"homeward-simulate-{uuid.uuid4().hex[:6]}"
    )
    client.max_inflight_messages_set(200)
    client.on_message = on_command
    client.on_connect = lambda c, *a: c.subscribe("homeward/devices/+/cmd", qos=1)
    host, port = address(mqtt_url)
    client.connect(host, port)
    client.loop_start()
    try:
        end = day_start + duration
        while not stop.is_set():
            with lock:
                bracelet = min(bracelets, key=lambda b: b.due())
                due = bracelet.due()
            if due > end:
                break
            wait = (due - sim_now()) / speed
            if wait > 0:
                stop.wait(min(wait, 0.5))
                continue
            with lock:
                payloads = bracelet.emit()
            for payload in payloads:
                if protocol == "owntracks":
                    topic = f"owntracks/{owntracks_id(bracelet.device_id)}"
                    payload = {k: v for k, v in payload.items() if k != "src"}
                    payload["tst"] = int(payload["tst"])  # the app sends whole seconds
                else:
                    topic = f"homeward/devices/{bracelet.device_id}/up"
                client.publish(topic, json.dumps(payload), qos=1)
                report.fixes += 1
    finally:
        time.sleep(0.5)
        client.disconnect()
        client.loop_stop()
    _count_noise(report, bracelets)
    return report


def _count_noise(report: SimReport, bracelets: list[Bracelet]) -> None:
    for bracelet in bracelets:
        for what, count in bracelet.counts.items():
            report.noise[what] = report.noise.get(what, 0) + count


def _run_tcp(
    bracelets: list[Bracelet],
    protocol: str,
    gateway: tuple[str, dict[str, int]],
    day_start: float,
    duration: float,
    speed: float,
    stop: threading.Event,
) -> SimReport:
    """The same day, each bracelet on its own socket to the gateway."""
    report = SimReport(elders=len(bracelets))
    report.exits = [
        (b.device_id, b.episode.exit_time) for b in bracelets if b.episode and b.episode.exit_time
    ]
    host, ports = gateway
    links = {
        b.device_id: tcp.TcpBracelet(protocol, b.device_id, host, ports[protocol])
        for b in bracelets
    }
    wall0 = time.monotonic()

    def sim_now() -> float:
        return day_start + (time.monotonic() - wall0) * speed

    try:
        for link in links.values():
            link.login()
        end = day_start + duration
        while not stop.is_set():
            for bracelet in bracelets:
                link = links[bracelet.device_id]
                for packet in link.receive():
                    command = link.answer(packet, sim_now())
                    if command is not None:
                        bracelet.command(command, sim_now())
                        report.commands += 1
            bracelet = min(bracelets, key=lambda b: b.due())
            if bracelet.due() > end:
                break
            wait = (bracelet.due() - sim_now()) / speed
            if wait > 0:
                tcp.wait_readable(list(links.values()), min(wait, 0.5))
                continue
            for payload in bracelet.emit():
                links[bracelet.device_id].send_fix(payload)
                report.fixes += 1
    finally:
        time.sleep(0.5)
        for link in links.values():
            link.close()
    _count_noise(report, bracelets)
    return report


def describe(report: SimReport) -> str:
    noise = ", ".join(f"{k} {v}" for k, v in sorted(report.noise.items())) or "none"
    return "\n".join(
        [
            f"elders: {report.elders}   fixes published: {report.fixes:,}   "
            f"commands answered: {report.commands}",
            f"wandering episodes with a true exit: {len(report.exits)}",
            f"noise injected: {noise}",
        ]
    )
