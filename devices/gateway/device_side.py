"""The bracelet's side of each protocol (pure): uplink frames as real trackers build them.

The simulator and `homeward bench gateway` speak to the gateway with these bytes; the tests
decode every one with the gateway's own framers and decoders. Each protocol has a login or
registration, a heartbeat, a location (with an optional alarm) and the answer to a command.
"""

from __future__ import annotations

from datetime import UTC, datetime

from devices.gateway import gt06, jt808, watch
from devices.gateway.common import Alarm
from devices.gateway.framing import crc16_x25

GT06_ALARM_CODES: dict[Alarm, int] = {
    "sos": 0x01,
    "low_battery": 0x0E,
    "removed": 0x13,
    "fall": 0x23,
}
JT808_ALARM_FLAGS: dict[Alarm, int] = {"sos": 0x01, "low_battery": 0x80}
WATCH_ALARM_BITS: dict[Alarm, int] = {"sos": 16, "low_battery": 17, "removed": 20, "fall": 21}
GT06_GPS_LBS = 0x12
GT06_STRING = 0x15


def _utc(tst: float) -> datetime:
    return datetime.fromtimestamp(tst, UTC)


# --- GT06 ------------------------------------------------------------------------------------
def gt06_frame(proto: int, content: bytes, serial: int) -> bytes:
    """``78 78 <len> <proto> <content> <serial> <crc> 0D 0A``."""
    body = bytes([5 + len(content), proto]) + content + (serial & 0xFFFF).to_bytes(2, "big")
    return b"\x78\x78" + body + crc16_x25(body).to_bytes(2, "big") + b"\r\n"


def gt06_login(*, imei: str, serial: int) -> bytes:
    """0x01 with the 15-digit IMEI in BCD (a leading 0 nibble)."""
    if len(imei) != 15 or not imei.isdigit():
        raise ValueError(f"a GT06 IMEI has 15 digits, not {imei!r}")
    return gt06_frame(gt06.LOGIN, bytes.fromhex("0" + imei), serial)


def gt06_heartbeat(*, serial: int, battery: int = 100, gsm: int = 4) -> bytes:
    """0x13 status: terminal info (GPS on, charging off), voltage level 0–6, GSM 0–4."""
    level = max(0, min(6, round(battery * 6 / 100)))
    return gt06_frame(gt06.STATUS, bytes([0x46, level, max(0, min(4, gsm)), 0x00, 0x02]), serial)


def _gt06_gps(
    tst: float, lat: float, lon: float, speed_kmh: float, course: float, valid: bool
) -> bytes:
    t = _utc(tst)
    flags = (0x1000 if valid else 0) | (0x0400 if lat >= 0 else 0) | (0x0800 if lon < 0 else 0)
    flags |= int(course) % 360
    return (
        bytes([t.year - 2000, t.month, t.day, t.hour, t.minute, t.second, 0xC9])  # 9 satellites
        + round(abs(lat) * 1_800_000).to_bytes(4, "big")
        + round(abs(lon) * 1_800_000).to_bytes(4, "big")
        + bytes([max(0, min(255, round(speed_kmh)))])
        + flags.to_bytes(2, "big")
    )


def gt06_location(
    *,
    tst: float,
    lat: float,
    lon: float,
    serial: int,
    speed_kmh: float = 0.0,
    course: float = 0.0,
    alarm: Alarm | None = None,
    battery: int = 100,
    valid: bool = True,
) -> bytes:
    """0x12 GPS+LBS (no ack expected); with an alarm, 0x16 (acknowledged) carrying its code.

    ``valid=False`` is a fix the tracker does not trust (no GPS lock: its last or a cell
    position), which the gateway maps to a cell-accuracy uplink."""
    gps = _gt06_gps(tst, lat, lon, speed_kmh, course, valid)
    if alarm is None:
        return gt06_frame(GT06_GPS_LBS, gps + bytes.fromhex("01cc00 2866 000f1b"), serial)
    level = max(0, min(6, round(battery * 6 / 100)))
    lbs = bytes.fromhex(
        "09 01cc00 2866 000f1b"
    )  # length byte (itself counted), then mcc, mnc, lac, cell
    status = bytes([0x46, level, 4, GT06_ALARM_CODES[alarm], 0x02])
    return gt06_frame(gt06.ALARM, gps + lbs + status, serial)


def gt06_answer(*, text: str, serial: int) -> bytes:
    """0x15: the bracelet's text answer to a 0x80 command (server flag zero)."""
    payload = text.encode("ascii")
    return gt06_frame(GT06_STRING, bytes([4 + len(payload)]) + bytes(4) + payload, serial)


# --- JT/T 808 (2013 header: a 12-digit phone) ------------------------------------------------
def jt808_register(*, phone: str, serial: int, terminal_id: str = "HW00001") -> bytes:
    """0x0100: province, city, maker, model, terminal id, plate colour 0."""
    body = (
        (33).to_bytes(2, "big")
        + (481).to_bytes(2, "big")
        + b"HWSIM"
        + b"HOMEWARD-BAND".ljust(20, b"\x00")
        + terminal_id.encode("ascii")[:7].ljust(7, b"\x00")
        + b"\x00"
    )
    return jt808.encode(jt808.REGISTER, body, phone=phone, serial=serial, version=None)


def jt808_auth(*, phone: str, code: str, serial: int) -> bytes:
    """0x0102 with the code the platform gave at registration."""
    return jt808.encode(jt808.AUTH, code.encode("ascii"), phone=phone, serial=serial, version=None)


def jt808_heartbeat(*, phone: str, serial: int) -> bytes:
    return jt808.encode(jt808.HEARTBEAT, b"", phone=phone, serial=serial, version=None)


def _jt808_location_body(
    tst: float,
    lat: float,
    lon: float,
    speed_kmh: float,
    course: float,
    alarm: Alarm | None,
    valid: bool = True,
) -> bytes:
    status = (0x02 if valid else 0) | (0x04 if lat < 0 else 0) | (0x08 if lon < 0 else 0)
    beijing = _utc(tst + jt808.BEIJING_OFFSET_S).strftime("%y%m%d%H%M%S")
    return (
        (JT808_ALARM_FLAGS[alarm] if alarm else 0).to_bytes(4, "big")
        + status.to_bytes(4, "big")
        + round(abs(lat) * 1e6).to_bytes(4, "big")
        + round(abs(lon) * 1e6).to_bytes(4, "big")
        + (10).to_bytes(2, "big")  # altitude m
        + round(speed_kmh * 10).to_bytes(2, "big")
        + (int(course) % 360).to_bytes(2, "big")
        + bytes.fromhex(beijing)
        + bytes([0x30, 1, 25, 0x31, 1, 9])  # GSM signal, 9 satellites
    )


def jt808_location(
    *,
    phone: str,
    tst: float,
    lat: float,
    lon: float,
    serial: int,
    speed_kmh: float = 0.0,
    course: float = 0.0,
    alarm: Alarm | None = None,
    valid: bool = True,
) -> bytes:
    """0x0200 location report (SOS and low battery are alarm flags; unpositioned if not valid)."""
    body = _jt808_location_body(tst, lat, lon, speed_kmh, course, alarm, valid)
    return jt808.encode(jt808.LOCATION, body, phone=phone, serial=serial, version=None)


def jt808_location_answer(
    *, phone: str, answered: int, tst: float, lat: float, lon: float, serial: int
) -> bytes:
    """0x0201: the answer to a 0x8201 location query (its serial, then a location)."""
    body = answered.to_bytes(2, "big") + _jt808_location_body(tst, lat, lon, 0.0, 0.0, None)
    return jt808.encode(jt808.LOCATION_ANSWER, body, phone=phone, serial=serial, version=None)


def jt808_response(
    *, phone: str, answered: int, msg_id: int, serial: int, result: int = 0
) -> bytes:
    """0x0001 terminal general response to a platform message."""
    body = answered.to_bytes(2, "big") + msg_id.to_bytes(2, "big") + bytes([result])
    return jt808.encode(jt808.TERMINAL_RESPONSE, body, phone=phone, serial=serial, version=None)


# --- 3G watch ----------------------------------------------------------------------------------
def watch_link(*, device_id: str, battery: int, vendor: str = "SG") -> bytes:
    """``LK,steps,rolls,battery``: the watch's link and heartbeat."""
    return watch.encode(vendor, device_id, f"LK,0,0,{battery}")


def watch_location(
    *,
    device_id: str,
    tst: float,
    lat: float,
    lon: float,
    battery: int = 100,
    speed_kmh: float = 0.0,
    course: float = 0.0,
    alarm: Alarm | None = None,
    vendor: str = "SG",
    valid: bool = True,
) -> bytes:
    """``UD`` (or ``AL`` with the alarm's status bit, acknowledged by the platform)."""
    t = _utc(tst)
    status = 1 << WATCH_ALARM_BITS[alarm] if alarm else 0
    fields = [
        "AL" if alarm else "UD",
        t.strftime("%d%m%y"),
        t.strftime("%H%M%S"),
        "A" if valid else "V",
        f"{abs(lat):.6f}",
        "N" if lat >= 0 else "S",
        f"{abs(lon):.6f}",
        "E" if lon >= 0 else "W",
        f"{speed_kmh:.2f}",
        f"{course:.0f}",
        "10",  # altitude
        "9",  # satellites
        "80",  # GSM
        str(battery),
        "0",  # steps
        "0",  # rolls
        f"{status:08X}",
    ]
    return watch.encode(vendor, device_id, ",".join(fields))


def watch_answer(*, device_id: str, kind: str, vendor: str = "SG") -> bytes:
    """A watch echoes a command's keyword (``CR``, ``UPLOAD``) to say it was done."""
    return watch.encode(vendor, device_id, kind)


# --- H02 -----------------------------------------------------------------------------------
def h02_location(
    *,
    device_id: str,
    tst: float,
    lat: float,
    lon: float,
    speed_kmh: float = 0.0,
    course: float = 0.0,
    alarm: Alarm | None = None,
    valid: bool = True,
) -> bytes:
    """``*HQ,<id>,V1,hhmmss,A,ddmm.mmmm,N,dddmm.mmmm,E,knots,course,ddmmyy,status#``.

    Status bits are active low: all set is "no alarm", bit 1 clear is SOS (the only H02
    alarm the gateway reads)."""
    t = _utc(tst)
    alat, alon = abs(lat), abs(lon)
    lat_text = f"{int(alat):02d}{(alat % 1) * 60:07.4f}"
    lon_text = f"{int(alon):03d}{(alon % 1) * 60:07.4f}"
    status = "FFFFFFFD" if alarm == "sos" else "FFFFFFFF"
    fields = [
        t.strftime("%H%M%S"),
        "A" if valid else "V",
        lat_text,
        "N" if lat >= 0 else "S",
        lon_text,
        "E" if lon >= 0 else "W",
        f"{speed_kmh / 1.852:.2f}",
        f"{course:.0f}",
        t.strftime("%d%m%y"),
        status,
    ]
    return f"*HQ,{device_id},V1,{','.join(fields)}#".encode()


def h02_heartbeat(*, device_id: str, battery: int) -> bytes:
    return f"*HQ,{device_id},HTBT,{battery}#".encode()


def h02_answer(*, device_id: str, kind: str, tst: float) -> bytes:
    """``V4,<command>,<time>``: the tracker confirms a command (e.g. S71)."""
    return f"*HQ,{device_id},V4,{kind},{_utc(tst).strftime('%Y%m%d%H%M%S')}#".encode()
