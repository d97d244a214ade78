"""A paho client that reads the socket in bursts and acknowledges many messages in one write.

Stock paho (2.2) reads one packet per ``select()`` at QoS 1 and three ``recv()`` calls per
packet (command byte, remaining length, body), matches every message against its topic
filters, and sends each PUBACK as a write of its own. For the ingest, which receives a
stream of small QoS 1 uplinks, that is most of its MQTT cost. ``BurstClient`` changes the
receive and acknowledge path only:

- ``loop_read`` does one ``recv`` of up to 64 KiB and handles every complete packet in
  it. It must handle them all: ``select()`` does not wake for bytes already in user space.
  A partial packet waits for the next read; the buffer belongs to one socket and is
  dropped when that socket closes or a reconnect replaces it. The buffer sits above
  ``_sock_recv``, so TLS still works (``SSLWantRead`` is paho's ``BlockingIOError``, and
  paho's ``_loop`` still polls ``pending()`` for bytes the SSL layer holds).
- PUBLISH packets are decoded here into plain ``Delivery`` tuples and handed to
  ``on_burst`` as ONE list per read (no ``MQTTMessage``, no topic matcher: the ingest has
  no per-topic callbacks, and ``on_message`` is never called). Every other packet
  (CONNACK, SUBACK, PINGRESP, PUBACK of our own publishes, an MQTT 5 DISCONNECT) goes to
  paho's own handler, after the PUBLISHes before it are delivered, so the order of
  callbacks is the order on the wire.
- ``ack_many`` writes all the PUBACKs of a stored batch as one packet write.

Only QoS 0 and 1 are delivered: we subscribe at QoS 1 and a broker never sends above the
granted QoS, so a QoS 2 PUBLISH (or an MQTT 5 topic alias, which we never allow by not
sending a Topic Alias Maximum) is a protocol error and the connection is dropped.

It overrides paho private methods: ``PAHO_INTERNALS`` lists what it relies on, pyproject
pins paho to the minor versions tested, and ``check_paho`` (run by the constructor and a
test) fails loudly if an upgrade removed any of it.
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

# topic, payload, message id (0 at QoS 0), QoS, retain
Delivery = tuple[str, bytes, int, int, bool]

READ_SIZE = 65536
# A full read may mean more is waiting: read again at once, a few times, before select().
_READS_PER_WAKE = 4
_PUBLISH = 0x30
_PUBACK = 0x40

# The private paho members the subclass uses or overrides, checked at construction.
PAHO_INTERNALS = (
    "_sock",
    "_sock_recv",
    "_sock_close",
    "_packet_handle",
    "_packet_queue",
    "_loop_rc_handle",
    "_in_packet",
    "_in_callback_mutex",
    "_msgtime_mutex",
    "_last_bytes_received",
    "_manual_ack",
    "_protocol",
    "_easy_log",
)


def check_paho(client: paho.Client) -> None:
    """Raise if this paho lacks what ``BurstClient`` overrides or calls (an upgrade moved it)."""
    missing = [name for name in PAHO_INTERNALS if not hasattr(client, name)]
    # Our loop_read is only reached if paho's network loop still calls loop_read(), and our
    # buffer is only dropped on reconnect if reconnect still closes through _sock_close().
    if "self.loop_read()" not in inspect.getsource(paho.Client._loop):
        missing.append("_loop -> loop_read()")
    if "self._sock_close()" not in inspect.getsource(paho.Client.reconnect):
        missing.append("reconnect -> _sock_close()")
    if missing:
        raise RuntimeError(
            f"paho-mqtt {version('paho-mqtt')} lacks what BurstClient needs: {missing}"
        )


class BurstClient(paho.Client):
    """paho ``Client`` (same constructor) with buffered reads, burst delivery, ``ack_many``.

    Set ``on_burst`` before connecting; it runs on the network thread, like ``on_message``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_paho(self)
        self.on_burst: Callable[[list[Delivery]], None] | None = None
        self._chunks: list[bytes] = []  # unparsed bytes (at most one incomplete packet)
        self._buffered = 0
        self._need = 1  # bytes the buffer must hold before the next packet can be complete
        self._buffer_sock: object = None  # the socket the buffered bytes came from

    @property
    def buffered(self) -> int:
        """Bytes read from the socket and not yet handled (part of one packet at most)."""
        return self._buffered

    # --- receive ---------------------------------------------------------------------------
    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        sock = self._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if sock is not self._buffer_sock:
            self._discard()
            self._buffer_sock = sock
        for _ in range(_READS_PER_WAKE):
            try:
                data = self._sock_recv(READ_SIZE)
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            except OSError as err:
                self._easy_log(paho.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            if not data:
                return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            with self._msgtime_mutex:
                self._last_bytes_received = paho.time_func()  # what keepalive compares
            rc = self._take(data)
            if rc:
                return self._loop_rc_handle(rc)
            if self._sock is not sock or len(data) < READ_SIZE:
                break
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_close(self) -> None:
        self._discard()
        super()._sock_close()

    def _discard(self) -> None:
        """Bytes of a closed connection mean nothing on the next one: never replay them."""
        self._chunks = []
        self._buffered = 0
        self._need = 1
        self._buffer_sock = None

    def _take(self, data: bytes) -> MQTTErrorCode:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered < self._need:
            return MQTTErrorCode.MQTT_ERR_SUCCESS  # a big packet still arriving: no re-parse
        buf = data if len(self._chunks) == 1 else b"".join(self._chunks)
        sock = self._sock
        pos, need, rc = self._parse(buf)
        if rc or self._sock is not sock:
            self._discard()  # the connection is closing or was replaced by a handler
            return rc
        rest = buf[pos:]
        self._chunks = [rest] if rest else []
        self._buffered = len(rest)
        self._need = need
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _parse(self, buf: bytes) -> tuple[int, int, MQTTErrorCode]:
        """Handle every complete packet in ``buf``: (where the rest starts, bytes the next
        packet needs from there, error)."""
        end = len(buf)
        pos = 0
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        burst: list[Delivery] = []
        sock = self._sock
        while pos < end:
            header = buf[pos]
            try:
                remaining = _varint(buf, pos + 1, end)
            except MalformedPacket:
                return pos, 1, MQTTErrorCode.MQTT_ERR_PROTOCOL
            if remaining is None:  # one more byte may end the length
                self._deliver(burst)
                return pos, end - pos + 1, MQTTErrorCode.MQTT_ERR_SUCCESS
            length, i = remaining
            stop = i + length
            if stop > end:
                self._deliver(burst)
                return pos, stop - pos, MQTTErrorCode.MQTT_ERR_SUCCESS
            if header & 0xF0 == _PUBLISH:
                delivery = _decode_publish(header, buf, i, stop, v5)
                if delivery is None:
                    return pos, 1, MQTTErrorCode.MQTT_ERR_PROTOCOL
                burst.append(delivery)
            else:
                self._deliver(burst)
                burst = []
                rc = self._handle_other(header, buf[i:stop])
                if rc or self._sock is not sock:
                    return stop, 1, rc
            pos = stop
        self._deliver(burst)
        return pos, 1, MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_other(self, header: int, body: bytes) -> MQTTErrorCode:
        """paho's own handling, given the packet the way its byte-at-a-time reader leaves it."""
        self._in_packet = {
            "command": header,
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": len(body),
            "packet": bytearray(body),
            "to_process": 0,
            "pos": 0,
        }
        try:
            return self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        finally:
            self._in_packet = {
                "command": 0,
                "have_remaining": 0,
                "remaining_count": [],
                "remaining_mult": 1,
                "remaining_length": 0,
                "packet": bytearray(),
                "to_process": 0,
                "pos": 0,
            }

    def _deliver(self, burst: list[Delivery]) -> None:
        if not burst:
            return
        on_burst = self.on_burst
        if on_burst is None:
            return  # not acknowledged either: the broker redelivers on the next session
        with self._in_callback_mutex:
            try:
                on_burst(burst)
            except Exception as err:
                self._easy_log(paho.MQTT_LOG_ERR, "Caught exception in on_burst: %s", err)
                if not self.suppress_exceptions:
                    raise

    # --- acknowledge -----------------------------------------------------------------------
    def ack_many(self, mids: Sequence[int]) -> MQTTErrorCode:
        """PUBACK every QoS 1 message id in ``mids``, all in one packet write.

        Each PUBACK is ``0x40 0x02 <mid>``: MQTT 3.1.1's only form, and MQTT 5's when the
        reason code is 0 (success) with no properties (MQTT 5.0 section 3.4.2.1), the same
        bytes paho's own ``ack`` sends. Like ``ack``, nothing is sent without ``manual_ack``
        (paho acknowledged on receipt then).
        """
        if not mids or not self._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        # 0x40 0x02 hi lo, big-endian, is one 32-bit word per message id.
        packet = struct.pack(f"!{len(mids)}I", *[0x40020000 | mid for mid in mids])
        return self._packet_queue(_PUBACK, packet, 0, 0)


def _decode_publish(header: int, buf: bytes, start: int, stop: int, v5: bool) -> Delivery | None:
    """One PUBLISH from ``buf[start:stop]``; None if it is one we must not accept."""
    qos = (header >> 1) & 3
    if qos == 2 or qos == 3 or stop - start < 2:
        return None
    topic_end = start + 2 + (buf[start] << 8 | buf[start + 1])
    if topic_end == start + 2:
        return None  # empty topic: MQTT 3.1.1 forbids it, MQTT 5 only with an alias
    mid = 0
    pos = topic_end
    if qos:
        mid = buf[pos] << 8 | buf[pos + 1] if pos + 2 <= stop else 0
        pos += 2
    if v5:  # skip the properties: a length (variable byte integer), then that many bytes
        try:
            props = _varint(buf, pos, stop)
        except MalformedPacket:
            return None
        if props is None:
            return None
        length, pos = props
        pos += length
    if pos > stop or (qos and not mid):
        return None
    # Invalid UTF-8 (a broker should refuse it) still arrives, so the ingest dead-letters it.
    topic = buf[start + 2 : topic_end].decode("utf-8", "replace")
    return topic, buf[pos:stop], mid, qos, bool(header & 1)


def _varint(buf: bytes, pos: int, stop: int) -> tuple[int, int] | None:
    """The variable byte integer at ``buf[pos]``: (its value, where the next field starts),
    or None if ``stop`` comes first (not all of it is here yet).

    1 to 4 bytes, 7 bits each, low first; a 4th byte that still continues is malformed
    (``MalformedPacket``), decided at once without waiting for a 5th.
    """
    value = 0
    shift = 0
    while pos < stop:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise MalformedPacket("variable byte integer longer than 4 bytes")
    return None
