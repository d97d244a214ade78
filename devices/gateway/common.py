"""What the gateway's decoders produce, and its mapping to the native uplink (pure).

Every protocol decodes a frame into a `Packet`: the protocol's own header (what a reply
needs) and typed messages. `to_native` turns a message into the native JSON document that
`devices.ingest.codecs.decode_native` accepts on ``homeward/devices/{id}/up``.

Accuracy rule (`gps_accuracy`): the trackers send no error estimate, so one is derived.
With an HDOP: ``max(5, 5 × HDOP)`` metres (a UERE of about 5 m), at most `CELL_ACC_M`.
Without one, by satellites used: ≥ 9 → 10 m, 7–8 → 15 m, 5–6 → 20 m, 4 → 30 m, fewer →
50 m (a weak fix); satellites unknown → 30 m. A fix the device marks invalid, or a cell/LBS
report, is `src` ``cell`` with ``acc`` `CELL_ACC_M` (never counted for zones); a report
without any coordinate becomes a ``status`` (it still carries battery and alarms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from devices.ingest.codecs import DecodeError

Protocol = Literal["gt06", "jt808", "watch", "h02"]
Alarm = Literal["sos", "fall", "removed", "low_battery"]
ALARM_PRIORITY: tuple[Alarm, ...] = ("sos", "fall", "removed", "low_battery")
Action = Literal["reportLocation", "setInterval"]

CELL_ACC_M = 2000.0  # an invalid fix (last known) or a cell-only report: at best a cell's size
DEFAULT_GPS_ACC_M = 30.0
KNOT_KMH = 1.852
MAX_TST = 4_102_444_800  # 2100-01-01, the native decoder's bound


@dataclass(frozen=True, slots=True)
class Cell:
    mcc: int
    mnc: int
    lac: int
    cid: int
    rssi: int | None = None


@dataclass(frozen=True, slots=True)
class Login:
    """The bracelet says who it is (GT06 0x01 IMEI)."""

    device_id: str


@dataclass(frozen=True, slots=True)
class Status:
    """Alive: a heartbeat, maybe with battery %, GSM signal and an alarm."""

    tst: float | None = None
    batt: int | None = None
    gsm: int | None = None
    alarm: Alarm | None = None


@dataclass(frozen=True, slots=True)
class Location:
    """A position with its time (UTC epoch seconds); ``valid`` is the device's own fix flag."""

    tst: float
    lat: float
    lon: float
    valid: bool
    satellites: int | None = None
    hdop: float | None = None
    speed_kmh: float | None = None
    course: float | None = None
    altitude: float | None = None
    batt: int | None = None
    gsm: int | None = None
    alarm: Alarm | None = None
    history: bool = False  # re-sent from the device's memory (blind-area / batch upload)


@dataclass(frozen=True, slots=True)
class CellFix:
    """A report with no trustworthy coordinate: cells only (or nothing) plus status."""

    tst: float | None
    cells: tuple[Cell, ...] = ()
    batt: int | None = None
    gsm: int | None = None
    alarm: Alarm | None = None
    history: bool = False


@dataclass(frozen=True, slots=True)
class Register:
    """JT/T 808 0x0100 terminal registration."""

    province: int
    city: int
    maker: str
    model: str
    terminal_id: str
    plate_color: int
    plate: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """JT/T 808 0x0102: the code the platform gave at registration."""

    code: str


@dataclass(frozen=True, slots=True)
class Command:
    """A platform → bracelet command (decoded from our own encoder's frames)."""

    action: Action
    seconds: int | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """An acknowledgement either way (platform ack, or a device's answer to a command)."""

    kind: str
    answers: str = ""  # the answered message id / type
    serial: int | None = None
    result: int | None = None
    text: str = ""


@dataclass(frozen=True, slots=True)
class Other:
    """Well-formed but nothing for the uplink (ICCID, heart rate, time request, fragment...)."""

    kind: str
    text: str = ""


Message = Login | Status | Location | CellFix | Register | Authenticate | Command | Reply | Other


@dataclass(frozen=True, slots=True)
class Gt06Header:
    proto: int
    serial: int
    extended: bool = False


@dataclass(frozen=True, slots=True)
class Jt808Header:
    msg_id: int
    properties: int
    version: int | None  # None: the 2013 header; else the 2019 protocol version byte
    phone: str  # the BCD digits as sent (12 for 2013, 20 for 2019)
    serial: int
    packet_total: int | None = None
    packet_no: int | None = None

    @property
    def body_length(self) -> int:
        return self.properties & 0x3FF

    @property
    def fragment(self) -> bool:
        return bool(self.properties & 0x2000)


@dataclass(frozen=True, slots=True)
class WatchHeader:
    vendor: str
    device_id: str
    index: str | None
    kind: str


@dataclass(frozen=True, slots=True)
class H02Header:
    vendor: str
    device_id: str
    kind: str


Header = Gt06Header | Jt808Header | WatchHeader | H02Header


@dataclass(frozen=True, slots=True)
class Packet:
    """A decoded frame: the protocol's header and its messages."""

    protocol: Protocol
    header: Header
    messages: tuple[Message, ...]

    @property
    def device_id(self) -> str | None:
        """The id the frame names; GT06 names it only in its login (the connection knows)."""
        if isinstance(self.header, Jt808Header):
            return device_id_of_phone(self.header.phone)
        if isinstance(self.header, WatchHeader | H02Header):
            return self.header.device_id
        for message in self.messages:
            if isinstance(message, Login):
                return message.device_id
        return None


def device_id_of_phone(digits: str) -> str:
    """A JT/T 808 terminal phone: the 2019 header's 20 digits keep a 12-digit id stable."""
    if len(digits) > 12 and set(digits[:-12]) <= {"0"}:
        return digits[-12:]
    return digits


def pick_alarm(*alarms: Alarm | None) -> Alarm | None:
    """The most urgent of several alarms (SOS first)."""
    present = {a for a in alarms if a is not None}
    return next((a for a in ALARM_PRIORITY if a in present), None)


def utc_epoch(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    """Epoch seconds of a UTC date; a field out of range is a DecodeError."""
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise DecodeError(
            "bad_time",
            f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d} is no time",
        ) from None
    return moment.timestamp()


def check_coordinate(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise DecodeError("bad_coordinate", f"lat={lat} lon={lon} is outside WGS-84")


def gps_accuracy(satellites: int | None, hdop: float | None) -> float:
    """Estimated horizontal accuracy (m) of a valid satellite fix: see the module docstring."""
    if hdop is not None and math.isfinite(hdop) and hdop > 0:
        return min(CELL_ACC_M, max(5.0, round(hdop * 5.0, 1)))
    if satellites is None:
        return DEFAULT_GPS_ACC_M
    if satellites >= 9:
        return 10.0
    if satellites >= 7:
        return 15.0
    if satellites >= 5:
        return 20.0
    if satellites >= 4:
        return 30.0
    return 50.0


def battery_percent(value: int | None) -> int | None:
    if value is None or value < 0:
        return None
    return min(100, value)


def _status(tst: float | None, batt: int | None, alarm: Alarm | None) -> dict[str, Any]:
    out: dict[str, Any] = {"_type": "status"}
    if tst is not None and 0 <= tst <= MAX_TST:
        out["tst"] = int(tst)
    if (b := battery_percent(batt)) is not None:
        out["batt"] = b
    if alarm is not None:
        out["alarm"] = alarm
    return out


def to_native(message: Message) -> dict[str, Any] | None:
    """The native uplink for a message; None for messages that are not about the wearer."""
    if isinstance(message, Status | CellFix):
        return _status(message.tst, message.batt, message.alarm)
    if not isinstance(message, Location):
        return None
    finite = math.isfinite(message.lat) and math.isfinite(message.lon)
    lat = round(message.lat, 7) if finite else 0.0
    lon = round(message.lon, 7) if finite else 0.0
    usable = (
        -90 <= lat <= 90
        and -180 <= lon <= 180
        and not (lat == 0 and lon == 0)
        and 0 <= message.tst <= MAX_TST
    )
    if not usable:
        return _status(message.tst, message.batt, message.alarm)
    out: dict[str, Any] = {"_type": "location", "lat": lat, "lon": lon, "tst": int(message.tst)}
    if message.valid:
        out["src"] = "gps"
        out["acc"] = gps_accuracy(message.satellites, message.hdop)
    else:
        out["src"] = "cell"
        out["acc"] = CELL_ACC_M
    speed = message.speed_kmh
    if speed is not None and math.isfinite(speed) and 0 <= speed <= 2000:
        out["vel"] = round(speed, 1)
    course = message.course
    if course is not None and math.isfinite(course) and 0 <= course <= 360:
        out["cog"] = round(course, 1)
    if (b := battery_percent(message.batt)) is not None:
        out["batt"] = b
    if message.alarm is not None:
        out["alarm"] = message.alarm
    return out


class Reader:
    """Big-endian reads over a frame body; running short is a DecodeError, never IndexError."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise DecodeError("truncated", f"needs {size} bytes at {self.pos}, has {self.left}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def rest(self) -> bytes:
        return self.take(self.left)
