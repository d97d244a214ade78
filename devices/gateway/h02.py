"""H02 (pure): framing, decoding and commands for the text protocol ``*HQ,<id>,<type>,…#``.

V1 (and V2, V4-less VI1/V19 variants with the same leading fields): hhmmss (UTC), A/V,
latitude ddmm.mmmm N/S, longitude dddmm.mmmm E/W, speed in knots (→ km/h), course, ddmmyy,
status (8 hex digits, each alarm bit active low: bit 1 or 18 clear = SOS, as Traccar reads
it). HTBT (battery) and LINK (rssi, satellites, battery) are heartbeats; NBR / V3 carry
cells only. The binary ``$`` form is rejected by the framer with a reason: its length is
not in the frame (32 or 45 bytes depending on model and configuration).

Replies: none. The H02 documents expect no acknowledgement of V1 (Traccar answers V1 with
``*HQ,<id>,V4,V1,<yyyyMMddHHmmss>#``, which a few models use to set their clock; the
gateway does not need it). Commands: setInterval → ``*HQ,<id>,S71,<hhmmss>,22,<s>#``
(Traccar's positionPeriodic; its alternative is ``D1``). Traccar's encoder has no
single-position command for H02, and neither has this one: `command` refuses
reportLocation (the adaptive-reporting rule already sends setInterval 15 s with it).
"""

from __future__ import annotations

import re

from devices.gateway.common import (
    KNOT_KMH,
    Alarm,
    Cell,
    CellFix,
    Command,
    H02Header,
    Location,
    Message,
    Other,
    Packet,
    Reply,
    Status,
    check_coordinate,
    utc_epoch,
)
from devices.gateway.framing import Step, StreamFramer, find_first
from devices.ingest.codecs import DecodeError

MAX_FRAME = 512
STARTS = (b"*", b"$")
HEADER = re.compile(rb"\*([A-Za-z]{2}),([0-9A-Za-z]{0,20}),([0-9A-Za-z]+)[,#]")
POSITION_TYPES = frozenset({"V1", "V2", "VI1", "V19", "V6"})
COORDINATE = re.compile(r"^(-?)(\d{0,3}?)(\d{1,2}\.\d+)$")
MINUS_FORM = re.compile(r"^-(\d+)-(\d+\.\d+)$")  # "-23-29.0095" (Traccar's test frames)


class H02Framer(StreamFramer):
    """``*`` … ``#``; the binary ``$`` form and a frame without its header are skipped."""

    max_frame = MAX_FRAME

    def _step(self, buf: bytes, start: int) -> Step:
        first = buf[start]
        if first == 0x24:  # '$': binary, length unknown; skip to the next text frame
            nxt = buf.find(b"*", start + 1)
            return ("h02_binary_unsupported", nxt if nxt >= 0 else len(buf))
        if first != 0x2A:
            nxt = find_first(buf, start, STARTS)
            end = nxt if nxt >= 0 else len(buf)
            blank = not buf[start:end].strip(b"\r\n ")
            return ("whitespace" if blank else "garbage", end)
        limit = start + self.max_frame
        end = buf.find(b"#", start + 1, limit)
        reopen = find_first(buf[: end if end >= 0 else limit], start + 1, STARTS)
        if reopen >= 0:
            return ("unterminated", reopen)
        if end < 0:
            return ("oversized", start + 1) if len(buf) >= limit else None
        if not HEADER.match(buf, start):
            return ("bad_header", end + 1)
        return ("frame", end + 1)


def _coordinate(text: str, hemisphere: str, *, lon: bool) -> float:
    text = text.strip()
    minus = MINUS_FORM.match(text)
    if minus:
        value = int(minus.group(1)) + float(minus.group(2)) / 60
    else:
        match = COORDINATE.match(text)
        if match is None:
            raise DecodeError("bad_coordinate", f"{text!r} is not (d)ddmm.mmmm")
        value = int(match.group(2) or 0) + float(match.group(3)) / 60
    if hemisphere.strip() in ("S", "W"):
        value = -value
    limit = 180 if lon else 90
    if abs(value) > limit:
        raise DecodeError("bad_coordinate", f"{text} {hemisphere} is outside WGS-84")
    return value


def _time(hhmmss: str, ddmmyy: str) -> float | None:
    if not (len(hhmmss) == 6 and hhmmss.isdigit() and len(ddmmyy) == 6 and ddmmyy.isdigit()):
        return None
    if ddmmyy == "000000":  # no fix since power-on: the device has no date
        return None
    return utc_epoch(
        2000 + int(ddmmyy[4:6]),
        int(ddmmyy[2:4]),
        int(ddmmyy[0:2]),
        int(hhmmss[0:2]),
        int(hhmmss[2:4]),
        int(hhmmss[4:6]),
    )


def _status_alarm(text: str) -> Alarm | None:
    if len(text) != 8:
        return None
    try:
        status = int(text, 16)
    except ValueError:
        return None
    return "sos" if not status >> 1 & 1 or not status >> 18 & 1 else None


def _position(fields: list[str]) -> Message:
    # fields: time, validity, lat, N/S, lon, E/W, speed, course, [battery,] date, status, …
    if len(fields) < 9:
        raise DecodeError("truncated", f"{len(fields)} position fields")
    rest = fields[8:]
    if rest and not (len(rest[0]) == 6 and rest[0].isdigit()) and len(rest) > 1:
        rest = rest[1:]  # a battery level between course and date (some firmware)
    date = rest[0] if rest else ""
    alarm = _status_alarm(rest[1]) if len(rest) > 1 else None
    tst = _time(fields[0], date)
    if not fields[2].strip() or not fields[4].strip():
        return CellFix(tst=tst, alarm=alarm)
    lat = _coordinate(fields[2], fields[3], lon=False)
    lon = _coordinate(fields[4], fields[5], lon=True)
    check_coordinate(lat, lon)
    if tst is None or (lat == 0 and lon == 0):
        return CellFix(tst=tst, alarm=alarm)
    speed = float(fields[6] or 0) * KNOT_KMH
    course = float(fields[7] or 0)
    return Location(
        tst=tst,
        lat=lat,
        lon=lon,
        valid=fields[1] == "A",
        speed_kmh=speed if 0 <= speed < 2000 else None,
        course=course if 0 <= course <= 360 else None,
        alarm=alarm,
    )


def _messages(kind: str, fields: list[str]) -> tuple[Message, ...]:
    if kind in POSITION_TYPES:
        return (_position(fields),)
    if kind == "HTBT":
        batt = int(fields[0]) if fields and fields[0].isdigit() else None
        return (Status(batt=batt if batt is not None and batt <= 100 else None),)
    if kind == "LINK" and len(fields) >= 8:
        batt = int(fields[3]) if fields[3].isdigit() else None
        return (
            Status(
                tst=_time(fields[0], fields[6]),
                batt=batt if batt is not None and batt <= 100 else None,
                gsm=int(fields[1]) if fields[1].isdigit() else None,
                alarm=_status_alarm(fields[7]),
            ),
        )
    if kind == "NBR" and len(fields) >= 5:
        return (_nbr(fields),)
    if kind == "V3":
        return (CellFix(tst=_time(fields[0], fields[-2]) if len(fields) > 2 else None),)
    if kind == "V4":
        return (Reply("command_reply", fields[0] if fields else "", text=",".join(fields)),)
    if kind == "S71" and len(fields) == 3 and fields[1] == "22" and fields[2].isdigit():
        return (Command("setInterval", int(fields[2])),)
    return (Other(kind.lower()),)


def _nbr(fields: list[str]) -> CellFix:
    # time, mcc, mnc, delay, count, (lac, cid, rssi)×count, date, status
    mcc, mnc, count = int(fields[1]), int(fields[2]), int(fields[4])
    cells = []
    for i in range(count):
        lac, cid, rssi = fields[5 + 3 * i : 8 + 3 * i]
        cells.append(Cell(mcc, mnc, int(lac), int(cid), int(rssi)))
    tail = fields[5 + 3 * count :]
    tst = _time(fields[0], tail[0]) if tail else None
    alarm = _status_alarm(tail[1]) if len(tail) > 1 else None
    return CellFix(tst=tst, cells=tuple(cells), alarm=alarm)


def decode(frame: bytes) -> Packet:
    """A frame (as the framer gives it) → a Packet; a bad frame is a DecodeError."""
    if frame.startswith(b"$"):
        raise DecodeError("h02_binary_unsupported", "binary H02 frames are not decoded")
    match = HEADER.match(frame)
    if match is None or not frame.endswith(b"#"):
        raise DecodeError("bad_frame", "not a *XX,id,type,…# frame")
    vendor, device_id, kind = (g.decode() for g in match.groups())
    if not device_id:
        raise DecodeError("bad_id", "the frame names no device")
    text = frame[match.end() : -1].decode("ascii", "replace") if match.end() < len(frame) else ""
    fields = text.split(",") if text else []
    header = H02Header(vendor.upper(), device_id, kind)
    try:
        messages = _messages(kind, fields)
    except DecodeError:
        raise
    except (ValueError, IndexError, OverflowError) as exc:
        raise DecodeError("malformed", str(exc)[:200]) from None
    return Packet("h02", header, messages)


def reply(packet: Packet) -> bytes | None:
    """H02 needs no acknowledgement (see the module docstring)."""
    return None


def command(action: str, seconds: int | None = None, *, device_id: str, now: float) -> bytes:
    """setInterval → ``*HQ,<id>,S71,<hhmmss UTC>,22,<s>#``; reportLocation is refused."""
    if action == "setInterval" and seconds is not None and seconds > 0:
        day = int(now) % 86400
        hhmmss = f"{day // 3600:02d}{day // 60 % 60:02d}{day % 60:02d}"
        return f"*HQ,{device_id},S71,{hhmmss},22,{seconds}#".encode("ascii")
    raise ValueError(f"no H02 command for {action} {seconds} (H02 has no single-position query)")
