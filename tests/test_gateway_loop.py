"""The gateway's performance design keeps its promises: paho runs on the gateway's own loop
(no paho thread), a read's frames are published together yet acked in order and only after
their PUBACKs, a full in-flight window waits instead of refusing, and the collector policy
frees cycles it froze. And `GET devices/{id}` shows a TCP bracelet's connection, last
command and answer."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from pathlib import Path

import pytest

from devices import keys as devices_keys
from devices.gateway import gt06
from devices.gateway.common import Command
from locator.core.clock import ManualClock, ms_to_iso
from locator.core.redis import sync_client
from locator.embedded import free_port
from locator.gateway import collector, uplink
from locator.mosquitto import LocalMosquitto
from tests.conftest import Api
from tests.factories import elder_body
from tests.ingest_harness import wait_for
from tests.test_gateway_server import (
    IMEI,
    Bracelet,
    elder_wearing,
    gt06_fix,
    gt06_frame,
    gt06_heartbeat,
    gt06_login,
    start_gateway,
)


def serial_of(packet: object) -> int:
    header = getattr(packet, "header", None)
    assert isinstance(header, gt06.Gt06Header), packet
    return header.serial


async def test_paho_runs_on_the_gateway_loop_without_a_thread_of_its_own(
    api: Api, redis_url: str, mqtt_url: str, clock: ManualClock
) -> None:
    await elder_wearing(api, "gt06", IMEI)
    gateway, stop, thread = start_gateway(redis_url, mqtt_url, clock)
    bracelet = Bracelet(gateway.ports["gt06"], "gt06")
    try:
        bracelet.send(gt06_login(IMEI, serial=1))
        assert serial_of(bracelet.receive()) == 1
        bracelet.send(gt06_heartbeat(serial=2))  # a status uplink: published, PUBACK, ack
        assert serial_of(bracelet.receive()) == 2
        # paho's own loop would be a thread named after the client (the API's publisher has
        # one); the connect thread of asyncio.to_thread is an executor worker, no network loop.
        names = [t.name for t in threading.enumerate()]
        assert "paho-mqtt-client-test-api" in " ".join(names)  # how such a thread is named
        assert f"paho-mqtt-client-{gateway.client_id}" not in names, names
    finally:
        bracelet.close()
        stop.set()
        thread.join(timeout=10)


async def test_a_batch_in_one_write_is_acked_in_order_only_after_the_brokers_puback(
    api: Api, redis_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    await elder_wearing(api, "gt06", IMEI)
    broker = LocalMosquitto(tmp_path / "mosquitto", free_port())
    gateway, stop, thread = start_gateway(redis_url, broker.start(), clock)
    bracelet = Bracelet(gateway.ports["gt06"], "gt06")
    tst = clock.time() - 60
    try:
        bracelet.send(gt06_login(IMEI, serial=1))
        assert serial_of(bracelet.receive()) == 1
        # Heartbeats are acked, GT06 locations are not: their uplinks are still awaited.
        batch = [gt06_heartbeat(serial=2), gt06_fix(tst, 30.5, 120.6, serial=3)]
        batch += [gt06_heartbeat(serial=s) for s in (4, 5, 6)]
        bracelet.send(b"".join(batch))
        assert [serial_of(bracelet.receive()) for _ in range(4)] == [2, 4, 5, 6]

        broker.stop()
        wait_for(lambda: not gateway.bridge.connected.is_set())
        bracelet.send(b"".join(gt06_heartbeat(serial=s) for s in (7, 8, 9)))
        assert bracelet.silent_for(2.0)  # no broker, no PUBACK, no ack
        broker.start()
        # The bridge reconnects on its own (backoff from 1 s) and paho resends the three.
        assert [serial_of(bracelet.receive(timeout=40)) for _ in range(3)] == [7, 8, 9]
    finally:
        bracelet.close()
        stop.set()
        thread.join(timeout=10)
        broker.stop()


async def test_a_full_in_flight_window_waits_for_pubacks_instead_of_refusing(
    api: Api, redis_url: str, mqtt_url: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uplink, "IN_FLIGHT", 2)
    await elder_wearing(api, "gt06", IMEI)
    gateway, stop, thread = start_gateway(redis_url, mqtt_url, clock)
    bracelet = Bracelet(gateway.ports["gt06"], "gt06")
    try:
        bracelet.send(gt06_login(IMEI, serial=1))
        assert serial_of(bracelet.receive()) == 1
        bracelet.send(b"".join(gt06_heartbeat(serial=s) for s in range(2, 12)))
        assert [serial_of(bracelet.receive()) for _ in range(10)] == list(range(2, 12))
        assert not gateway.bridge.full  # every PUBACK came back: the window drained
    finally:
        bracelet.close()
        stop.set()
        thread.join(timeout=10)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


async def test_the_collector_freezes_survivors_and_frees_their_cycles_at_the_full_collection() -> (
    None
):
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it, never a reference count
    gone = weakref.ref(a)
    task = asyncio.create_task(collector.tend(freeze_s=0.05, full_s=0.5))
    try:
        await asyncio.sleep(0.2)
        assert gc.get_freeze_count() > 0  # the cycle is frozen: no collection walks it
        del a, b
        gc.collect()
        assert gone() is not None  # frozen garbage waits for the full collection
        for _ in range(40):
            await asyncio.sleep(0.05)
            if gone() is None:
                break
        assert gone() is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert gc.get_freeze_count() == 0  # stopped: the process's collector as it was


async def test_the_registry_shows_a_gateway_bracelets_connection_command_and_answer(
    api: Api, redis_url: str, mqtt_url: str, clock: ManualClock
) -> None:
    elder_id = await elder_wearing(api, "gt06", IMEI)
    url = f"/api/v1/devices/{IMEI}"
    r = await api.http.get(url, headers=api.auth("guardian_a"))
    assert r.status_code == 200, r.text
    never = {
        "connected": False,
        "connected_at": None,
        "disconnected_at": None,
        "last_command": None,
        "last_command_at": None,
        "last_answer": None,
        "last_answer_at": None,
    }
    assert r.json()["gateway"] == never  # registered, never connected
    gateway, stop, thread = start_gateway(redis_url, mqtt_url, clock)
    bracelet = Bracelet(gateway.ports["gt06"], "gt06")
    try:
        bracelet.send(gt06_login(IMEI, serial=1))
        assert serial_of(bracelet.receive()) == 1
        r = await api.http.post(
            f"{url}/commands", json={"action": "reportLocation"}, headers=api.auth("dispatcher")
        )
        assert r.status_code == 202, r.text
        assert bracelet.receive().messages == (Command("reportLocation", None),)
        clock.advance(5)
        answer = bytes([4 + 7]) + b"\x00\x00\x00\x01" + b"DWXX OK"  # GT06 0x15: its text answer
        bracelet.send(gt06_frame(0x15, answer, 2))
        wait_for(lambda: gateway_field(redis_url, "last_answer") is not None)
        r = await api.http.get(url, headers=api.auth("guardian_a"))
        assert r.status_code == 200, r.text
        seen = r.json()
        assert seen["protocol"] == "gt06" and seen["elder_id"] == elder_id
        assert seen["gateway"]["connected"] is True
        assert seen["gateway"]["connected_at"] == ms_to_iso((clock.time() - 5) * 1000)
        assert seen["gateway"]["last_command"] == "reportLocation"
        assert seen["gateway"]["last_answer"] == "command_reply DWXX OK"
        assert seen["gateway"]["last_answer_at"] == ms_to_iso(clock.time() * 1000)
        assert "auth_code" not in seen["gateway"]
        r = await api.http.get(url, headers=api.auth("guardian_b"))
        assert r.status_code == 403  # another family sees nothing of it
    finally:
        bracelet.close()
    wait_for(lambda: gateway_field(redis_url, "disconnected_at") is not None)
    r = await api.http.get(url, headers=api.auth("dispatcher"))
    assert r.json()["gateway"]["connected"] is False
    assert r.json()["gateway"]["disconnected_at"] == ms_to_iso(clock.time() * 1000)
    stop.set()
    thread.join(timeout=10)
    r = await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("guardian_a"))
    native = {"device_id": "native-1", "elder_id": r.json()["id"], "protocol": "native"}
    r = await api.http.post("/api/v1/devices", json=native, headers=api.auth("dispatcher"))
    assert r.status_code == 201, r.text
    assert r.json()["gateway"] is None  # not a TCP bracelet: nothing of the gateway's


def gateway_field(redis_url: str, name: str) -> str | None:
    client = sync_client(redis_url, process="test")
    try:
        value = client.hget(devices_keys.gateway_device(IMEI), name)
        return None if value is None else str(value)
    finally:
        client.close()
