"""The ingest's MQTT client (``BurstClient``) on real brokers: reads, bursts, coalesced acks.

Mosquitto (the production broker, with its delivery limits) where installed; the embedded
amqtt that ``homeward run`` uses; MQTT 5; TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from locator.core.clock import ManualClock
from locator.core.mqtt import address, connect_options, make_client
from locator.core.mqtt_burst import READ_SIZE, BurstClient, Delivery, check_paho
from locator.embedded import EmbeddedBroker, free_port
from locator.ingest_loop import BATCH_MAX, IngestLoop
from locator.mosquitto import LocalMosquitto, mosquitto_binary
from tests.ingest_harness import Publisher, RunningIngest, wait_for

needs_mosquitto = pytest.mark.skipif(
    mosquitto_binary() is None or bool(os.environ.get("HOMEWARD_TEST_MQTT_URL")),
    reason="needs the local Mosquitto",
)


@pytest.fixture(scope="module")
def amqtt_url() -> Iterator[str]:
    """The embedded broker of `homeward run`, on a port of its own."""
    broker = EmbeddedBroker(port=free_port())
    try:
        yield broker.start()
    finally:
        broker.stop()


def _url(request: pytest.FixtureRequest) -> str:
    if request.param == "amqtt":
        return str(request.getfixturevalue("amqtt_url"))
    if mosquitto_binary() is None or os.environ.get("HOMEWARD_TEST_MQTT_URL"):
        pytest.skip("needs the local Mosquitto")
    url = str(request.getfixturevalue("mqtt_url"))
    return url + "?protocol=5" if request.param == "mosquitto-v5" else url


@pytest.fixture(params=["mosquitto", "mosquitto-v5", "amqtt"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """The test broker (Mosquitto when installed), the same over MQTT 5, and amqtt."""
    return _url(request)


@pytest.fixture(params=["mosquitto", "mosquitto-v5"])
def session_broker_url(request: pytest.FixtureRequest) -> str:
    """A broker that keeps a persistent session's messages: amqtt 0.12 queues nothing for
    a disconnected client and redelivers nothing unacknowledged (seen with stock paho)."""
    return _url(request)


class Receiver:
    """A ``BurstClient`` on a persistent session (manual acks), recording every burst."""

    def __init__(self, url: str, client_id: str, topic: str) -> None:
        self.url = url
        self.bursts: queue.Queue[list[Delivery]] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = make_client(
            url, client_id=client_id, persistent=True, manual_ack=True, client_class=BurstClient
        )
        self.client.on_burst = self.bursts.put
        self.client.on_connect = lambda c, *_: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()

    def connect(self, *, thread: bool = True) -> None:
        """Connect and wait for the SUBACK; ``thread=False``: paho's loop driven by the test."""
        host, port = address(self.url)
        self.client.connect(host, port, **connect_options(self.url, persistent=True))
        if thread:
            self.client.loop_start()
            assert self.subscribed.wait(10), "no SUBACK"
            return
        deadline = time.monotonic() + 10
        while not self.subscribed.is_set():
            assert time.monotonic() < deadline, "no SUBACK"
            self.client.loop(0.05)

    def take(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        got: list[Delivery] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"received {len(got)} of {count}"
            try:
                got += self.bursts.get(timeout=remaining)
            except queue.Empty:
                continue
        return got

    def close(self) -> None:
        # The acks queued last go out first: paho writes its queue in order, DISCONNECT
        # joins it behind them, and loop_stop returns once the queue is written.
        self.client.disconnect()
        self.client.loop_stop()


def _wait_in_socket(client: paho.Client, enough: Callable[[bytes], bool]) -> None:
    """Wait until the bytes in the client's socket, not read yet, are ``enough``."""
    sock = client.socket()
    assert sock is not None
    deadline = time.monotonic() + 10
    while True:
        try:
            waiting = sock.recv(READ_SIZE, socket.MSG_PEEK)
        except BlockingIOError:
            waiting = b""
        if enough(waiting):
            return
        assert time.monotonic() < deadline, f"{len(waiting)} bytes in the socket"
        time.sleep(0.01)


def _session(url: str, topic: str) -> str:
    """A persistent session subscribed to ``topic``, left queueing: its client id."""
    client_id = f"burst-{uuid.uuid4().hex[:8]}"
    receiver = Receiver(url, client_id, topic)
    receiver.connect()
    receiver.close()
    return client_id


def _topic() -> str:
    return f"test/burst/{uuid.uuid4().hex[:8]}"


def test_paho_still_has_what_the_burst_client_overrides() -> None:
    check_paho(paho.Client(CallbackAPIVersion.VERSION2))

    class Moved(paho.Client):
        def __getattribute__(self, name: str) -> object:
            if name == "_packet_handle":
                raise AttributeError(name)
            return super().__getattribute__(name)

    with pytest.raises(RuntimeError, match="_packet_handle"):
        check_paho(Moved(CallbackAPIVersion.VERSION2))


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        value, low = value >> 7, value & 0x7F
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _publish(topic: str, payload: bytes, mid: int, props: bytes | None = None) -> bytes:
    """A QoS 1 PUBLISH packet; ``props``: MQTT 5, with these property bytes."""
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + mid.to_bytes(2, "big")
    if props is not None:
        body += _varint_bytes(len(props)) + props
    return b"\x32" + _varint_bytes(len(body + payload)) + body + payload


def _fed(pieces: list[bytes], v5: bool = False) -> tuple[list[bytes], list[MQTTErrorCode]]:
    """The payloads a client (not connected) delivers when it reads ``pieces``, and the
    result of each read."""
    version = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    client = BurstClient(CallbackAPIVersion.VERSION2, protocol=version)
    got: list[bytes] = []
    client.on_burst = lambda burst: got.extend(p for _, p, _, _, _ in burst)
    return got, [client._take(piece) for piece in pieces]


def test_the_parser_puts_packets_cut_anywhere_together() -> None:
    # Remaining lengths of 1, 2 and 3 bytes, and an MQTT 5 property length of 1, 2, 3.
    payloads = [b"small", os.urandom(200), os.urandom(20_000)]
    stream = b"".join(_publish("t/x", p, n + 1) for n, p in enumerate(payloads))
    assert _fed([stream[i : i + 1] for i in range(len(stream))]) == (payloads, [0] * len(stream))
    for cut in range(len(stream) + 1):
        if cut < 300 or cut % 997 == 0:
            assert _fed([stream[:cut], stream[cut:]])[0] == payloads
    props = [b"", b"\x01" * 130, b"\x01" * 20_000]
    stream = b"".join(_publish("t/x", p, 1, q) for p, q in zip(payloads, props, strict=True))
    assert _fed([stream[i : i + 7] for i in range(0, len(stream), 7)], v5=True)[0] == payloads
    # A 4-byte remaining length, its bytes arriving one by one.
    big = _publish("t/big", os.urandom(2_100_000), 1)
    assert all(b & 0x80 for b in big[1:4]) and big[4] < 0x80
    got, rcs = _fed([big[:1], big[1:2], big[2:3], big[3:4], big[4:5], big[5:]])
    assert got == [big[-2_100_000:]] and rcs == [0] * 6


def test_the_parser_refuses_a_length_longer_than_four_bytes() -> None:
    # Three bytes that continue may still end in a 4th: wait for it.
    assert _fed([b"\x32\xff\xff\xff"]) == ([], [MQTTErrorCode.MQTT_ERR_SUCCESS])
    # A 4th that continues too is malformed at once, without waiting for a 5th.
    for pieces in ([b"\x32\xff\xff\xff\xff"], [b"\x32\xff\xff\xff", b"\xff"]):
        assert _fed(pieces)[1][-1] == MQTTErrorCode.MQTT_ERR_PROTOCOL
    # MQTT 5: a property length of more than 4 bytes, or running past the packet.
    for props in (b"\xff\xff\xff\xff\x01", b"\xff\xff", b"\x05\x01"):
        name = b"\x00\x03t/x\x00\x01"
        packet = b"\x32" + _varint_bytes(len(name + props)) + name + props
        assert _fed([packet], v5=True)[1] == [MQTTErrorCode.MQTT_ERR_PROTOCOL]
    assert _fed([_publish("t/x", b"ok", 1, b"")], v5=True) == ([b"ok"], [0])


def test_many_small_messages_already_buffered_come_as_one_burst(broker_url: str) -> None:
    topic = _topic()
    receiver = Receiver(broker_url, f"burst-{uuid.uuid4().hex[:8]}", topic)
    receiver.connect(thread=False)  # subscribed; from now on we read only when told to
    publisher = Publisher(broker_url.split("?")[0])
    try:
        payloads = [f"m{n}".encode() for n in range(300)] + [f"end-{uuid.uuid4().hex}".encode()]
        for payload in payloads:
            publisher.send(topic, payload)
        # All of them wait in the receiver's socket once the last one's payload is there:
        # the broker sends one subscription's messages in order.
        _wait_in_socket(receiver.client, lambda waiting: payloads[-1] in waiting)
        assert receiver.client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        bursts = list(receiver.bursts.queue)
        assert [len(b) for b in bursts] == [301]  # one read, every packet in it handled
        assert [(t, p, q) for t, p, _, q, _ in bursts[0]] == [(topic, p, 1) for p in payloads]
        assert len({mid for _, _, mid, _, _ in bursts[0]}) == 301
    finally:
        publisher.close()
        receiver.client.disconnect()


def test_a_payload_bigger_than_a_read_is_put_together_across_reads(broker_url: str) -> None:
    topic = _topic()
    big = os.urandom(3 * READ_SIZE + 12345)
    receiver = Receiver(broker_url, f"burst-{uuid.uuid4().hex[:8]}", topic)
    receiver.connect()
    publisher = Publisher(broker_url.split("?")[0])
    try:
        for payload in (b"before", big, b"after", big[:100]):
            publisher.send(topic, payload)
        got = receiver.take(4)
        assert [p for _, p, _, _, _ in got] == [b"before", big, b"after", big[:100]]
    finally:
        publisher.close()
        receiver.close()


def test_coalesced_acks_acknowledge_and_an_unacked_message_comes_back(
    session_broker_url: str,
) -> None:
    broker_url = session_broker_url
    topic = _topic()
    client_id = _session(broker_url, topic)
    publisher = Publisher(broker_url.split("?")[0])
    receiver = Receiver(broker_url, client_id, topic)
    try:
        for n in range(50):
            publisher.send(topic, f"m{n}".encode())
        receiver.connect()
        got = receiver.take(50)
        assert receiver.client.ack_many([mid for _, _, mid, _, _ in got[:45]]) == 0
        receiver.close()
        publisher.send(topic, b"marker")  # queued behind anything the broker redelivers

        again = Receiver(broker_url, client_id, topic)
        again.connect()
        redelivered = again.take(6)
        again.client.ack_many([mid for _, _, mid, _, _ in redelivered])
        # Sent after everything the broker had for this session: a duplicate comes before it.
        publisher.send(topic, b"last")
        assert [p for _, p, _, _, _ in again.take(1)] == [b"last"]
        assert again.bursts.empty()
        again.close()
        # The 45 acknowledged in one write are gone; the 5 left unacknowledged come back.
        assert sorted(p for _, p, _, _, _ in redelivered) == sorted(
            [f"m{n}".encode() for n in range(45, 50)] + [b"marker"]
        )
    finally:
        publisher.close()


@needs_mosquitto
def test_a_reconnect_mid_packet_drops_the_old_bytes(mqtt_url: str) -> None:
    topic = _topic()
    client_id = _session(mqtt_url, topic)
    big = os.urandom(2_000_000)
    publisher = Publisher(mqtt_url)
    publisher.send(topic, big)
    publisher.send(topic, b"after")
    publisher.close()
    receiver = Receiver(mqtt_url, client_id, topic)
    receiver.client.connect(*address(mqtt_url))  # the session has the subscription
    try:
        _wait_in_socket(receiver.client, lambda waiting: len(waiting) > 4)  # CONNACK: 4 bytes
        receiver.client.loop_read()  # the CONNACK and the first part of the big message
        assert receiver.client.buffered > 0 and receiver.bursts.empty()
        receiver.client.reconnect()  # the broker resends the big message from its start
        got: list[Delivery] = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            receiver.client.loop(0.1)
            while not receiver.bursts.empty():
                got += receiver.bursts.get()
        assert [p for _, p, _, _, _ in got] == [big, b"after"]
    finally:
        receiver.client.disconnect()


def test_the_ingest_splits_bursts_into_batches_in_order(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    loop = IngestLoop(
        mqtt_url=mqtt_url,
        redis_url=redis_url,
        data_dir=tmp_path,
        clock=ManualClock(),
        retention_s=86400,
        workers=1,
    )
    lane = loop._lanes[0]
    numbered = iter(range(1, 1000))
    for size in (150, 150, 30):
        burst = [("t", b"", next(numbered), 1, False) for _ in range(size)]
        lane.queue.put((1, 0.0, range(burst[0][2], burst[0][2] + size), burst))
    batches = [lane.next_batch() for _ in range(3)]
    assert [len(b) for b, _ in batches] == [BATCH_MAX, 330 - BATCH_MAX, 0]
    assert [m.mid for b, _ in batches for m in b] == list(range(1, 331))
    assert [n for _, numbers in batches for n in numbers] == list(range(1, 331))


@needs_mosquitto
def test_the_ingest_acknowledges_whole_batches_across_restarts(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    """Queued while it is away, more than a batch: each batch stored, all acknowledged."""
    client_id = f"burst-ingest-{uuid.uuid4().hex[:6]}"
    clock = ManualClock()
    RunningIngest(mqtt_url, redis_url, tmp_path, clock, client_id=client_id).close()
    publisher = Publisher(mqtt_url)
    try:
        for _ in range(2 * BATCH_MAX + 50):
            publisher.send(f"homeward/devices/nobody-{uuid.uuid4().hex[:8]}/up", b"{}")
        ingest = RunningIngest(mqtt_url, redis_url, tmp_path, clock, client_id=client_id)
        ingest.wait_processed(2 * BATCH_MAX + 50)
        sizes = [sum(v for k, v in o.outcomes.items() if ":" not in k) for o in ingest.outcomes]
        assert max(sizes) <= BATCH_MAX
        ingest.close()
        again = RunningIngest(mqtt_url, redis_url, tmp_path, clock, client_id=client_id)
        last = f"homeward/devices/nobody-{uuid.uuid4().hex[:8]}/up"
        arrived = _on_arrival(again, last)
        publisher.send(last, b"{}")
        # The broker sends whatever it redelivers before this message: once it has arrived,
        # every message of this run is received, and then handled.
        assert arrived.wait(10), "the last message did not arrive"
        received = again.loop._acks._next
        wait_for(lambda: again.loop.handled == received)
        # Nothing of the first run came back (a redelivery would be handled, not counted).
        assert again.loop.handled == 1
        again.close()
    finally:
        publisher.close()


def _on_arrival(ingest: RunningIngest, topic: str) -> threading.Event:
    """Set once the ingest's client has received a message on ``topic``."""
    arrived = threading.Event()
    client = ingest.loop._client
    on_burst = client.on_burst
    assert on_burst is not None

    def receive(burst: list[Delivery]) -> None:
        on_burst(burst)
        if any(t == topic for t, _, _, _, _ in burst):
            arrived.set()

    client.on_burst = receive
    return arrived


def test_the_ingest_stores_through_the_embedded_broker(
    redis_url: str, amqtt_url: str, tmp_path: Path
) -> None:
    ingest = RunningIngest(amqtt_url, redis_url, tmp_path, ManualClock())
    publisher = Publisher(amqtt_url)
    try:
        for _ in range(30):
            publisher.send(f"homeward/devices/nobody-{uuid.uuid4().hex[:8]}/up", b"{}")
        wait_for(lambda: ingest.processed == 30)
        assert ingest.loop.handled == 30
    finally:
        publisher.close()
        ingest.close()


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homeward test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    for path in paths:
        path.chmod(0o644)  # mosquitto drops to its own user before reading them
    return paths


class _TlsMosquitto(LocalMosquitto):
    def __init__(self, data_dir: Path, port: int, cert: Path, key: Path) -> None:
        super().__init__(data_dir, port)
        self.cert, self.key = cert, key

    def config_text(self) -> str:
        tls = f"certfile {self.cert}\nkeyfile {self.key}\n"
        # Started as root, mosquitto drops to its own user, which cannot enter pytest's
        # private temporary directories to read the certificate.
        return super().config_text() + tls + ("user root\n" if os.geteuid() == 0 else "")


@needs_mosquitto
def test_over_tls_bursts_and_big_payloads_arrive_whole(tmp_path: Path) -> None:
    ca, cert, key = _tls_files(tmp_path / "tls")
    broker = _TlsMosquitto(tmp_path / "mosquitto", free_port(), cert, key)
    broker.start()
    url = f"mqtt://127.0.0.1:{broker.port}"
    topic = _topic()
    receiver = Receiver(url, f"burst-{uuid.uuid4().hex[:8]}", topic)
    receiver.client.tls_set(ca_certs=str(ca))
    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"tls-pub-{uuid.uuid4().hex[:6]}")
    sender.tls_set(ca_certs=str(ca))
    try:
        receiver.connect()
        sender.connect("127.0.0.1", broker.port)
        sender.loop_start()
        big = os.urandom(5 * READ_SIZE)
        payloads = [f"m{n}".encode() for n in range(200)] + [big, b"after"]
        infos = [sender.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=10)
        got = receiver.take(len(payloads))
        assert [p for _, p, _, _, _ in got] == payloads
    finally:
        sender.disconnect()
        sender.loop_stop()
        receiver.close()
        broker.stop()
