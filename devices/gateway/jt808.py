"""JT/T 808 (pure): framing, decoding, platform responses and commands.

Frame: ``7E <escaped header+body+check> 7E``; 0x7E is sent as ``7D 02`` and 0x7D as
``7D 01``; the check byte XORs header and body. Header: message id, properties (body
length bits 0–9, encryption 10–12, sub-packaging 13, 2019 version flag 14), then either the
2013 form (6-byte BCD phone) or the 2019 form (protocol version byte, 10-byte BCD phone),
the serial, and with sub-packaging the packet count and number.

Decoded: registration 0x0100 (2011/2013/2019 layouts), authentication 0x0102, heartbeat
0x0002, location 0x0200 and query answer 0x0201, batch 0x0704 (type 1 = blind-area re-send →
``history``), the terminal's general response 0x0001, and our own 0x8001/0x8100/0x8103/
0x8201. Location: alarm bit 0 → sos, bit 7 (supply under-voltage) → low_battery; status bit
1 positioned, 2 south, 3 west; BCD time in Beijing time (UTC+8) converted to UTC; extra
items 0x01 mileage, 0x30 signal, 0x31 satellites, 0xD4/0xFE battery % (vendor items).
Not positioned with a coordinate → the last known, flagged invalid; with 0,0 → a cell-only
report. Encrypted bodies and reassembly of sub-packages are not supported (a fragment is
acknowledged and reported as ``Other("fragment")``).
"""

from __future__ import annotations

from devices.gateway.common import (
    Alarm,
    Authenticate,
    CellFix,
    Command,
    Jt808Header,
    Location,
    Message,
    Other,
    Packet,
    Reader,
    Register,
    Reply,
    Status,
    check_coordinate,
    pick_alarm,
    utc_epoch,
)
from devices.gateway.framing import Step, StreamFramer, to_bcd, xor_check
from devices.ingest.codecs import DecodeError

MAX_BODY = 1023
MAX_FRAME = 2 * (MAX_BODY + 21) + 2  # every byte escaped, the longest header
BEIJING_OFFSET_S = 8 * 3600

TERMINAL_RESPONSE = 0x0001
HEARTBEAT = 0x0002
LOGOUT = 0x0003
REGISTER = 0x0100
AUTH = 0x0102
LOCATION = 0x0200
LOCATION_ANSWER = 0x0201
BATCH = 0x0704
PLATFORM_RESPONSE = 0x8001
REGISTER_RESPONSE = 0x8100
SET_PARAMS = 0x8103
QUERY_LOCATION = 0x8201

PARAM_REPORT_INTERVAL = 0x0029  # default time reporting interval, DWORD seconds
GENERAL_ACKED = frozenset({HEARTBEAT, LOGOUT, AUTH, LOCATION, BATCH})


def escape(data: bytes) -> bytes:
    return data.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def unescape(data: bytes) -> bytes:
    """Undo 0x7D escaping; a 0x7D not followed by 01/02 is a DecodeError."""
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0x7D:
            nxt = data[i + 1] if i + 1 < len(data) else -1
            if nxt not in (0x01, 0x02):
                raise DecodeError("bad_escape", f"7d {nxt:02x} at {i}")
            out.append(0x7D if nxt == 0x01 else 0x7E)
            i += 2
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def _checked(frame: bytes) -> bytes:
    """Header + body of a frame whose markers, escaping and check byte are right."""
    if len(frame) < 3 or frame[0] != 0x7E or frame[-1] != 0x7E:
        raise DecodeError("bad_frame", "not a 7E … 7E frame")
    if 0x7E in frame[1:-1]:
        raise DecodeError("bad_frame", "a bare 7E inside the frame")
    data = unescape(frame[1:-1])
    if len(data) < 13:
        raise DecodeError("truncated", f"{len(data)} bytes is shorter than any header")
    if xor_check(data[:-1]) != data[-1]:
        raise DecodeError("bad_checksum", f"check {data[-1]:02x} != {xor_check(data[:-1]):02x}")
    return data[:-1]


class Jt808Framer(StreamFramer):
    """``7E … 7E``; a candidate that fails its check gives up only its opening 7E."""

    max_frame = MAX_FRAME

    def _step(self, buf: bytes, start: int) -> Step:
        if buf[start] != 0x7E:
            nxt = buf.find(b"\x7e", start)
            return ("garbage", nxt if nxt >= 0 else len(buf))
        end = buf.find(b"\x7e", start + 1, start + self.max_frame)
        if end < 0:
            return ("oversized", start + 1) if len(buf) - start >= self.max_frame else None
        if end == start + 1:
            return ("garbage", end)  # 7E 7E: the first closed something we never saw
        try:
            _checked(buf[start : end + 1])
        except DecodeError as exc:
            return (exc.reason, end)  # the closing 7E may open the next frame
        return ("frame", end + 1)


def parse_header(data: bytes) -> tuple[Jt808Header, bytes]:
    r = Reader(data)
    msg_id, props = r.u16(), r.u16()
    version: int | None = None
    if props & 0x4000:
        version = r.u8()
        phone = r.take(10).hex()
    else:
        phone = r.take(6).hex()
    serial = r.u16()
    total = number = None
    if props & 0x2000:
        total, number = r.u16(), r.u16()
    header = Jt808Header(msg_id, props, version, phone, serial, total, number)
    body = r.rest()
    if len(body) != header.body_length:
        raise DecodeError("bad_length", f"body {len(body)} bytes, header says {header.body_length}")
    if not phone.isdigit():
        raise DecodeError("bad_id", f"phone {phone!r} is not BCD digits")
    if props & 0x1C00:
        raise DecodeError("encrypted", "encrypted JT/T 808 bodies are not supported")
    return header, body


def _bcd_time(raw: bytes) -> float | None:
    digits = raw.hex()
    if not digits.isdigit() or digits == "000000000000":
        return None
    y, mo, d, h, mi, s = (int(digits[i : i + 2]) for i in range(0, 12, 2))
    return utc_epoch(2000 + y, mo, d, h, mi, s) - BEIJING_OFFSET_S


def _alarm(flags: int) -> Alarm | None:
    return pick_alarm("sos" if flags & 0x01 else None, "low_battery" if flags & 0x80 else None)


def _location(body: bytes, *, history: bool = False) -> Message:
    r = Reader(body)
    alarm_flags, status = r.u32(), r.u32()
    lat, lon = r.u32() / 1e6, r.u32() / 1e6
    altitude = int.from_bytes(r.take(2), "big", signed=True)
    speed = r.u16() / 10
    course = r.u16()
    raw_time = r.take(6)
    gsm = satellites = batt = None
    while r.left >= 2:
        item, size = r.u8(), r.u8()
        value = r.take(min(size, r.left))
        if item == 0x30 and size == 1:
            gsm = value[0]
        elif item == 0x31 and size == 1:
            satellites = value[0]
        elif item in (0xD4, 0xFE) and size == 1 and value[0] <= 100:
            batt = value[0]
    if status & 0x04:
        lat = -lat
    if status & 0x08:
        lon = -lon
    check_coordinate(lat, lon)
    positioned = bool(status & 0x02)
    alarm = _alarm(alarm_flags)
    tst = _bcd_time(raw_time)
    if tst is None and positioned:
        raise DecodeError("bad_time", f"positioned fix without a time: {raw_time.hex()}")
    if tst is None or (lat == 0 and lon == 0):
        return CellFix(tst=tst, batt=batt, gsm=gsm, alarm=alarm, history=history)
    return Location(
        tst=tst,
        lat=lat,
        lon=lon,
        valid=positioned,
        satellites=satellites,
        speed_kmh=speed,
        course=float(course),
        altitude=float(altitude),
        batt=batt,
        gsm=gsm,
        alarm=alarm,
        history=history,
    )


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii", "replace").strip()


def _register(body: bytes, version: int | None) -> Register:
    r = Reader(body)
    province, city = r.u16(), r.u16()
    if version is not None:
        maker, model, terminal = r.take(11), r.take(30), r.take(30)
    elif len(body) >= 37:
        maker, model, terminal = r.take(5), r.take(20), r.take(7)
    else:  # the 2011 layout
        maker, model, terminal = r.take(5), r.take(8), r.take(7)
    color = r.u8()
    plate = r.rest().rstrip(b"\x00").decode("gbk", "replace")
    return Register(province, city, _text(maker), _text(model), _text(terminal), color, plate)


def _set_params(body: bytes) -> Message:
    r = Reader(body)
    count = r.u8()
    for _ in range(count):
        param, size = r.u32(), r.u8()
        value = r.take(size)
        if param == PARAM_REPORT_INTERVAL and size == 4:
            return Command("setInterval", int.from_bytes(value, "big"))
    return Other("set_params")


def _messages(header: Jt808Header, body: bytes) -> tuple[Message, ...]:
    if header.fragment and (header.packet_total or 0) > 1:
        return (Other("fragment", f"{header.packet_no}/{header.packet_total}"),)
    msg = header.msg_id
    if msg == HEARTBEAT:
        return (Status(),)
    if msg == LOCATION:
        return (_location(body),)
    if msg == LOCATION_ANSWER:
        return (_location(body[2:]),)
    if msg == BATCH:
        r = Reader(body)
        count, kind = r.u16(), r.u8()
        return tuple(_location(r.take(r.u16()), history=kind == 1) for _ in range(count))
    if msg == REGISTER:
        return (_register(body, header.version),)
    if msg == AUTH:
        if header.version is not None:
            r = Reader(body)
            return (Authenticate(_text(r.take(r.u8()))),)
        return (Authenticate(_text(body)),)
    if msg in (TERMINAL_RESPONSE, PLATFORM_RESPONSE):
        r = Reader(body)
        serial, answers, result = r.u16(), r.u16(), r.u8()
        name = "terminal_response" if msg == TERMINAL_RESPONSE else "platform_response"
        return (Reply(name, f"0x{answers:04x}", serial, result),)
    if msg == REGISTER_RESPONSE:
        r = Reader(body)
        serial, result = r.u16(), r.u8()
        code = _text(r.rest())
        return (Reply("register_response", "0x0100", serial, result, code),)
    if msg == SET_PARAMS:
        return (_set_params(body),)
    if msg == QUERY_LOCATION:
        return (Command("reportLocation"),)
    return (Other(f"jt808_0x{msg:04x}"),)


def decode(frame: bytes) -> Packet:
    """A frame (as the framer gives it) → a Packet; a bad frame is a DecodeError."""
    header, body = parse_header(_checked(frame))
    try:
        messages = _messages(header, body)
    except DecodeError:
        raise
    except (ValueError, IndexError, OverflowError) as exc:  # defensive: never escapes
        raise DecodeError("malformed", str(exc)[:200]) from None
    return Packet("jt808", header, messages)


def encode(msg_id: int, body: bytes, *, phone: str, serial: int, version: int | None) -> bytes:
    """A platform message in the terminal's header version: escaped, with its check byte."""
    if len(body) > MAX_BODY:
        raise ValueError(f"body of {len(body)} bytes needs sub-packaging")
    props = len(body)
    if version is None:
        head = to_bcd(phone, 6)
    else:
        props |= 0x4000
        head = bytes([version & 0xFF]) + to_bcd(phone, 10)
    data = (
        msg_id.to_bytes(2, "big")
        + props.to_bytes(2, "big")
        + head
        + (serial & 0xFFFF).to_bytes(2, "big")
        + body
    )
    return b"\x7e" + escape(data + bytes([xor_check(data)])) + b"\x7e"


def reply(packet: Packet, *, serial: int, auth_code: str) -> bytes | None:
    """0x8100 (with ``auth_code``) to a registration, 0x8001 result 0 to what needs one."""
    h = packet.header
    if not isinstance(h, Jt808Header):
        return None
    answered = h.serial.to_bytes(2, "big")
    if h.msg_id == REGISTER:
        body = answered + b"\x00" + auth_code.encode("ascii")
        return encode(REGISTER_RESPONSE, body, phone=h.phone, serial=serial, version=h.version)
    if h.msg_id in GENERAL_ACKED or h.fragment:
        body = answered + h.msg_id.to_bytes(2, "big") + b"\x00"
        return encode(PLATFORM_RESPONSE, body, phone=h.phone, serial=serial, version=h.version)
    return None


def command(
    action: str, seconds: int | None = None, *, phone: str, serial: int, version: int | None
) -> bytes:
    """reportLocation → 0x8201 (location query); setInterval → 0x8103 parameter 0x0029."""
    if action == "reportLocation":
        return encode(QUERY_LOCATION, b"", phone=phone, serial=serial, version=version)
    if action == "setInterval" and seconds is not None and 0 < seconds < 2**32:
        body = (
            b"\x01"
            + PARAM_REPORT_INTERVAL.to_bytes(4, "big")
            + b"\x04"
            + seconds.to_bytes(4, "big")
        )
        return encode(SET_PARAMS, body, phone=phone, serial=serial, version=version)
    raise ValueError(f"no JT/T 808 command for {action} {seconds}")
