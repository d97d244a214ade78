"""`homeward gateway` over real TCP sockets: bracelets speaking GT06, JT/T 808, watch and H02
bytes → gateway → broker → the real ingest and alerts workers; acks after PUBACK only;
dead letters; commands in each protocol, also for a bracelet that reconnects later."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from alerts.incidents import storage
from devices import keys as devices_keys
from devices.gateway import gt06, h02, jt808, watch
from devices.gateway.common import Command, Jt808Header, Packet, Reply
from devices.gateway.framing import StreamFramer, crc16_x25
from locator.alerts_loop import start_workers
from locator.core import keys
from locator.core.clock import ManualClock
from locator.core.mqtt import MqttPublisher
from locator.core.redis import sync_client
from locator.embedded import free_port
from locator.gateway.protocols import ADAPTERS
from locator.gateway.server import Gateway
from locator.mosquitto import LocalMosquitto
from tests.alerts_harness import config, north
from tests.conftest import Api
from tests.factories import HAINING, elder_body
from tests.ingest_harness import Publisher, RunningIngest, wait_for

IMEI = "359710040000001"
WATCH_ID = "8800000015"
PHONE = "013912345678"
H02_ID = "4210000001"


# --- real bytes, built the way the bracelets build them ---------------------------------------
def gt06_frame(proto: int, content: bytes, serial: int) -> bytes:
    body = bytes([5 + len(content), proto]) + content + serial.to_bytes(2, "big")
    return b"\x78\x78" + body + crc16_x25(body).to_bytes(2, "big") + b"\r\n"


def gt06_login(imei: str, serial: int = 1) -> bytes:
    return gt06_frame(0x01, bytes.fromhex("0" + imei), serial)


def gt06_heartbeat(serial: int) -> bytes:
    return gt06_frame(0x13, bytes([0x46, 5, 4, 0x00, 0x02]), serial)  # battery level 5 of 6


def _when(tst: float) -> datetime:
    return datetime.fromtimestamp(tst, UTC)


def gt06_fix(tst: float, lat: float, lon: float, serial: int) -> bytes:
    t = _when(tst)
    flags = 0x1000 | 0x0400 | 90  # positioned, north, course 90
    content = (
        bytes([t.year - 2000, t.month, t.day, t.hour, t.minute, t.second, 0xCA])  # 10 sats
        + round(lat * 1_800_000).to_bytes(4, "big")
        + round(lon * 1_800_000).to_bytes(4, "big")
        + bytes([4])
        + flags.to_bytes(2, "big")
        + bytes.fromhex("01cc00 2866 000f1b")  # LBS: mcc 460, mnc 0, lac, cell id
    )
    return gt06_frame(0x12, content, serial)


def jt808_location(tst: float, lat: float, lon: float, serial: int) -> bytes:
    beijing = _when(tst + 8 * 3600).strftime("%y%m%d%H%M%S")
    body = (
        (0).to_bytes(4, "big")
        + (0x02).to_bytes(4, "big")  # positioned, north, east
        + round(lat * 1e6).to_bytes(4, "big")
        + round(lon * 1e6).to_bytes(4, "big")
        + (12).to_bytes(2, "big")
        + (30).to_bytes(2, "big")
        + (90).to_bytes(2, "big")
        + bytes.fromhex(beijing)
        + bytes([0x31, 1, 10])  # satellites
    )
    return jt808.encode(jt808.LOCATION, body, phone=PHONE, serial=serial, version=None)


def jt808_register(serial: int) -> bytes:
    body = (
        (33).to_bytes(2, "big")
        + (481).to_bytes(2, "big")
        + b"HWTST"
        + b"GPS-BAND".ljust(20, b"\x00")
        + b"T000001"
        + b"\x00"
    )
    return jt808.encode(jt808.REGISTER, body, phone=PHONE, serial=serial, version=None)


def watch_ud(kind: str, tst: float, lat: float, lon: float, status: str = "00000000") -> bytes:
    t = _when(tst)
    fields = [
        kind,
        t.strftime("%d%m%y"),
        t.strftime("%H%M%S"),
        "A",
        f"{lat:.6f}",
        "N",
        f"{lon:.6f}",
        "E",
        "0.00",
        "90",
        "10",
        "9",  # satellites
        "80",
        "76",  # battery %
        "0",
        "0",
        status,
    ]
    return watch.encode("SG", WATCH_ID, ",".join(fields))


# --- a bracelet on a real socket ---------------------------------------------------------------
class Bracelet:
    def __init__(self, port: int, protocol: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        adapter = ADAPTERS[protocol]
        self.framer: StreamFramer = adapter.framer()
        self.decode: Callable[[bytes], Packet] = adapter.decode
        self.inbox: list[Packet] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self, timeout: float = 5.0) -> Packet:
        """The gateway's next frame to us (raises TimeoutError when none comes)."""
        deadline = time.monotonic() + timeout
        while not self.inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the gateway sent nothing")
            self.sock.settimeout(left)
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("the gateway closed the connection")
            for event in self.framer.feed(data):
                assert hasattr(event, "data") and not hasattr(event, "reason"), event
                self.inbox.append(self.decode(event.data))
        return self.inbox.pop(0)

    def silent_for(self, seconds: float) -> bool:
        try:
            self.receive(timeout=seconds)
        except TimeoutError:
            return True
        return False

    def closed_by_gateway(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def start_gateway(
    redis_url: str, mqtt_url: str, clock: ManualClock, **extra: object
) -> tuple[Gateway, threading.Event, threading.Thread]:
    gateway = Gateway(
        redis_url=redis_url,
        mqtt_url=mqtt_url,
        host="127.0.0.1",
        ports=dict.fromkeys(ADAPTERS, 0),
        client_id=f"test-gw-{uuid.uuid4().hex[:8]}",
        clock=clock,
        **extra,  # type: ignore[arg-type]
    )
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=gateway.run, args=(stop, ready), daemon=True)
    thread.start()
    assert ready.wait(10) and gateway.error is None, gateway.error
    wait_for(lambda: gateway.bridge.connected.is_set(), timeout=10)
    return gateway, stop, thread


@dataclass
class Pipeline:
    """Gateway, broker, the real ingest and the alerts workers as `homeward run` has them."""

    client: redis.Redis
    gateway: Gateway
    ingest: RunningIngest

    def bracelet(self, protocol: str) -> Bracelet:
        return Bracelet(self.gateway.ports[protocol], protocol)


@pytest.fixture
def pipeline(
    redis: object, redis_url: str, mqtt_url: str, clock: ManualClock, tmp_path: Path
) -> Iterator[Pipeline]:
    client = sync_client(redis_url, process="test")
    from locator.alerts_loop import ensure_groups

    ensure_groups(client)
    publisher = MqttPublisher(mqtt_url, client_id=f"test-gw-alerts-{uuid.uuid4().hex[:6]}")
    stop = threading.Event()
    workers = start_workers(
        client, config(clock), publisher=publisher, stop=stop, data_dir=tmp_path
    )
    ingest = RunningIngest(mqtt_url, redis_url, tmp_path, clock)
    gateway, gw_stop, gw_thread = start_gateway(redis_url, mqtt_url, clock, first_frame_s=3.0)
    try:
        yield Pipeline(client, gateway, ingest)
    finally:
        gw_stop.set()
        gw_thread.join(timeout=10)
        stop.set()
        for w in workers:
            w.join(timeout=5)
        ingest.close()
        publisher.close()
        client.close()


async def elder_wearing(api: Api, protocol: str, device_id: str) -> int:
    """An elder with a 150 m safe zone at home, wearing a bracelet of this protocol."""
    r = await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("guardian_a"))
    assert r.status_code == 201, r.text
    elder_id = int(r.json()["id"])
    zone = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [HAINING["lon"], HAINING["lat"]]},
        "properties": {"kind": "safe", "radius_m": 150},
    }
    r = await api.http.post(
        f"/api/v1/elders/{elder_id}/zones", json=zone, headers=api.auth("guardian_a")
    )
    assert r.status_code == 201, r.text
    r = await api.http.post(
        "/api/v1/devices",
        json={"device_id": device_id, "elder_id": elder_id, "protocol": protocol},
        headers=api.auth("dispatcher"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["protocol"] == protocol
    return elder_id


def at(metres: float) -> tuple[float, float]:
    point = north(metres)
    return point["lat"], point["lon"]


# --- end to end --------------------------------------------------------------------------------
async def test_a_gt06_bracelet_walks_out_of_her_zone_and_an_incident_opens(
    api: Api, clock: ManualClock, pipeline: Pipeline
) -> None:
    elder_id = await elder_wearing(api, "gt06", IMEI)
    bracelet = pipeline.bracelet("gt06")
    try:
        bracelet.send(gt06_login(IMEI, serial=1))
        ack = bracelet.receive()
        assert isinstance(ack.header, gt06.Gt06Header)
        assert (ack.header.proto, ack.header.serial) == (0x01, 1)
        for n, metres in enumerate((0, 0, 300), start=2):
            clock.advance(15)
            bracelet.send(gt06_fix(clock.time(), *at(metres), serial=n))
            pipeline.ingest.wait_processed(n - 1)
        position = await api.http.get(
            f"/api/v1/elders/{elder_id}/position", headers=api.auth("guardian_a")
        )
        assert position.status_code == 200
        assert position.json()["src"] == "gps" and position.json()["acc"] == 10
        assert abs(position.json()["lat"] - at(300)[0]) < 1e-5
        assert storage.open_incident_id(pipeline.client, elder_id) is None  # one fix: no
        clock.advance(15)
        bracelet.send(gt06_fix(clock.time(), *at(320), serial=5))
        wait_for(lambda: storage.open_incident_id(pipeline.client, elder_id) is not None)
        incident = storage.load(
            pipeline.client, storage.open_incident_id(pipeline.client, elder_id) or 0
        )
        assert incident.fields["trigger"] == "zone_exit"
        # Adaptive reporting reached the bracelet in GT06: DWXX# and TIMER,15#.
        commands = {bracelet.receive().messages[0] for _ in range(2)}
        assert commands == {Command("reportLocation"), Command("setInterval", 15)}
    finally:
        bracelet.close()


async def test_a_watch_pressing_sos_opens_an_incident_at_once(
    api: Api, clock: ManualClock, pipeline: Pipeline
) -> None:
    elder_id = await elder_wearing(api, "watch", WATCH_ID)
    bracelet = pipeline.bracelet("watch")
    try:
        bracelet.send(watch.encode("SG", WATCH_ID, "LK,0,0,76"))
        link = bracelet.receive()
        assert isinstance(link.header, watch.WatchHeader) and link.header.kind == "LK"
        clock.advance(10)
        # At home, inside her zone: only the SOS bit (16) makes this an alarm.
        bracelet.send(watch_ud("AL", clock.time(), *at(0), status="00010000"))
        ack = bracelet.receive()
        assert isinstance(ack.header, watch.WatchHeader) and ack.header.kind == "AL"
        # The ack came after the broker took the uplink: the alarm is on its way already.
        wait_for(lambda: storage.open_incident_id(pipeline.client, elder_id) is not None)
        incident = storage.load(
            pipeline.client, storage.open_incident_id(pipeline.client, elder_id) or 0
        )
        assert incident.fields["trigger"] == "sos"
        state = pipeline.client.hgetall(devices_keys.device_state(elder_id, WATCH_ID))
        assert state.get("battery") == "76"
    finally:
        bracelet.close()


async def test_a_jt808_terminal_registers_authenticates_reports_and_gets_0x8103(
    api: Api, clock: ManualClock, pipeline: Pipeline
) -> None:
    elder_id = await elder_wearing(api, "jt808", PHONE)
    terminal = pipeline.bracelet("jt808")
    try:
        terminal.send(jt808_register(serial=1))
        registered = terminal.receive()
        assert isinstance(registered.header, Jt808Header)
        assert registered.header.msg_id == jt808.REGISTER_RESPONSE
        answer = registered.messages[0]
        assert isinstance(answer, Reply) and answer.serial == 1 and answer.result == 0
        code = answer.text
        assert len(code) >= 8
        # A wrong code is refused (result 1); the right one accepted (0x8001 result 0).
        terminal.send(jt808.encode(jt808.AUTH, b"wrong", phone=PHONE, serial=2, version=None))
        refused = terminal.receive().messages[0]
        assert isinstance(refused, Reply) and (refused.answers, refused.result) == ("0x0102", 1)
        terminal.send(jt808.encode(jt808.AUTH, code.encode(), phone=PHONE, serial=3, version=None))
        accepted = terminal.receive().messages[0]
        assert isinstance(accepted, Reply) and (accepted.answers, accepted.result) == ("0x0102", 0)
        assert accepted.serial == 3
        serials = []
        for n, metres in enumerate((0, 0), start=4):
            clock.advance(15)
            terminal.send(jt808_location(clock.time(), *at(metres), serial=n))
            ack = terminal.receive()
            reply = ack.messages[0]
            assert isinstance(reply, Reply) and (reply.answers, reply.serial) == ("0x0200", n)
            serials.append(ack.header.serial)
        pipeline.ingest.wait_processed(2)  # the broker had them when they were acked
        assert len(set(serials)) == 2  # the platform's own serial counts up
        # Her first fix outside: reportLocation (0x8201) and setInterval 15 s (0x8103 0x0029).
        clock.advance(15)
        terminal.send(jt808_location(clock.time(), *at(300), serial=6))
        got = [terminal.receive() for _ in range(3)]
        by_id = {p.header.msg_id: p for p in got if isinstance(p.header, Jt808Header)}
        assert set(by_id) == {jt808.PLATFORM_RESPONSE, jt808.QUERY_LOCATION, jt808.SET_PARAMS}
        assert by_id[jt808.SET_PARAMS].messages == (Command("setInterval", 15),)
        # The terminal answers the 0x8103; the gateway records it for the console.
        set_params = by_id[jt808.SET_PARAMS].header
        body = set_params.serial.to_bytes(2, "big") + jt808.SET_PARAMS.to_bytes(2, "big") + b"\x00"
        terminal.send(
            jt808.encode(jt808.TERMINAL_RESPONSE, body, phone=PHONE, serial=7, version=None)
        )
        wait_for(lambda: pipeline.client.hexists(devices_keys.gateway_device(PHONE), "last_answer"))
        recorded = pipeline.client.hgetall(devices_keys.gateway_device(PHONE))
        assert recorded["last_answer"] == "terminal_response 0x8103 result=0"
        assert recorded["last_command"] in {"setInterval 15", "reportLocation"}
        position = await api.http.get(
            f"/api/v1/elders/{elder_id}/position", headers=api.auth("guardian_a")
        )
        assert abs(position.json()["lat"] - at(300)[0]) < 1e-5
    finally:
        terminal.close()


async def test_an_h02_tracker_reports_and_gets_s71(
    api: Api, clock: ManualClock, pipeline: Pipeline, mqtt_url: str
) -> None:
    elder_id = await elder_wearing(api, "h02", H02_ID)
    tracker = pipeline.bracelet("h02")
    publisher = Publisher(mqtt_url)
    try:
        clock.advance(10)
        t = _when(clock.time())
        lat, lon = at(0)
        lat_text = f"{int(lat):02d}{(lat % 1) * 60:07.4f}"
        lon_text = f"{int(lon):03d}{(lon % 1) * 60:07.4f}"
        fields = [t.strftime("%H%M%S"), "A", lat_text, "N", lon_text, "E", "0.00", "90"]
        fields += [t.strftime("%d%m%y"), "FFFFFBFF"]
        frame = f"*HQ,{H02_ID},V1,{','.join(fields)}#".encode()
        assert h02.decode(frame).device_id == H02_ID
        tracker.send(frame + b"\r\n")  # the line end many trackers add: not garbage
        pipeline.ingest.wait_processed(1)
        position = await api.http.get(
            f"/api/v1/elders/{elder_id}/position", headers=api.auth("guardian_a")
        )
        assert abs(position.json()["lat"] - lat) < 1e-5
        assert abs(position.json()["lon"] - lon) < 1e-5
        # H02 has no position query: reportLocation is recorded as not sent, setInterval is S71.
        publisher.send(
            f"homeward/devices/{H02_ID}/cmd", {"_type": "cmd", "action": "reportLocation"}
        )
        publisher.send(
            f"homeward/devices/{H02_ID}/cmd",
            {"_type": "cmd", "action": "setInterval", "seconds": 15},
        )
        assert tracker.receive().messages == (Command("setInterval", 15),)
        wait_for(
            lambda: (
                pipeline.client.hget(devices_keys.gateway_device(H02_ID), "last_command")
                == "setInterval 15"
            )
        )
    finally:
        publisher.close()
        tracker.close()


async def test_unknown_ids_and_bad_checksums_are_dead_lettered_and_the_gateway_lives_on(
    api: Api, clock: ManualClock, pipeline: Pipeline
) -> None:
    await elder_wearing(api, "gt06", IMEI)
    stranger = pipeline.bracelet("gt06")
    try:
        stranger.send(gt06_login("359710049999999", serial=1))
        assert stranger.closed_by_gateway()  # no ack: an unknown IMEI gets nothing
    finally:
        stranger.close()
    # A JT/T 808 id registered as another protocol is unknown to the JT/T 808 port too.
    wrong = pipeline.bracelet("jt808")
    try:
        wrong.send(
            jt808.encode(jt808.HEARTBEAT, b"", phone="0" + IMEI[:11], serial=1, version=None)
        )
        assert wrong.closed_by_gateway()
    finally:
        wrong.close()
    bracelet = pipeline.bracelet("gt06")
    try:
        bracelet.send(gt06_login(IMEI, serial=1))
        assert bracelet.receive().header == gt06.Gt06Header(0x01, 1, False)
        corrupted = bytearray(gt06_heartbeat(serial=2))
        corrupted[-3] ^= 0xFF  # the CRC's low byte
        bracelet.send(bytes(corrupted) + b"\x00garbage\xff")
        bracelet.send(gt06_heartbeat(serial=3))
        ack = bracelet.receive()  # the connection and the gateway carry on
        assert ack.header == gt06.Gt06Header(0x13, 3, False)
    finally:
        bracelet.close()
    r = await api.http.get("/api/v1/rejected", headers=api.auth("dispatcher"))
    assert r.status_code == 200, r.text
    by_reason = {item["reason"]: item for item in r.json()["items"]}
    assert {"unknown_device", "bad_checksum", "garbage"} <= set(by_reason)
    assert "359710049999999" in by_reason["unknown_device"]["detail"]
    assert by_reason["unknown_device"]["topic"] == "gateway/gt06"
    assert by_reason["bad_checksum"]["device_id"] == IMEI
    assert by_reason["bad_checksum"]["payload"] == bytes(corrupted).hex()
    counts = pipeline.client.hgetall(keys.REJECTED_COUNTS)
    assert int(counts["unknown_device"]) == 2
    pipeline.ingest.wait_processed(1)
    time.sleep(0.3)
    assert pipeline.ingest.processed == 1  # only the good heartbeat reached the pipeline


async def test_silence_and_junk_close_a_connection(api: Api, pipeline: Pipeline) -> None:
    quiet = pipeline.bracelet("watch")
    junk = pipeline.bracelet("gt06")
    try:
        started = time.monotonic()
        assert quiet.closed_by_gateway(timeout=10)  # nothing valid within first_frame_s (3 s)
        assert 2.5 < time.monotonic() - started < 8
        sent = 0
        try:
            for sent in range(1, 20):  # noqa: B007 - how many got through is the point
                junk.send(gt06_frame(0x13, b"\x01\x02", 1)[:-3] + b"\x00\r\n")
                time.sleep(0.05)
        except OSError:
            pass
        else:
            assert junk.closed_by_gateway()
        assert sent <= 10  # closed after MAX_BAD (8) bad frames in a row
    finally:
        quiet.close()
        junk.close()


async def test_a_command_waits_for_a_disconnected_bracelet_and_is_sent_once(
    api: Api, pipeline: Pipeline, mqtt_url: str
) -> None:
    await elder_wearing(api, "gt06", IMEI)
    publisher = Publisher(mqtt_url)
    try:
        r = await api.http.post(
            f"/api/v1/devices/{IMEI}/commands",
            json={"action": "setInterval", "seconds": 30},
            headers=api.auth("dispatcher"),
        )
        assert r.status_code == 202, r.text
        wait_for(lambda: pipeline.client.exists(devices_keys.gateway_pending(IMEI)) == 1)
        ttl = pipeline.client.ttl(devices_keys.gateway_pending(IMEI))
        assert 590 <= ttl <= 600
        bracelet = pipeline.bracelet("gt06")
        try:
            bracelet.send(gt06_login(IMEI, serial=7))
            assert bracelet.receive().header == gt06.Gt06Header(0x01, 7, False)
            assert bracelet.receive().messages == (Command("setInterval", 30),)
            assert pipeline.client.exists(devices_keys.gateway_pending(IMEI)) == 0
            # Its answer (0x15 text) is recorded for the console.
            answer = bytes([4 + 9]) + b"\x00\x00\x00\x01" + b"TIMER OK!"
            bracelet.send(gt06_frame(0x15, answer, 8))
            wait_for(
                lambda: pipeline.client.hexists(devices_keys.gateway_device(IMEI), "last_answer")
            )
            recorded = pipeline.client.hgetall(devices_keys.gateway_device(IMEI))
            assert recorded["last_command"] == "setInterval 30"
            assert recorded["last_answer"] == "command_reply TIMER OK!"
        finally:
            bracelet.close()
        # Reconnecting again brings nothing more: the command was taken once.
        again = pipeline.bracelet("gt06")
        try:
            again.send(gt06_login(IMEI, serial=9))
            assert again.receive().header.serial == 9  # type: ignore[union-attr]
            assert again.silent_for(1.0)
        finally:
            again.close()
    finally:
        publisher.close()


async def test_the_ack_waits_for_the_brokers_puback(
    api: Api, redis_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    await elder_wearing(api, "gt06", IMEI)
    port = free_port()
    broker = LocalMosquitto(tmp_path / "mosquitto", port)
    url = broker.start()
    gateway, stop, thread = start_gateway(redis_url, url, clock)
    bracelet = Bracelet(gateway.ports["gt06"], "gt06")
    try:
        bracelet.send(gt06_login(IMEI, serial=1))
        assert bracelet.receive().header.serial == 1  # type: ignore[union-attr]
        bracelet.send(gt06_heartbeat(serial=2))
        assert bracelet.receive().header.serial == 2  # type: ignore[union-attr]
        broker.stop()
        wait_for(lambda: not gateway.bridge.connected.is_set())
        bracelet.send(gt06_heartbeat(serial=3))
        assert bracelet.silent_for(2.0)  # no broker, no PUBACK, no ack
        broker.start()
        ack = bracelet.receive(timeout=40)  # paho reconnects and resends; then the ack
        assert ack.header.serial == 3  # type: ignore[union-attr]
    finally:
        bracelet.close()
        stop.set()
        thread.join(timeout=10)
        broker.stop()


def test_homeward_run_starts_the_gateway_and_records_its_ports(tmp_path: Path) -> None:
    """`run` listens for bracelets; a taken port falls back to a free one, announced."""
    import httpx

    from tests.test_cli import _admin_token, homeward_run

    data = tmp_path / "data"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        jt808_port = free_port()
        wanted = f"gt06={taken},jt808={jt808_port}"
        with homeward_run(data, free_port(), HOMEWARD_GATEWAY_PORTS=wanted) as running:
            runtime = json.loads((data / "runtime.json").read_text())
            ports = runtime["gateway"]
            assert set(ports) == {"gt06", "jt808"}
            assert ports["jt808"] == jt808_port
            assert ports["gt06"] not in (taken, 0)
            assert f"port {taken} is taken" in running.output()
            headers = {"Authorization": f"Bearer {_admin_token(running.output())}"}
            elder = httpx.post(f"{running.url}/api/v1/elders", json=elder_body(), headers=headers)
            device = {"device_id": IMEI, "elder_id": elder.json()["id"], "protocol": "gt06"}
            r = httpx.post(f"{running.url}/api/v1/devices", json=device, headers=headers)
            assert r.status_code == 201, r.text
            bracelet = Bracelet(ports["gt06"], "gt06")
            try:
                bracelet.send(gt06_login(IMEI, serial=5))
                assert bracelet.receive(timeout=10).header.serial == 5  # type: ignore[union-attr]
            finally:
                bracelet.close()
    assert running.process.returncode == 0, running.output()


def test_homeward_gateway_on_a_taken_port_is_one_clear_line(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    from tests.test_cli import _env, _homeward

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = _homeward(
            "gateway",
            env=_env(
                HOMEWARD_DATA_DIR=str(tmp_path),
                HOMEWARD_REDIS_URL=redis_url,
                HOMEWARD_MQTT_URL=mqtt_url,
                HOMEWARD_GATEWAY_PORTS=f"watch={taken}",
            ),
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"homeward: gateway port 127.0.0.1:{taken} (watch) is in use; "
        "set HOMEWARD_GATEWAY_PORTS to free ports"
    )


async def test_with_two_gateways_only_the_one_holding_the_socket_sends(
    api: Api, redis_url: str, mqtt_url: str, clock: ManualClock, pipeline: Pipeline
) -> None:
    await elder_wearing(api, "watch", WATCH_ID)
    other, stop, thread = start_gateway(redis_url, mqtt_url, clock)
    bracelet = Bracelet(other.ports["watch"], "watch")
    publisher = Publisher(mqtt_url)
    try:
        bracelet.send(watch.encode("SG", WATCH_ID, "LK,0,0,80"))
        assert bracelet.receive().messages  # LK echoed
        assert pipeline.client.get(devices_keys.gateway_holder(WATCH_ID)) == other.client_id
        publisher.send(
            f"homeward/devices/{WATCH_ID}/cmd",
            {"_type": "cmd", "action": "setInterval", "seconds": 20},
        )
        assert bracelet.receive().messages == (Command("setInterval", 20),)
        assert bracelet.silent_for(1.0)  # not twice
        # The gateway without the socket neither sent nor queued it.
        assert pipeline.client.exists(devices_keys.gateway_pending(WATCH_ID)) == 0
    finally:
        publisher.close()
        bracelet.close()
        stop.set()
        thread.join(timeout=10)
    # Once the socket is gone, its mark is gone too: the next command waits in Redis.
    wait_for(lambda: pipeline.client.exists(devices_keys.gateway_holder(WATCH_ID)) == 0)
