"""Stream framing shared by the tracker protocols (pure).

A TCP connection delivers bytes in arbitrary pieces. A framer is fed those pieces and hands
back complete frames (the exact wire bytes) and `Skipped` runs (garbage, a frame that cannot
be one, an oversized frame) with a reason; what could still become a frame stays buffered.
A framer never raises and never emits a byte twice: the emitted frames and skips plus
`pending` are always exactly the bytes fed.
"""

from __future__ import annotations

import binascii
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete frame as it came off the wire (markers and checksum included)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Skipped:
    """Bytes dropped while looking for frames; ``reason`` is a stable metric label."""

    reason: str
    data: bytes


Event = Frame | Skipped

# What a protocol's step answers: more bytes needed, a frame [start, end), or a skip.
NEED = None
Step = tuple[str, int] | None  # ("frame", end) or (reason, end); end is exclusive


class StreamFramer(ABC):
    """Buffers a connection's bytes; `feed` returns the frames and skips they complete."""

    max_frame: int = 1024

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> bytes:
        """Bytes kept for a frame that has not arrived completely."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        """Add bytes; return what they complete, in stream order (adjacent skips merged)."""
        self._buffer += data
        buf = bytes(self._buffer)
        events: list[Event] = []
        pos = 0
        while pos < len(buf):
            try:
                step = self._step(buf, pos)
            except Exception:  # a framer bug must not kill the connection: drop one byte
                step = ("framer_error", pos + 1)
            if step is NEED:
                break
            kind, end = step
            end = min(max(end, pos + 1), len(buf))  # always progress, never past the data
            chunk = buf[pos:end]
            if kind == "frame":
                events.append(Frame(chunk))
            elif events and isinstance(events[-1], Skipped) and events[-1].reason == kind:
                events[-1] = Skipped(kind, events[-1].data + chunk)
            else:
                events.append(Skipped(kind, chunk))
            pos = end
        del self._buffer[:pos]
        return events

    @abstractmethod
    def _step(self, buf: bytes, start: int) -> Step:
        """At ``start``: NEED, ("frame", end) or (skip reason, end)."""


def find_first(buf: bytes, start: int, markers: tuple[bytes, ...]) -> int:
    """The earliest index at or after ``start`` where any marker begins, or -1."""
    found = [i for i in (buf.find(m, start) for m in markers) if i >= 0]
    return min(found) if found else -1


def skip_to_marker(buf: bytes, start: int, markers: tuple[bytes, ...]) -> Step:
    """Skip garbage up to the next marker; keep a tail that could be a marker's beginning."""
    nxt = find_first(buf, start, markers)
    if nxt == start:
        raise AssertionError("skip_to_marker called at a marker")
    if nxt > start:
        return ("garbage", nxt)
    keep = len(buf)
    for marker in markers:
        for size in range(len(marker) - 1, 0, -1):
            if buf.endswith(marker[:size]):
                keep = min(keep, len(buf) - size)
    return ("garbage", keep) if keep > start else NEED


def bcd_digits(data: bytes) -> str:
    """Packed BCD as its digit string (a nibble above 9 is kept as a hex letter)."""
    return data.hex()


def to_bcd(digits: str, size: int) -> bytes:
    """A digit string as ``size`` bytes of packed BCD, left-padded with zeros."""
    if not digits.isdigit() or len(digits) > size * 2:
        raise ValueError(f"{digits!r} does not fit {size} BCD bytes")
    return bytes.fromhex(digits.rjust(size * 2, "0"))


_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def crc16_x25(data: bytes) -> int:
    """CRC-16/X-25 (CRC-ITU as the GT06 documents call it): reflected 0x1021, init/xorout 0xFFFF.

    Computed in C: the reflected CRC of the data is the bit-reversed plain CRC (binascii's
    CRC-CCITT) of the data with each byte bit-reversed; a bit loop in Python cost the gateway
    a sixth of its time per frame."""
    crc = binascii.crc_hqx(data.translate(_REVERSED), 0xFFFF)
    return ((_REVERSED[crc & 0xFF] << 8) | _REVERSED[crc >> 8]) ^ 0xFFFF


def xor_check(data: bytes) -> int:
    """JT/T 808's check code: every byte XORed."""
    check = 0
    for byte in data:
        check ^= byte
    return check
