"""Uplink codecs (pure): MQTT topic + payload bytes → a typed uplink, or a DecodeError.

Two formats share OwnTracks field names and units: the native JSON on
``homeward/devices/{device_id}/up`` and the OwnTracks app's own JSON on
``owntracks/{user}/{device}``. No I/O and no clock here: the caller passes the receive time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

MAX_PAYLOAD_BYTES = 4096
FUTURE_TOLERANCE_S = 300.0
SOURCES = frozenset({"gps", "wifi", "cell"})
ALARMS = frozenset({"sos", "fall", "removed", "low_battery"})
# OwnTracks message types that are not about where the wearer is: acknowledged and skipped.
OWNTRACKS_IGNORED = frozenset(
    {"waypoint", "waypoints", "card", "cmd", "beacon", "steps", "configuration", "status"}
)

Protocol = Literal["native", "owntracks"]
# Registered protocols whose uplinks arrive as native JSON on homeward/devices/{id}/up: our
# own bracelets, and the TCP trackers `homeward gateway` republishes under their own ids.
NATIVE_TOPIC_PROTOCOLS = frozenset({"native", "gt06", "jt808", "watch", "h02"})


class DecodeError(ValueError):
    """A rejected uplink; ``reason`` is a stable metric label, ``detail`` is for humans.

    ``salvage`` is the alarm a rejected fix carried: an SOS pressed indoors comes with a
    0,0 fix, and the alarm must still go out even though the position cannot be used.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.salvage: Heartbeat | None = None


class Route(NamedTuple):
    """Which registered device a topic speaks for: a device id (native) or an external id.

    A tuple, not a dataclass: it keys the throttle's and the device cache's dicts several
    times per message, and a tuple hashes and compares in C.
    """

    protocol: Protocol
    ref: str


@dataclass(frozen=True, slots=True)
class Fix:
    """A decoded location, not yet attributed to a device and elder."""

    tst: float
    lat: float
    lon: float
    acc: float | None
    src: str
    vel: float | None
    cog: float | None
    batt: int | None
    alarm: str | None
    named_device: str | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A status message: the device is alive; maybe a battery level or an alarm."""

    tst: float | None
    batt: int | None
    alarm: str | None
    named_device: str | None = None


@dataclass(frozen=True, slots=True)
class LastWill:
    """OwnTracks' `lwt`: the broker says the phone's connection died."""

    tst: float | None


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed message that carries nothing for us (e.g. an OwnTracks waypoint)."""

    kind: str


Uplink = Fix | Heartbeat | LastWill | Ignored


def route_of(topic: str) -> Route:
    """The device a topic belongs to; raises for a topic we do not ingest."""
    # The native topic, nearly every message: string tests instead of a split and a list.
    if topic.startswith("homeward/devices/") and topic.endswith("/up"):
        ref = topic[17:-3]
        if ref and "/" not in ref:
            return Route("native", ref)
    parts = topic.split("/")
    # OwnTracks publishes locations on owntracks/user/device and transitions on .../event.
    owntracks = len(parts) == 3 or (len(parts) == 4 and parts[3] == "event")
    if owntracks and parts[0] == "owntracks" and parts[1] and parts[2]:
        return Route("owntracks", f"{parts[1]}/{parts[2]}")
    raise DecodeError("unsupported_topic", f"not an uplink topic: {topic[:120]}")


def _reject_constant(name: str) -> float:
    raise DecodeError("not_finite", f"{name} is not a number")


# One decoder for every payload: json.loads(..., parse_constant=...) builds a decoder and its
# scanner on every call, which cost as much as the parse of a fix itself.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# The decoder's own scanner (not in typeshed): what _DECODER.decode runs after its checks.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _loads(payload: bytes) -> Any:
    """``json.loads(payload)`` with our decoder: the same value or the same exception."""
    # A payload opening with '{' then a non-NUL byte is UTF-8 to json.detect_encoding (a BOM
    # or UTF-16/32 starts otherwise): skip the sniffing, and when the object ends the text,
    # decode()'s whitespace and trailing-data checks too. Anything else takes the full path,
    # which raises what json.loads would (the scanner's bare StopIteration included: decode
    # turns it into "Expecting value").
    if payload[:1] == b"{" and payload[1:2] != b"\0":
        text = payload.decode("utf-8", "surrogatepass")
        try:
            data, end = _SCAN(text, 0)
        except StopIteration:
            return _DECODER.decode(text)
        if end == len(text):
            return data
    else:
        text = payload.decode(json.detect_encoding(payload), "surrogatepass")
    return _DECODER.decode(text)


def parse_json(payload: bytes) -> dict[str, Any]:
    """A JSON object from a payload; NaN/Infinity, non-objects and oversize are errors."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DecodeError("oversized", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        data = _loads(payload)
    except DecodeError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError("invalid_json", str(exc)[:200]) from None
    if not isinstance(data, dict):
        raise DecodeError("not_an_object", f"payload is a JSON {type(data).__name__}")
    return data


def _number(
    data: dict[str, Any],
    field: str,
    *,
    required: bool,
    lo: float,
    hi: float,
    strings_ok: bool,
) -> float | None:
    value = data.get(field)
    if type(value) is float:  # what a JSON number with a fraction decodes to: the usual case
        number: float = value
    else:
        slow = _slow_number(value, field, required=required, strings_ok=strings_ok)
        if slow is None:
            return None
        number = slow
    if not math.isfinite(number):
        raise DecodeError("not_finite", f"{field} is not finite")
    if not lo <= number <= hi:
        raise DecodeError("out_of_range", f"{field}={number:g} outside [{lo:g}, {hi:g}]")
    return number


def _slow_number(value: Any, field: str, *, required: bool, strings_ok: bool) -> float | None:
    if value is None:
        if required:
            raise DecodeError("missing_field", f"{field} is required")
        return None
    if isinstance(value, bool):
        raise DecodeError("wrong_type", f"{field} must be a number, not a boolean")
    if isinstance(value, str) and strings_ok:
        try:
            value = float(value.strip())
        except ValueError:
            raise DecodeError("wrong_type", f"{field} must be a number") from None
    if not isinstance(value, int | float):
        raise DecodeError("wrong_type", f"{field} must be a number")
    try:
        return float(value)
    except OverflowError:
        raise DecodeError("out_of_range", f"{field} is too large") from None


def _text(data: dict[str, Any], field: str, allowed: frozenset[str] | None) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError("wrong_type", f"{field} must be a string")
    if allowed is not None and value not in allowed:
        raise DecodeError("out_of_range", f"{field}={value[:40]!r} not one of {sorted(allowed)}")
    return value


def _battery(data: dict[str, Any], strings_ok: bool) -> int | None:
    batt = _number(data, "batt", required=False, lo=0, hi=BATT_MAX, strings_ok=strings_ok)
    return None if batt is None else round(batt)


def _location(data: dict[str, Any], *, strings_ok: bool, src: str | None) -> Fix:
    """A fix; if the fix is unusable but carries an alarm, the error salvages the alarm."""
    fix = _common_fix(data, src)
    if fix is not None:
        return fix
    try:
        return _checked_fix(data, strings_ok=strings_ok, src=src)
    except DecodeError as exc:
        exc.salvage = _alarm_only(data, strings_ok)
        raise


def _alarm_only(data: dict[str, Any], strings_ok: bool) -> Heartbeat | None:
    alarm = data.get("alarm")
    if not isinstance(alarm, str) or alarm not in ALARMS:
        return None
    try:
        batt = _battery(data, strings_ok)
    except DecodeError:
        batt = None
    return Heartbeat(tst=None, batt=batt, alarm=alarm)


# The bounds of a fix's numbers, for both paths below.
LAT_MAX = 90
LON_MAX = 180
TST_MAX = 4_102_444_800  # 2100-01-01
ACC_MAX = 1_000_000
VEL_MAX = 2000
COG_MAX = 360
BATT_MAX = 100
_NUMBER_TYPES = (float, int)  # exact types: a bool, an int subclass, is not a number here


def _common_fix(data: dict[str, Any], src: str | None) -> Fix | None:
    """The fix nearly every bracelet sends (numbers as JSON numbers in range, known words),
    tested in one expression instead of a call per field; None for anything else, which
    ``_checked_fix`` then rejects with its reason, or accepts as the same Fix."""
    get: Callable[[str], Any] = data.get  # values of any JSON type: tested below
    lat, lon, tst, acc = get("lat"), get("lon"), get("tst"), get("acc")
    vel, cog, batt, alarm = get("vel"), get("cog"), get("batt"), get("alarm")
    named, given_src = get("device_id"), src or get("src")
    numbers = _NUMBER_TYPES
    # The chained comparisons also refuse NaN and the infinities (a huge exponent's value).
    if not (
        type(lat) in numbers
        and -LAT_MAX <= lat <= LAT_MAX
        and type(lon) in numbers
        and -LON_MAX <= lon <= LON_MAX
        and (lat != 0 or lon != 0)  # null island: the checked path names it
        and type(tst) in numbers
        and 0 <= tst <= TST_MAX
        and (acc is None or (type(acc) in numbers and 0 <= acc <= ACC_MAX))
        and (vel is None or (type(vel) in numbers and 0 <= vel <= VEL_MAX))
        and (cog is None or (type(cog) in numbers and 0 <= cog <= COG_MAX))
        and (batt is None or (type(batt) in numbers and 0 <= batt <= BATT_MAX))
        and (given_src is None or (type(given_src) is str and given_src in SOURCES))
        and (alarm is None or (type(alarm) is str and alarm in ALARMS))
        and (named is None or type(named) is str)
    ):
        return None
    # Bounds are small integers, so an int in them converts to float exactly, as it does
    # (then is bounded) in the checked path; a float is returned as is there too.
    return Fix(
        tst if type(tst) is float else float(tst),
        lat if type(lat) is float else float(lat),
        lon if type(lon) is float else float(lon),
        None if acc is None else float(acc),
        given_src or "gps",
        None if vel is None else float(vel),
        None if cog is None else float(cog),
        None if batt is None else round(batt),
        alarm,
        named,
    )


def _checked_fix(data: dict[str, Any], *, strings_ok: bool, src: str | None) -> Fix:
    """A fix field by field: each error with its field and reason, strings parsed if allowed."""
    lat = _number(data, "lat", required=True, lo=-LAT_MAX, hi=LAT_MAX, strings_ok=strings_ok)
    lon = _number(data, "lon", required=True, lo=-LON_MAX, hi=LON_MAX, strings_ok=strings_ok)
    tst = _number(data, "tst", required=True, lo=0, hi=TST_MAX, strings_ok=strings_ok)
    assert lat is not None and lon is not None and tst is not None
    if lat == 0.0 and lon == 0.0:
        raise DecodeError("null_island", "lat and lon are both 0 (no fix)")
    return Fix(
        tst=tst,
        lat=lat,
        lon=lon,
        acc=_number(data, "acc", required=False, lo=0, hi=ACC_MAX, strings_ok=strings_ok),
        src=src or _text(data, "src", SOURCES) or "gps",
        vel=_number(data, "vel", required=False, lo=0, hi=VEL_MAX, strings_ok=strings_ok),
        cog=_number(data, "cog", required=False, lo=0, hi=COG_MAX, strings_ok=strings_ok),
        batt=_battery(data, strings_ok),
        alarm=_text(data, "alarm", ALARMS),
        named_device=_text(data, "device_id", None),
    )


def decode_native(payload: bytes) -> Uplink:
    """The native bracelet format: `location` and `status` (heartbeat)."""
    data = parse_json(payload)
    kind = data.get("_type")
    if kind == "location":
        return _location(data, strings_ok=False, src=None)
    if kind == "status":
        return Heartbeat(
            tst=_number(data, "tst", required=False, lo=0, hi=4_102_444_800, strings_ok=False),
            batt=_battery(data, False),
            alarm=_text(data, "alarm", ALARMS),
            named_device=_text(data, "device_id", None),
        )
    if kind is None:
        raise DecodeError("missing_field", "_type is required")
    raise DecodeError("unknown_type", f"_type={str(kind)[:40]!r} is not location or status")


def decode_owntracks(payload: bytes, *, topic: str) -> Uplink:
    """The OwnTracks app's JSON: `location`, `transition`, `lwt`; numbers may be strings."""
    data = parse_json(payload)
    kind = data.get("_type")
    # In HTTP mode and in some versions the app repeats its topic; a different one is a lie.
    named_topic = data.get("topic")
    if isinstance(named_topic, str) and named_topic and named_topic != topic:
        raise DecodeError("spoofed", f"payload names topic {named_topic[:80]!r}, sent on {topic}")
    if kind in ("location", "transition"):
        # A phone's fix is fused GPS/Wi-Fi/cell; trust its claimed accuracy, not a source.
        return _location(data, strings_ok=True, src="gps")
    if kind == "lwt":
        return LastWill(
            tst=_number(data, "tst", required=False, lo=0, hi=4_102_444_800, strings_ok=True)
        )
    if kind == "encrypted":
        raise DecodeError("encrypted", "OwnTracks payload encryption is not supported")
    if isinstance(kind, str) and kind in OWNTRACKS_IGNORED:
        return Ignored(kind)
    if kind is None:
        raise DecodeError("missing_field", "_type is required")
    raise DecodeError("unknown_type", f"_type={str(kind)[:40]!r} is not an OwnTracks type")


def decode(route: Route, payload: bytes, *, topic: str) -> Uplink:
    """Decode a payload by the protocol its topic implies."""
    if route.protocol == "native":
        return decode_native(payload)
    return decode_owntracks(payload, topic=topic)


def check_fix_time(tst: float, *, received_at: float) -> None:
    """A fix from the future (beyond clock skew) never happened yet."""
    if tst > received_at + FUTURE_TOLERANCE_S:
        raise DecodeError("future_fix", f"fix time is {tst - received_at:.0f} s in the future")


def is_low_quality(fix: Fix, *, max_accuracy_m: float = 100.0) -> bool:
    """Cell-only, unknown or > 100 m accuracy: stored and shown, never counted for zones."""
    return fix.src == "cell" or fix.acc is None or fix.acc > max_accuracy_m
