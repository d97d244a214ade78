"""GT06 / Concox (pure): framing, decoding, acknowledgements and commands.

Frame: ``78 78 <len 1> <proto> <content> <serial 2> <crc 2> 0D 0A`` (``79 79`` with a 2-byte
length), ``len`` counting proto..crc, CRC-16/X-25 over length..serial. Times are UTC, speed
km/h, coordinates in 1/30000 minute with the hemispheres in the course/status word.

Decoded: login 0x01 (IMEI), status 0x13 (voltage level 0–6 → %, GSM 0–4, alarm), GPS
0x10/0x12/0x22 (0x22's upload-mode byte marks re-sent history), alarms 0x16/0x26/0x27
(GPS + LBS + status + alarm), LBS 0x18/0x28 (cells, no coordinate), LBS status 0x19,
Wi-Fi/LBS 0x17/0x2C/0x69 (no coordinate), command answers 0x15/0x21 and our own 0x80.
Acknowledged (per the GT06/Concox documents): login, status and the alarm packets; a
location packet needs no answer. Not decoded (skipped with a reason): vendor variants with
a zero length byte, photos, OBD, the 0x94 information packets.
"""

from __future__ import annotations

from dataclasses import replace

from devices.gateway.common import (
    Alarm,
    Cell,
    CellFix,
    Command,
    Gt06Header,
    Location,
    Login,
    Message,
    Other,
    Packet,
    Reader,
    Reply,
    Status,
    check_coordinate,
    pick_alarm,
    utc_epoch,
)
from devices.gateway.framing import Step, StreamFramer, crc16_x25, skip_to_marker
from devices.ingest.codecs import DecodeError

MARKERS = (b"\x78\x78", b"\x79\x79")
MAX_FRAME = 1024

LOGIN = 0x01
GPS = 0x10
GPS_LBS = 0x12
STATUS = 0x13
STRING = 0x15
ALARM = 0x16
WIFI = 0x17
LBS_EXTEND = 0x18
LBS_STATUS = 0x19
STRING_INFO = 0x21
GPS_LBS_2 = 0x22
ALARM_2 = 0x26
ALARM_3 = 0x27
LBS_MULTIPLE = 0x28
LBS_WIFI = 0x2C
WIFI_2 = 0x69
COMMAND = 0x80

ACKED = frozenset({LOGIN, STATUS, ALARM, ALARM_2, ALARM_3, LBS_STATUS})

# Alarm byte of the status packets (GT06/Concox documents; Traccar's Gt06ProtocolDecoder).
ALARM_CODES: dict[int, Alarm] = {
    0x01: "sos",
    0x0E: "low_battery",
    0x0F: "low_battery",
    0x13: "removed",  # "disassembly": on a bracelet, taken off / opened
    0x23: "fall",
}
# Terminal information bits 3–5 (the same alarm, older firmware).
INFO_ALARMS: dict[int, Alarm] = {3: "low_battery", 4: "sos", 7: "removed"}


class Gt06Framer(StreamFramer):
    """Length-delimited frames; a frame whose length does not end in 0D 0A loses its marker."""

    max_frame = MAX_FRAME

    def _step(self, buf: bytes, start: int) -> Step:
        if not (buf.startswith(MARKERS[0], start) or buf.startswith(MARKERS[1], start)):
            return skip_to_marker(buf, start, MARKERS)
        extended = buf[start] == 0x79
        head = 4 if extended else 3
        if len(buf) - start < head:
            return None
        length = int.from_bytes(buf[start + 2 : start + head], "big")
        total = head + length + 2
        if length < 5:
            return ("bad_length", start + 2)
        if total > self.max_frame:
            return ("oversized", start + 2)
        if len(buf) - start < total:
            return None
        if buf[start + total - 2 : start + total] != b"\r\n":
            return ("bad_length", start + 2)
        return ("frame", start + total)


def _unwrap(frame: bytes) -> tuple[bool, int, bytes, int]:
    """(extended, proto, content, serial) of a checked frame."""
    if len(frame) < 10 or frame[:2] not in MARKERS or frame[-2:] != b"\r\n":
        raise DecodeError("bad_frame", "not a 7878/7979 … 0D0A frame")
    extended = frame[0] == 0x79
    head = 4 if extended else 3
    length = int.from_bytes(frame[2:head], "big")
    if head + length + 2 != len(frame):
        raise DecodeError("bad_length", f"length {length} for a {len(frame)}-byte frame")
    crc = int.from_bytes(frame[-4:-2], "big")
    if crc16_x25(frame[2:-4]) != crc:
        raise DecodeError("bad_checksum", f"CRC {crc:04x} != {crc16_x25(frame[2:-4]):04x}")
    return extended, frame[head], frame[head + 1 : -6], int.from_bytes(frame[-6:-4], "big")


def _time(r: Reader) -> float:
    y, mo, d, h, mi, s = r.take(6)
    return utc_epoch(2000 + y, mo, d, h, mi, s)


def _battery(level: int) -> int | None:
    """The voltage level 0–6 as a percentage; some models send a percentage instead."""
    if level <= 6:
        return round(level * 100 / 6)
    return level if level <= 100 else None


def _battery_percent(value: int) -> int | None:
    return value if value <= 100 else None


def _info_alarm(info: int) -> Alarm | None:
    return INFO_ALARMS.get((info >> 3) & 0x07)


def _gps(r: Reader, *, with_alarm: Alarm | None = None) -> Location:
    tst = _time(r)
    gps_info = r.u8()
    lat = r.u32() / 1_800_000
    lon = r.u32() / 1_800_000
    speed = r.u8()
    flags = r.u16()
    if not flags & 0x0400:  # bit 10: north latitude
        lat = -lat
    if flags & 0x0800:  # bit 11: west longitude
        lon = -lon
    check_coordinate(lat, lon)
    return Location(
        tst=tst,
        lat=lat,
        lon=lon,
        valid=bool(flags & 0x1000),  # bit 12: GPS positioned
        satellites=gps_info & 0x0F,
        speed_kmh=float(speed),
        course=float(flags & 0x03FF),
        alarm=with_alarm,
    )


def _lbs(r: Reader, *, length_byte: bool) -> Cell:
    size = r.u8() if length_byte else 9
    start = r.pos
    mcc = r.u16()
    mnc = r.u16() if mcc & 0x8000 else r.u8()
    cell = Cell(mcc & 0x7FFF, mnc, r.u16(), r.u24())
    if length_byte and size > 1:
        r.pos = max(r.pos, start + size - 1)
    return cell


def _status_block(r: Reader) -> tuple[int | None, int, Alarm | None]:
    """(battery %, GSM 0–4, alarm) from terminal info, voltage, GSM, alarm bytes."""
    info, voltage, gsm, code = r.u8(), r.u8(), r.u8(), r.u8()
    return _battery(voltage), gsm, pick_alarm(ALARM_CODES.get(code), _info_alarm(info))


def _decode_messages(proto: int, content: bytes) -> tuple[Message, ...]:
    r = Reader(content)
    if not content and proto in ACKED:  # the platform's acknowledgement (our `reply`)
        return (Reply("ack", f"0x{proto:02x}"),)
    if proto == LOGIN:
        imei = r.take(8).hex()[1:]
        if not imei.isdigit():
            raise DecodeError("bad_id", f"IMEI {imei!r} is not BCD digits")
        return (Login(imei),)
    if proto == STATUS and len(content) >= 16:  # the long variant: info, sats, alarm, lang, %
        return (Status(batt=_battery_percent(content[5])),)
    if proto == STATUS:
        batt, gsm, alarm = _status_block(r)
        return (Status(batt=batt, gsm=gsm, alarm=alarm),)
    if proto in (GPS, GPS_LBS, GPS_LBS_2):
        fix = _gps(r)
        if proto == GPS_LBS_2 and r.left >= 9 + 3:
            _lbs(r, length_byte=False)
            r.take(2)  # ACC, data upload mode
            history = r.u8() == 0x01  # GPS real-time re-upload: 0 real time, 1 re-upload
            fix = replace(fix, history=history)
        return (fix,)
    if proto in (ALARM, ALARM_2, ALARM_3):
        fix = _gps(r)
        _lbs(r, length_byte=True)
        batt, gsm, alarm = _status_block(r)
        return (replace(fix, batt=batt, gsm=gsm, alarm=alarm),)
    if proto == LBS_STATUS:
        cell = _lbs(r, length_byte=False)
        batt, gsm, alarm = _status_block(r)
        return (CellFix(tst=None, cells=(cell,), batt=batt, gsm=gsm, alarm=alarm),)
    if proto in (LBS_EXTEND, LBS_MULTIPLE):
        tst = _time(r)
        mcc = r.u16()
        mnc = r.u16() if mcc & 0x8000 else r.u8()
        cells = []
        for _ in range(7):
            if r.left < 6:
                break
            lac, cid, rssi = r.u16(), r.u24(), r.u8()
            if lac:
                cells.append(Cell(mcc & 0x7FFF, mnc, lac, cid, -rssi))
        return (CellFix(tst=tst, cells=tuple(cells)),)
    if proto in (WIFI, LBS_WIFI, WIFI_2):
        return (CellFix(tst=None),)
    if proto in (STRING, STRING_INFO):
        size = r.u8()
        r.take(4)  # server flag
        text = r.take(max(0, size - 4)).decode("ascii", "replace")
        return (Reply("command_reply", text=text),)
    if proto == COMMAND:
        size = r.u8()
        r.take(4)  # server flag
        text = r.take(max(0, size - 4)).decode("ascii", "replace")
        return (_command_of(text),)
    return (Other(f"gt06_0x{proto:02x}"),)


def _command_of(text: str) -> Message:
    if text == "DWXX#":
        return Command("reportLocation")
    if text.startswith("TIMER,") and text.endswith("#") and text[6:-1].isdigit():
        return Command("setInterval", int(text[6:-1]))
    return Other("gt06_command", text)


def decode(frame: bytes) -> Packet:
    """A frame (as the framer gives it) → a Packet; a bad frame is a DecodeError."""
    extended, proto, content, serial = _unwrap(frame)
    try:
        messages = _decode_messages(proto, content)
    except DecodeError:
        raise
    except (ValueError, IndexError, OverflowError) as exc:  # defensive: never escapes
        raise DecodeError("malformed", str(exc)[:200]) from None
    return Packet("gt06", Gt06Header(proto, serial, extended), messages)


def _frame(proto: int, content: bytes, serial: int) -> bytes:
    body = bytes([5 + len(content), proto]) + content + (serial & 0xFFFF).to_bytes(2, "big")
    return b"\x78\x78" + body + crc16_x25(body).to_bytes(2, "big") + b"\r\n"


def reply(packet: Packet) -> bytes | None:
    """The acknowledgement the bracelet waits for: ``78 78 05 <proto> <serial> <crc> 0D 0A``."""
    header = packet.header
    if not isinstance(header, Gt06Header) or header.proto not in ACKED:
        return None
    return _frame(header.proto, b"", header.serial)


def encode_text(text: str, *, serial: int, language: bool = True) -> bytes:
    """An online command 0x80: length, server flag (4 bytes), ASCII text, language 0x0002."""
    payload = text.encode("ascii")
    content = bytes([4 + len(payload)]) + b"\x00\x00\x00\x00" + payload
    if language:
        content += b"\x00\x02"  # English (0x0001 Chinese)
    return _frame(COMMAND, content, serial)


def command(action: str, seconds: int | None = None, *, serial: int) -> bytes:
    """reportLocation → ``DWXX#``; setInterval → ``TIMER,<s>#``."""
    if action == "reportLocation":
        return encode_text("DWXX#", serial=serial)
    if action == "setInterval" and seconds is not None and seconds > 0:
        return encode_text(f"TIMER,{seconds}#", serial=serial)
    raise ValueError(f"no GT06 command for {action} {seconds}")
