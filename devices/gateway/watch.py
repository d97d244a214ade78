"""The "3G watch" protocol, SeTracker family (pure): framing, decoding, replies, commands.

Frame: ``[<vendor>*<id>*[<index>*]<len 4 hex>*<content>]`` (vendor two characters: SG, 3G,
CS, ZJ…; the index only in some firmware); binary content escapes ``} [ ] , *`` as 0x7D
followed by 01–05. Content ``<TYPE>,<fields>``: LK (link, ``LK,steps,tumbles,battery``),
UD / UD2 / UD3 / UD_LTE / UD_WCDMA / WT (position), AL / ALCUSTOMER… (alarm position):
date ddmmyy, time hhmmss (UTC), A/V, latitude N/S, longitude E/W, speed km/h, course,
altitude, satellites, GSM signal, battery %, steps, tumbles, status (hex; alarm bits 16 SOS,
17 low battery, 20 removed, 21/22 fall), then cells (count, timing advance, mcc, mnc, lac,
cid, rssi…) and Wi-Fi. Replies: ``LK`` to LK, ``AL`` to an alarm, ``TKQ``/``TKQ2`` echoed,
``INIT,1``. Commands: ``CR`` (locate now), ``UPLOAD,<s>``. Frames over `MAX_FRAME` (voice
and pictures) are dropped by the framer; the length field is not trusted (real SG frames
disagree with it).
"""

from __future__ import annotations

import re

from devices.gateway.common import (
    Alarm,
    Cell,
    CellFix,
    Command,
    Location,
    Message,
    Other,
    Packet,
    Reply,
    Status,
    WatchHeader,
    check_coordinate,
    pick_alarm,
    utc_epoch,
)
from devices.gateway.framing import Step, StreamFramer, skip_to_marker
from devices.ingest.codecs import DecodeError

MAX_FRAME = 4096
HEADER = re.compile(
    rb"\[([0-9A-Za-z]{2})\*([0-9A-Za-z]{1,32})\*(?:([0-9A-Fa-f]{4})\*)?([0-9A-Fa-f]{4})\*"
)
UNESCAPE = {0x01: 0x7D, 0x02: 0x5B, 0x03: 0x5D, 0x04: 0x2C, 0x05: 0x2A}
ALARM_BITS: tuple[tuple[int, Alarm], ...] = (
    (16, "sos"),
    (21, "fall"),
    (22, "fall"),
    (20, "removed"),
    (17, "low_battery"),
)
POSITION_TYPES = ("UD", "AL", "WT")
ECHOED = {"LK": "LK", "TKQ": "TKQ", "TKQ2": "TKQ2", "INIT": "INIT,1"}


class WatchFramer(StreamFramer):
    """``[`` … ``]``; a second ``[`` before the ``]`` drops the unfinished one."""

    max_frame = MAX_FRAME

    def _step(self, buf: bytes, start: int) -> Step:
        if buf[start] != 0x5B:
            return skip_to_marker(buf, start, (b"[",))
        limit = start + self.max_frame
        end = buf.find(b"]", start + 1, limit)
        reopen = buf.find(b"[", start + 1, end if end >= 0 else limit)
        if reopen >= 0:
            return ("unterminated", reopen)
        if end < 0:
            return ("oversized", start + 1) if len(buf) >= limit else None
        if not HEADER.match(buf, start):
            return ("bad_header", end + 1)
        return ("frame", end + 1)


def _unescape(data: bytes) -> bytes:
    if 0x7D not in data:
        return data
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0x7D:
            code = data[i + 1] if i + 1 < len(data) else -1
            if code not in UNESCAPE:
                raise DecodeError("bad_escape", f"7d {code:02x} at {i}")
            out.append(UNESCAPE[code])
            i += 2
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def _alarm(status: int) -> Alarm | None:
    return pick_alarm(*(alarm for bit, alarm in ALARM_BITS if status >> bit & 1))


def _number(text: str) -> float:
    value = float(text.strip())
    if value != value or value in (float("inf"), float("-inf")):
        raise DecodeError("bad_field", f"{text!r} is not a number")
    return value


def _cells(values: list[str]) -> tuple[Cell, ...]:
    """``count, ta, mcc, mnc, (lac, cid, rssi)×count``; a short or odd list gives none."""
    try:
        count = int(values[0])
        mcc, mnc = int(values[2] or 0), int(values[3] or 0)
        cells = []
        for i in range(count):
            lac, cid, rssi = values[4 + 3 * i : 7 + 3 * i]
            cells.append(Cell(mcc, mnc, int(lac), int(cid), int(rssi) if rssi else None))
        return tuple(cells)
    except (ValueError, IndexError):
        return ()


def _position(fields: list[str]) -> Message:
    if len(fields) < 16:
        raise DecodeError("truncated", f"{len(fields)} position fields, 16 needed")
    date, time, validity = fields[0], fields[1], fields[2]
    if not (len(date) == 6 and date.isdigit() and len(time) == 6 and time.isdigit()):
        raise DecodeError("bad_time", f"date {date!r} time {time!r}")
    tst = utc_epoch(
        2000 + int(date[4:6]),
        int(date[2:4]),
        int(date[0:2]),
        int(time[0:2]),
        int(time[2:4]),
        int(time[4:6]),
    )
    lat, lon = abs(_number(fields[3])), abs(_number(fields[5]))
    if fields[4].strip() == "S":
        lat = -lat
    if fields[6].strip() == "W":
        lon = -lon
    check_coordinate(lat, lon)
    speed, course, altitude = (_number(f or "0") for f in fields[7:10])
    satellites, gsm, batt = (int(f or 0) for f in fields[10:13])
    status = int(fields[15] or "0", 16)
    alarm = _alarm(status)
    battery = batt if 0 <= batt <= 100 else None
    if lat == 0 and lon == 0:
        return CellFix(tst=tst, cells=_cells(fields[16:]), batt=battery, gsm=gsm, alarm=alarm)
    return Location(
        tst=tst,
        lat=lat,
        lon=lon,
        valid=validity == "A",
        satellites=satellites,
        speed_kmh=speed,
        course=course,
        altitude=altitude,
        batt=battery,
        gsm=gsm,
        alarm=alarm,
    )


def _messages(kind: str, fields: list[str]) -> tuple[Message, ...]:
    if kind == "LK":
        batt = int(fields[2]) if len(fields) >= 3 and fields[2].isdigit() else None
        return (Status(batt=batt if batt is not None and batt <= 100 else None),)
    if kind.startswith(POSITION_TYPES):
        return (_position(fields),) if fields else (Reply("ack", kind),)
    if kind == "CR" and not fields:
        return (Command("reportLocation"),)
    if kind == "UPLOAD" and len(fields) == 1 and fields[0].isdigit():
        return (Command("setInterval", int(fields[0])),)
    if kind in ("UPLOAD", "CR"):
        return (Reply("command_reply", kind),)
    return (Other(kind.lower() or "empty"),)


def decode(frame: bytes) -> Packet:
    """A frame (as the framer gives it) → a Packet; a bad frame is a DecodeError."""
    match = HEADER.match(frame)
    if match is None or not frame.endswith(b"]"):
        raise DecodeError("bad_frame", "not a [XX*id*len*content] frame")
    # The length field is not checked: published SG frames (Traccar's WatchProtocolDecoderTest)
    # disagree with their own content by a few bytes; the brackets delimit the frame.
    raw = frame[match.end() : -1]
    vendor, device_id = match.group(1).decode(), match.group(2).decode()
    index = match.group(3).decode() if match.group(3) else None
    content = _unescape(raw)
    kind_raw, _, rest = content.partition(b",")
    kind = kind_raw.decode("ascii", "replace")
    header = WatchHeader(vendor, device_id, index, kind)
    if kind in ("TK", "JXTK", "img") or not kind.isascii():
        return Packet("watch", header, (Other(kind.lower()),))  # voice / pictures
    fields = rest.decode("ascii", "replace").split(",") if rest else []
    try:
        messages = _messages(kind, fields)
    except DecodeError:
        raise
    except (ValueError, IndexError, OverflowError) as exc:
        raise DecodeError("malformed", str(exc)[:200]) from None
    return Packet("watch", header, messages)


def encode(vendor: str, device_id: str, content: str, *, index: str | None = None) -> bytes:
    """``[vendor*id*(index*)LLLL*content]`` with the content's length in 4 hex digits."""
    data = content.encode("ascii")
    middle = f"{index}*" if index else ""
    return f"[{vendor}*{device_id}*{middle}{len(data):04X}*".encode() + data + b"]"


def reply(packet: Packet) -> bytes | None:
    """``LK`` to a link, ``AL`` to an alarm, ``TKQ``/``TKQ2`` echoed, ``INIT,1``."""
    h = packet.header
    if not isinstance(h, WatchHeader):
        return None
    answer = "AL" if h.kind.startswith("AL") else ECHOED.get(h.kind)
    if answer is None:
        return None
    return encode(h.vendor, h.device_id, answer, index=h.index)


def command(
    action: str,
    seconds: int | None = None,
    *,
    vendor: str,
    device_id: str,
    index: str | None = None,
) -> bytes:
    """reportLocation → ``CR``; setInterval → ``UPLOAD,<s>``."""
    if action == "reportLocation":
        return encode(vendor, device_id, "CR", index=index)
    if action == "setInterval" and seconds is not None and seconds > 0:
        return encode(vendor, device_id, f"UPLOAD,{seconds}", index=index)
    raise ValueError(f"no watch command for {action} {seconds}")
