"""Per-connection protocol state and the protocol-specific steps of the gateway.

A `Connection` is all the gateway keeps for one socket (slots, no buffers beyond the
framer's): the identified bracelet, what a reply or command must echo (JT/T 808 phone and
header version, the watch's vendor and index), the platform's serial counter, and counts
of bad input. The functions here turn decoded packets into replies and commands into
bytes; they do no I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from devices.gateway import gt06, h02, jt808, watch
from devices.gateway.common import (
    Authenticate,
    Jt808Header,
    Packet,
    Register,
    Reply,
    WatchHeader,
)
from devices.gateway.framing import StreamFramer

ANSWER_KINDS = frozenset({"command_reply", "terminal_response"})


@dataclass(frozen=True, slots=True)
class Adapter:
    name: str
    framer: Callable[[], StreamFramer]
    decode: Callable[[bytes], Packet]


ADAPTERS: dict[str, Adapter] = {
    "gt06": Adapter("gt06", gt06.Gt06Framer, gt06.decode),
    "jt808": Adapter("jt808", jt808.Jt808Framer, jt808.decode),
    "watch": Adapter("watch", watch.WatchFramer, watch.decode),
    "h02": Adapter("h02", h02.H02Framer, h02.decode),
}


class Connection:
    """One bracelet's socket: a few hundred bytes of state."""

    __slots__ = (
        "adapter",
        "authenticated",
        "bad",
        "device_id",
        "elder_id",
        "framer",
        "held_at",
        "index",
        "peer",
        "phone",
        "serial",
        "vendor",
        "version",
        "writer",
    )

    def __init__(self, adapter: Adapter, writer: asyncio.StreamWriter, peer: str) -> None:
        self.adapter = adapter
        self.framer = adapter.framer()
        self.writer = writer
        self.peer = peer
        self.device_id: str | None = None
        self.elder_id: int | None = None
        self.held_at = 0.0  # monotonic time the holder mark in Redis was last renewed
        self.serial = 0
        self.bad = 0  # bad events since the last good frame
        self.authenticated = False
        self.phone = ""
        self.version: int | None = None
        self.vendor = "SG"
        self.index: str | None = None

    @property
    def protocol(self) -> str:
        return self.adapter.name

    def next_serial(self) -> int:
        """The platform's own message serial on this connection (JT/T 808, GT06 commands)."""
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial

    def remember(self, packet: Packet) -> None:
        """Keep what replies and commands must echo from the bracelet's own header."""
        header = packet.header
        if isinstance(header, Jt808Header):
            self.phone, self.version = header.phone, header.version
        elif isinstance(header, WatchHeader):
            self.vendor, self.index = header.vendor, header.index


def reply(conn: Connection, packet: Packet, *, auth_code: str) -> bytes | None:
    """The acknowledgement this packet needs, in the bracelet's protocol."""
    if packet.protocol == "gt06":
        return gt06.reply(packet)
    if packet.protocol == "jt808":
        if any(isinstance(m, Authenticate) for m in packet.messages) and not conn.authenticated:
            return _jt808_refusal(conn, packet)
        return jt808.reply(packet, serial=conn.next_serial(), auth_code=auth_code)
    if packet.protocol == "watch":
        return watch.reply(packet)
    return h02.reply(packet)


def _jt808_refusal(conn: Connection, packet: Packet) -> bytes:
    """0x8001 with result 1 (failure): the terminal registers again and gets a new code."""
    header = packet.header
    assert isinstance(header, Jt808Header)
    body = header.serial.to_bytes(2, "big") + header.msg_id.to_bytes(2, "big") + b"\x01"
    return jt808.encode(
        jt808.PLATFORM_RESPONSE,
        body,
        phone=header.phone,
        serial=conn.next_serial(),
        version=header.version,
    )


def is_registration(packet: Packet) -> bool:
    return any(isinstance(m, Register) for m in packet.messages)


def authentication(packet: Packet) -> str | None:
    """The code a JT/T 808 0x0102 carries, if this is one."""
    return next((m.code for m in packet.messages if isinstance(m, Authenticate)), None)


def answers(packet: Packet) -> list[str]:
    """The bracelet's answers to commands in this packet, as the console shows them."""
    out = []
    for m in packet.messages:
        if isinstance(m, Reply) and m.kind in ANSWER_KINDS:
            parts = [m.kind, m.answers, m.text]
            if m.result is not None:
                parts.append(f"result={m.result}")
            out.append(" ".join(p for p in parts if p))
    return out


def command(conn: Connection, action: str, seconds: int | None, *, now: float) -> bytes:
    """A command in the connection's protocol; ValueError if the protocol cannot carry it."""
    assert conn.device_id is not None
    if conn.protocol == "gt06":
        return gt06.command(action, seconds, serial=conn.next_serial())
    if conn.protocol == "jt808":
        return jt808.command(
            action, seconds, phone=conn.phone, serial=conn.next_serial(), version=conn.version
        )
    if conn.protocol == "watch":
        return watch.command(
            action, seconds, vendor=conn.vendor, device_id=conn.device_id, index=conn.index
        )
    return h02.command(action, seconds, device_id=conn.device_id, now=now)
