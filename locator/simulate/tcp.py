"""Simulated bracelets that speak a tracker protocol to `homeward gateway` over TCP.

Each bracelet has its own socket: it logs in (GT06 login, JT/T 808 registration then the
authentication with the code the platform gave, a watch's LK, nothing for H02), sends its
simulated fixes as the protocol's location frames (a Wi-Fi or cell fix as an unpositioned
one, as a tracker without a GPS lock reports), and answers the gateway's commands as the
device does: reportLocation and setInterval reach the simulated model, and the answer goes
back in the protocol (GT06 0x15 text, JT/T 808 0x0001, the watch's echo, H02 V4).
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from typing import Any

from devices.gateway import device_side as dev
from devices.gateway import jt808
from devices.gateway.common import Command, Jt808Header, Packet, Reply
from devices.gateway.framing import Frame
from locator.core.logging import get_logger
from locator.gateway.protocols import ADAPTERS

log = get_logger(__name__)

TCP_PROTOCOLS = tuple(ADAPTERS)


def device_id_for(protocol: str, prefix: int, n: int) -> str:
    """An id in the protocol's own form: 15-digit IMEI, 12-digit phone, digits for the rest."""
    if protocol == "gt06":
        return f"86{prefix:06d}{n:07d}"
    if protocol == "jt808":
        return f"1{prefix:06d}{n:05d}"
    return f"{prefix:06d}{n:04d}"


class TcpBracelet:
    """One bracelet's socket: frames out, the gateway's acks and commands in."""

    def __init__(self, protocol: str, device_id: str, host: str, port: int) -> None:
        self.protocol = protocol
        self.device_id = device_id
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setblocking(False)
        self.framer = ADAPTERS[protocol].framer()
        self.decode: Callable[[bytes], Packet] = ADAPTERS[protocol].decode
        self.serial = 0
        self.closed = False

    def _next(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial

    def _send(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.sock.setblocking(True)
            self.sock.sendall(data)
        except OSError:
            self.closed = True
        finally:
            self.sock.setblocking(False)

    def login(self, battery: int = 80) -> None:
        """What the device sends first when its socket opens."""
        if self.protocol == "gt06":
            self._send(dev.gt06_login(imei=self.device_id, serial=self._next()))
        elif self.protocol == "jt808":
            self._send(dev.jt808_register(phone=self.device_id, serial=self._next()))
        elif self.protocol == "watch":
            self._send(dev.watch_link(device_id=self.device_id, battery=battery))
        else:
            self._send(dev.h02_heartbeat(device_id=self.device_id, battery=battery))

    def send_fix(self, fix: dict[str, Any]) -> None:
        """One simulated fix (the native document the model makes) as the protocol's frame."""
        tst, lat, lon = float(fix["tst"]), float(fix["lat"]), float(fix["lon"])
        valid = fix.get("src", "gps") == "gps"
        if self.protocol == "gt06":
            data = dev.gt06_location(tst=tst, lat=lat, lon=lon, serial=self._next(), valid=valid)
        elif self.protocol == "jt808":
            data = dev.jt808_location(
                phone=self.device_id, tst=tst, lat=lat, lon=lon, serial=self._next(), valid=valid
            )
        elif self.protocol == "watch":
            data = dev.watch_location(
                device_id=self.device_id,
                tst=tst,
                lat=lat,
                lon=lon,
                battery=int(fix.get("batt", 80)),
                valid=valid,
            )
        else:
            data = dev.h02_location(
                device_id=self.device_id, tst=tst, lat=lat, lon=lon, valid=valid
            )
        self._send(data)

    def receive(self) -> list[Packet]:
        """What the gateway sent since the last call (never blocks)."""
        packets: list[Packet] = []
        while not self.closed:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.closed = True
                break
            for event in self.framer.feed(data):
                if isinstance(event, Frame):
                    packets.append(self.decode(event.data))
        return packets

    def answer(self, packet: Packet, now: float) -> dict[str, Any] | None:
        """Answer the gateway like the device; returns a command for the simulated model."""
        header = packet.header
        for message in packet.messages:
            if isinstance(header, Jt808Header) and header.msg_id == jt808.REGISTER_RESPONSE:
                if isinstance(message, Reply) and message.result == 0:
                    code = message.text
                    self._send(dev.jt808_auth(phone=self.device_id, code=code, serial=self._next()))
                continue
            if not isinstance(message, Command):
                continue
            if isinstance(header, Jt808Header):
                self._send(
                    dev.jt808_response(
                        phone=self.device_id,
                        answered=header.serial,
                        msg_id=header.msg_id,
                        serial=self._next(),
                    )
                )
            elif self.protocol == "gt06":
                text = "DWXX OK" if message.action == "reportLocation" else "TIMER OK"
                self._send(dev.gt06_answer(text=f"{text}", serial=self._next()))
            elif self.protocol == "watch":
                kind = "CR" if message.action == "reportLocation" else "UPLOAD"
                self._send(dev.watch_answer(device_id=self.device_id, kind=kind))
            else:
                self._send(dev.h02_answer(device_id=self.device_id, kind="S71", tst=now))
            return {"action": message.action, "seconds": message.seconds}
        return None

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def wait_readable(bracelets: list[TcpBracelet], timeout: float) -> None:
    """Sleep until a socket has something for us, or ``timeout``."""
    socks = [b.sock for b in bracelets if not b.closed]
    if socks:
        select.select(socks, [], [], timeout)
