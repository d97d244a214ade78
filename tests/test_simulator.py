"""The simulator produces the noise it claims, answers commands, and drives the real ingest."""

from __future__ import annotations

import asyncio
import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devices import keys as devices_keys
from geofences import keys as geofences_keys
from locator.core import shards
from locator.core.clock import ManualClock, SystemClock
from locator.core.crs import haversine_m
from locator.core.redis import sync_client
from locator.simulate import driver
from locator.simulate.model import DAY_S, Bracelet, elder_home, plan_episode
from tests.conftest import Api
from tests.ingest_harness import Publisher, RunningIngest


def day_of(
    seed: int, interval: float = 60.0, wander: bool = False
) -> tuple[Bracelet, list[dict[str, object]]]:
    rng = random.Random(seed)
    bracelet = Bracelet(f"sim-{seed}", elder_home(rng), rng, interval, 0.0)
    if wander:
        bracelet.episode = plan_episode(rng, 0.0, 200.0)
    fixes: list[dict[str, object]] = []
    while bracelet.due() < DAY_S:
        fixes += bracelet.emit()
    return bracelet, fixes


def test_a_calm_day_has_the_claimed_noise() -> None:
    totals: dict[str, int] = {}
    days = 30
    for seed in range(days):
        bracelet, fixes = day_of(seed)
        for what, n in bracelet.counts.items():
            totals[what] = totals.get(what, 0) + n
        home = bracelet.home
        gps = [
            haversine_m(home[0], home[1], float(f["lat"]), float(f["lon"]))
            for f in fixes
            if f["src"] == "gps"
        ]  # type: ignore[arg-type]
        drift = [d for d in gps if d < 290]  # the rest are the one-fix jumps (300 m–5 km)
        assert max(drift) <= 80.5 and min(drift) >= 19.5
    assert 1.0 <= totals["jump"] / days <= 3.5  # "about twice a day"
    assert 0.07 <= totals["wifi"] / (days * 1440) <= 0.13  # "about 10 %"
    cell_fixes_per_day = totals["cell"] / days
    assert 3 * 3 <= cell_fixes_per_day <= 3 * 11  # 3 runs of 3–10 minutes at 60 s
    assert totals["stale_repeat"] > 0 and totals["out_of_order_duplicate"] > 0


def test_jumps_and_cell_fixes_are_what_they_claim() -> None:
    bracelet, fixes = day_of(3)
    home = bracelet.home
    cells = [f for f in fixes if f["src"] == "cell"]
    assert cells
    for fix in cells:
        d = haversine_m(home[0], home[1], float(fix["lat"]), float(fix["lon"]))  # type: ignore[arg-type]
        assert 450 <= d <= 2550 and 800 <= float(fix["acc"]) <= 2000  # type: ignore[arg-type]
    far_confident = [
        f
        for f in fixes
        if f["src"] == "gps"
        and float(f["acc"]) <= 30  # type: ignore[arg-type]
        and haversine_m(home[0], home[1], float(f["lat"]), float(f["lon"])) > 290  # type: ignore[arg-type]
    ]
    assert len(far_confident) == bracelet.counts.get("jump", 0)


def test_a_wanderer_walks_at_walking_speed_and_has_a_true_exit() -> None:
    rng = random.Random(5)
    episode = plan_episode(rng, 0.0, 200.0)
    assert episode.exit_time is not None
    assert 0.8 <= episode.speed <= 1.2 and episode.duration >= 20 * 60
    north, east = episode.position_m(episode.exit_time)
    assert 199 <= math.hypot(north, east) <= 202
    before = episode.position_m(episode.exit_time - 1)
    assert math.hypot(*before) <= 200


def test_the_bracelet_answers_commands_like_a_bracelet() -> None:
    rng = random.Random(1)
    bracelet = Bracelet("sim", elder_home(rng), rng, 600.0, 0.0)
    now = bracelet.due() + 10
    bracelet.emit()
    bracelet.command({"_type": "cmd", "action": "reportLocation"}, now)
    assert now + 2 <= bracelet.due() <= now + 10  # a fix within 10 s
    bracelet.emit()
    bracelet.command({"_type": "cmd", "action": "setInterval", "seconds": 15}, now + 20)
    first = bracelet.due()
    bracelet.emit()
    assert bracelet.due() - first == 15


async def test_a_short_simulated_hour_flows_through_the_real_ingest(
    api: Api, mqtt_url: str, redis_url: str, tmp_path: Path
) -> None:
    ingest = RunningIngest(mqtt_url, redis_url, tmp_path, SystemClock())
    try:
        report = await asyncio.to_thread(
            driver.run,
            redis_url=redis_url,
            mqtt_url=mqtt_url,
            elders=3,
            speed=3600,
            interval_s=60,
            hours=1,
            wander_fraction=0.0,
            seed=2,
        )
        assert report.fixes >= 3 * 55
        ingest.wait_processed(report.fixes, timeout=30)
    finally:
        ingest.close()
    client = sync_client(redis_url, process="test")
    try:
        stored = sum(
            client.xlen(devices_keys.track(elder_id, f"{d}")) for elder_id, d in _devices(client)
        )
        assert stored >= 3 * 50  # everything but the duplicates the noise model re-sends
        # A calm hour raises nothing.
        assert sum(client.xlen(geofences_keys.transitions(s)) for s in shards.every()) == 0
    finally:
        client.close()


def _devices(client: object) -> list[tuple[int, str]]:
    out = []
    for device_id in client.zrange(devices_keys.DEVICES, 0, -1):  # type: ignore[attr-defined]
        doc = json.loads(client.get(devices_keys.device(device_id)))  # type: ignore[attr-defined]
        out.append((int(doc["elder_id"]), device_id))
    return out


@pytest.mark.parametrize("protocol", ["gt06", "jt808"])
async def test_simulated_bracelets_speak_their_protocol_through_the_gateway(
    api: Api, mqtt_url: str, redis_url: str, tmp_path: Path, protocol: str
) -> None:
    from tests.test_gateway_server import start_gateway

    ingest = RunningIngest(mqtt_url, redis_url, tmp_path, SystemClock())
    gateway, stop, thread = start_gateway(redis_url, mqtt_url, ManualClock(datetime.now(UTC)))
    publisher = Publisher(mqtt_url)
    try:
        run = asyncio.create_task(
            asyncio.to_thread(
                driver.run,
                redis_url=redis_url,
                mqtt_url=mqtt_url,
                elders=2,
                speed=900,
                interval_s=60,
                hours=1,
                wander_fraction=0.0,
                seed=3,
                protocol=protocol,
                gateway=("127.0.0.1", gateway.ports),
            )
        )
        client = sync_client(redis_url, process="test")
        for _ in range(500):  # the loop must turn for the simulator's thread to start
            if len(gateway.connections) == 2:
                break
            await asyncio.sleep(0.02)
        device_id = sorted(gateway.connections)[0]
        publisher.send(
            f"homeward/devices/{device_id}/cmd",
            {"_type": "cmd", "action": "setInterval", "seconds": 30},
        )
        report = await run
        assert report.fixes >= 2 * 55 and report.commands >= 1  # ours + adaptive reporting's
        ingest.wait_processed(report.fixes, timeout=30)
        devices = _devices(client)
        assert {len(d) for _, d in devices} == {15 if protocol == "gt06" else 12}
        for elder_id, d in devices:
            doc = json.loads(client.get(devices_keys.device(d)))
            assert doc["protocol"] == protocol
            assert client.xlen(devices_keys.track(elder_id, d)) >= 50
        answers = {
            "gt06": {"command_reply TIMER OK", "command_reply DWXX OK"},
            "jt808": {"terminal_response 0x8103 result=0", "terminal_response 0x8201 result=0"},
        }[protocol]
        assert client.hget(devices_keys.gateway_device(device_id), "last_answer") in answers
        client.close()
    finally:
        publisher.close()
        stop.set()
        thread.join(timeout=10)
        ingest.close()
