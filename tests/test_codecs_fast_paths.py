"""The decode path's fast paths against their references: the same value or the same error.

Each fast path (topic parse, JSON parse, the common fix) must agree with the general code on
every input, good or bad: generated inputs aim at the edges (types, bounds, encodings).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.ingest import codecs
from devices.ingest.codecs import DecodeError, Route, route_of
from devices.ingest.position import Position

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    """What a call did, comparable across paths: repr of the value, or the error's words."""
    try:
        return "value", repr(call(*args, **kwargs))
    except DecodeError as exc:
        return "decode_error", f"{exc.reason}|{exc.detail}"
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)


# ---- route_of -------------------------------------------------------------------------------


def reference_route_of(topic: str) -> Route:
    """route_of as it was: split first, then the native and OwnTracks shapes."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[:2] == ["homeward", "devices"] and parts[3] == "up" and parts[2]:
        return Route("native", parts[2])
    owntracks = len(parts) == 3 or (len(parts) == 4 and parts[3] == "event")
    if owntracks and parts[0] == "owntracks" and parts[1] and parts[2]:
        return Route("owntracks", f"{parts[1]}/{parts[2]}")
    raise DecodeError("unsupported_topic", f"not an uplink topic: {topic[:120]}")


SEGMENTS = st.sampled_from(["homeward", "devices", "up", "owntracks", "event", "", "b-1", "u"])


@FUZZ
@given(st.lists(SEGMENTS, min_size=0, max_size=6), st.sampled_from(["", "/", "//", "x"]))
def test_route_of_agrees_with_the_split_reference(segments: list[str], tail: str) -> None:
    topic = "/".join(segments) + tail
    assert outcome(route_of, topic) == outcome(reference_route_of, topic)


@pytest.mark.parametrize(
    "topic",
    [
        "homeward/devices/up",
        "homeward/devices//up",
        "homeward/devices/a/b/up",
        "homeward/devices/x/up/",
    ],
)
def test_route_of_native_edges(topic: str) -> None:
    assert outcome(route_of, topic) == outcome(reference_route_of, topic)
    assert outcome(route_of, topic)[0] == "decode_error"


# ---- JSON ----------------------------------------------------------------------------------


def reference_loads(payload: bytes) -> Any:
    """json.loads on bytes, with the codecs' NaN/Infinity refusal."""
    return json.loads(payload, parse_constant=codecs._reject_constant)


EDGE_PAYLOADS = [
    b'{"a":1}',
    b'{"a":1}\n',
    b'{"a":1} ',
    b' {"a":1}',
    b'{"a":1}x',
    b'{"a":1}{"b":2}',
    b'{"a":1,"a":2}',  # duplicate keys: the last wins
    b'{"a":NaN}',
    b'{"a":-Infinity}',
    b'{"a":1e999}',
    b'{"a":' + b"9" * 5000 + b"}",  # beyond int's digit limit
    b'{"a":' + b"9" * 4000 + b"}",
    b'{"a": x}',
    b'{"a": [x]}',
    b'{"a": ',
    b"{",
    b"{}",
    b'{"a":"\xff"}',  # not UTF-8
    b'{"a":"\xed\xa0\x80"}',  # a lone surrogate, let through by surrogatepass
    b'{"a":"\\ud800"}',
    b'{"\x00":1}',
    b"{\x00",
    b"{\x00}\x00",
    b'\xef\xbb\xbf{"a":1}',  # UTF-8 BOM
    '{"a":1}'.encode("utf-16"),
    '{"a":1}'.encode("utf-16-le"),
    '{"a":1}'.encode("utf-32-le"),
    '{"a":"\u00e9"}'.encode("utf-16-be"),
    b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}",  # deeper than the recursion limit
    b"[1]",
    b"1",
    b"",
    b"null",
]


@pytest.mark.parametrize("payload", EDGE_PAYLOADS)
def test_loads_edges_agree_with_json_loads(payload: bytes) -> None:
    assert outcome(codecs._loads, payload) == outcome(reference_loads, payload)


JSON_PIECES = st.sampled_from(
    [b"{", b"}", b"[", b"]", b'"a"', b'"b"', b":", b",", b" ", b"\n", b"1", b"-0.5", b"1e400",
     b"NaN", b"true", b"null", b"\xff", b"\x00", b"\xef\xbb\xbf", b"\\u00e9", b"x"]
)  # fmt: skip


@FUZZ
@given(st.lists(JSON_PIECES, max_size=12), st.binary(max_size=6))
def test_loads_agrees_with_json_loads(pieces: list[bytes], noise: bytes) -> None:
    for payload in (b"".join(pieces), b"{" + b"".join(pieces), b"{" + noise):
        assert outcome(codecs._loads, payload) == outcome(reference_loads, payload)


# ---- the common fix ------------------------------------------------------------------------

ODD_VALUES: list[Any] = [
    None, 0, 1, -1, 10, 80, 90, 91, -90, -91, 180, -181, 360, 361, 2000, 1_000_000,
    1_000_001, 4_102_444_800, 4_102_444_801, 10**400, True, False, 0.0, -0.0, 0.5, 30.5,
    -120.7, 99.6, 100.4, 1795400000.25, float("inf"), float("-inf"), float("nan"), 1e400,
    "12", " 30.5 ", "nan", "", "gps", "wifi", "cell", "glonass", "sos", "fall", "panic",
    "b-1", [], {}]  # fmt: skip
FIELD_VALUES = st.sampled_from(ODD_VALUES)
FIELDS = ["lat", "lon", "tst", "acc", "vel", "cog", "batt", "src", "alarm", "device_id"]
MISSING = object()


def fix_payload(values: list[Any]) -> dict[str, Any]:
    return {f: v for f, v in zip(FIELDS, values, strict=True) if v is not MISSING}


@FUZZ
@given(
    st.lists(st.one_of(FIELD_VALUES, st.just(MISSING)), min_size=10, max_size=10),
    st.booleans(),
    st.sampled_from([None, "gps"]),
)
def test_fix_agrees_with_the_checked_fix(values: list[Any], strings_ok: bool, src: Any) -> None:
    data = fix_payload(values)
    fast = outcome(codecs._location, data, strings_ok=strings_ok, src=src)
    assert fast == outcome(codecs._checked_fix, data, strings_ok=strings_ok, src=src)


VALID = {"lat": 30.5, "lon": 120.7, "tst": 1795400000, "acc": 10, "vel": 1.5, "cog": 90,
         "batt": 80, "src": "wifi", "alarm": "fall", "device_id": "b-1"}  # fmt: skip


BOUNDS = [-180, -90, 0, 90, 100, 180, 360, 2000, 1_000_000, 4_102_444_800]
EDGES = [x for b in BOUNDS for x in (b - 1, b, b + 1, math.nextafter(b, -math.inf), float(b),
         math.nextafter(b, math.inf))]  # fmt: skip


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("strings_ok", [False, True])
def test_fix_agrees_with_the_checked_fix_on_every_field_value(field: str, strings_ok: bool) -> None:
    # Every listed value and every bound's neighbours, in each field of a good fix.
    for value in [*ODD_VALUES, *EDGES, MISSING]:
        data = {f: v for f, v in (VALID | {field: value}).items() if v is not MISSING}
        fast = outcome(codecs._location, data, strings_ok=strings_ok, src=None)
        assert fast == outcome(codecs._checked_fix, data, strings_ok=strings_ok, src=None), value


@FUZZ
@given(
    st.dictionaries(st.sampled_from(FIELDS), st.one_of(FIELD_VALUES, st.just(MISSING)), max_size=3),
    st.booleans(),
    st.sampled_from([None, "gps"]),
)
def test_fix_agrees_with_the_checked_fix_one_field_off(
    changes: dict[str, Any], strings_ok: bool, src: Any
) -> None:
    # A good fix with a field or three changed: each field's rule meets the others passing.
    data = {f: v for f, v in (VALID | changes).items() if v is not MISSING}
    fast = outcome(codecs._location, data, strings_ok=strings_ok, src=src)
    assert fast == outcome(codecs._checked_fix, data, strings_ok=strings_ok, src=src)


@FUZZ
@given(
    st.lists(st.one_of(st.floats(), st.integers(-(10**20), 10**20)), min_size=7, max_size=7),
    st.booleans(),
)
def test_fix_agrees_with_the_checked_fix_on_any_number(
    numbers: list[Any], strings_ok: bool
) -> None:
    data = fix_payload([*numbers, "wifi", None, "b-1"])
    fast = outcome(codecs._location, data, strings_ok=strings_ok, src=None)
    assert fast == outcome(codecs._checked_fix, data, strings_ok=strings_ok, src=None)


@pytest.mark.parametrize(
    "data",
    [
        # The bench's and a bracelet's fix: fractional position and time, whole acc and batt.
        {"lat": 30.5, "lon": 120.7, "tst": 1795400000.25, "acc": 10, "batt": 80, "src": "gps"},
        # The OwnTracks app's: whole-second time, no source.
        {"lat": 30.5, "lon": 120.7, "tst": 1795400000, "acc": 12, "vel": 0, "batt": 55},
        {"lat": 30, "lon": 120, "tst": 1795400000, "alarm": "sos", "device_id": "b-1"},
    ],
)
def test_usual_fixes_take_the_fast_path(data: dict[str, Any]) -> None:
    fast = codecs._common_fix(data, None)
    assert fast is not None
    assert repr(fast) == repr(codecs._checked_fix(data, strings_ok=False, src=None))


def test_position_from_fix_puts_each_value_in_its_field() -> None:
    # from_fix builds positionally: a reordered field would swap values of one type silently.
    fix = codecs.Fix(1795400000.5, 30.25, 120.75, 8.0, "wifi", 3.5, 271.0, 64, "sos", "b-1")
    position = Position.from_fix(fix, device_id="b-1", elder_id=7, received_at=1795400001.5)
    assert (position.device_id, position.elder_id) == ("b-1", 7)
    assert position.fix_time.timestamp() == fix.tst and position.fix_time.tzinfo is UTC
    assert position.received_at == datetime.fromtimestamp(1795400001.5, UTC)
    assert (position.lat, position.lon, position.accuracy_m) == (fix.lat, fix.lon, fix.acc)
    assert (position.source, position.speed_kmh, position.course_deg) == ("wifi", 3.5, 271.0)
    assert (position.battery, position.alarm) == (64, "sos")
