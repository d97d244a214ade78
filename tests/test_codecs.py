"""Codecs per format, without infrastructure: native, OwnTracks (real app payloads), errors."""

from __future__ import annotations

import json

import pytest

from devices.ingest.codecs import (
    DecodeError,
    Fix,
    Heartbeat,
    Ignored,
    LastWill,
    Route,
    check_fix_time,
    decode,
    decode_native,
    decode_owntracks,
    is_low_quality,
    route_of,
)


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_routes_of_both_uplink_topics() -> None:
    assert route_of("homeward/devices/b-1/up") == Route("native", "b-1")
    assert route_of("owntracks/li/phone") == Route("owntracks", "li/phone")
    assert route_of("owntracks/li/phone/event") == Route("owntracks", "li/phone")
    for topic in (
        "homeward/devices//up",
        "homeward/devices/b-1/cmd",
        "owntracks/li",
        "owntracks/li/phone/info",
        "x",
    ):
        with pytest.raises(DecodeError) as err:
            route_of(topic)
        assert err.value.reason == "unsupported_topic"


def test_native_location_of_the_brief() -> None:
    fix = decode_native(
        raw(
            {
                "_type": "location",
                "lat": 30.5112,
                "lon": 120.6853,
                "tst": 1795400000,
                "acc": 8,
                "batt": 76,
                "vel": 3,
                "cog": 90,
                "src": "gps",
            }
        )
    )
    assert fix == Fix(
        tst=1795400000.0,
        lat=30.5112,
        lon=120.6853,
        acc=8.0,
        src="gps",
        vel=3.0,
        cog=90.0,
        batt=76,
        alarm=None,
    )


def test_native_alarm_and_heartbeat() -> None:
    sos = decode_native(
        raw(
            {
                "_type": "location",
                "lat": 30.5,
                "lon": 120.6,
                "tst": 1,
                "alarm": "sos",
                "src": "wifi",
            }
        )
    )
    assert isinstance(sos, Fix) and sos.alarm == "sos" and sos.src == "wifi" and sos.acc is None
    beat = decode_native(raw({"_type": "status", "tst": 1795400000, "batt": 19}))
    assert beat == Heartbeat(tst=1795400000.0, batt=19, alarm=None)


# Payloads as the OwnTracks apps publish them (booklet examples and captured traffic).
OWNTRACKS_ANDROID = {
    "_type": "location",
    "acc": 10,
    "alt": 15,
    "batt": 94,
    "bs": 1,
    "conn": "w",
    "created_at": 1597236722,
    "lat": 52.5163,
    "lon": 13.3777,
    "m": 1,
    "t": "u",
    "tid": "jj",
    "tst": 1597236721,
    "vac": 3,
    "vel": 0,
    "BSSID": "b0:f2:8:45:94:33",
    "SSID": "Home",
    "inregions": ["home"],
    "topic": "owntracks/jane/phone",
}
OWNTRACKS_IOS_STRINGS = {
    "_type": "location",
    "lat": "30.5112",
    "lon": "120.6853",
    "tst": "1795400000",
    "acc": "12.5",
    "batt": "55",
    "vel": "4",
    "cog": "270",
    "tid": "ma",
}
OWNTRACKS_MINIMAL = {"_type": "location", "lat": 30.5, "lon": 120.6, "tst": 1795400000, "tid": "ab"}
OWNTRACKS_TRANSITION = {
    "_type": "transition",
    "wtst": 1460291488,
    "lat": 52.5163,
    "lon": 13.3777,
    "tst": 1460291499,
    "acc": 55.0,
    "tid": "jj",
    "event": "enter",
    "desc": "Home",
    "t": "c",
}


def test_owntracks_android_location_with_extras() -> None:
    fix = decode_owntracks(raw(OWNTRACKS_ANDROID), topic="owntracks/jane/phone")
    assert isinstance(fix, Fix)
    assert (fix.lat, fix.lon, fix.acc, fix.batt, fix.vel, fix.src) == (
        52.5163,
        13.3777,
        10.0,
        94,
        0.0,
        "gps",
    )


def test_owntracks_string_numbers_and_float_accuracy() -> None:
    fix = decode_owntracks(raw(OWNTRACKS_IOS_STRINGS), topic="owntracks/ma/iphone")
    assert isinstance(fix, Fix)
    assert (fix.lat, fix.lon, fix.tst, fix.acc, fix.batt, fix.cog) == (
        30.5112,
        120.6853,
        1795400000.0,
        12.5,
        55,
        270.0,
    )


def test_owntracks_missing_optional_fields() -> None:
    fix = decode_owntracks(raw(OWNTRACKS_MINIMAL), topic="owntracks/a/b")
    assert isinstance(fix, Fix)
    assert (fix.acc, fix.batt, fix.vel, fix.cog) == (None, None, None, None)
    assert is_low_quality(fix)  # no claimed accuracy: shown, never counted for zones


def test_owntracks_transition_lwt_and_ignored_types() -> None:
    fix = decode_owntracks(raw(OWNTRACKS_TRANSITION), topic="owntracks/jane/phone")
    assert isinstance(fix, Fix) and fix.tst == 1460291499.0 and fix.acc == 55.0
    assert decode_owntracks(
        raw({"_type": "lwt", "tst": 1462979420}), topic="owntracks/a/b"
    ) == LastWill(tst=1462979420.0)
    assert decode_owntracks(
        raw({"_type": "waypoint", "desc": "Home"}), topic="owntracks/a/b"
    ) == Ignored("waypoint")


def test_owntracks_payload_naming_another_topic_is_spoofing() -> None:
    with pytest.raises(DecodeError) as err:
        decode_owntracks(raw(OWNTRACKS_ANDROID), topic="owntracks/mallory/phone")
    assert err.value.reason == "spoofed"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1,2,3]", "not_an_object"),
        (b'"hello"', "not_an_object"),
        (b"x" * 5000, "oversized"),
        (raw({"lat": 1, "lon": 1, "tst": 1}), "missing_field"),
        (raw({"_type": "photo"}), "unknown_type"),
        (raw({"_type": "location", "lon": 1, "tst": 1}), "missing_field"),
        (raw({"_type": "location", "lat": "30", "lon": 1, "tst": 1}), "wrong_type"),
        (raw({"_type": "location", "lat": True, "lon": 1, "tst": 1}), "wrong_type"),
        (raw({"_type": "location", "lat": 91, "lon": 1, "tst": 1}), "out_of_range"),
        (raw({"_type": "location", "lat": 1, "lon": -181, "tst": 1}), "out_of_range"),
        (b'{"_type":"location","lat":NaN,"lon":1,"tst":1}', "not_finite"),
        (b'{"_type":"location","lat":1,"lon":Infinity,"tst":1}', "not_finite"),
        (b'{"_type":"location","lat":1e999,"lon":1,"tst":1}', "not_finite"),
        (raw({"_type": "location", "lat": 0, "lon": 0, "tst": 1}), "null_island"),
        (
            raw({"_type": "location", "lat": 1, "lon": 1, "tst": 1, "src": "glonass"}),
            "out_of_range",
        ),
        (
            raw({"_type": "location", "lat": 1, "lon": 1, "tst": 1, "alarm": "panic"}),
            "out_of_range",
        ),
        (raw({"_type": "location", "lat": 1, "lon": 1, "tst": 1, "batt": 140}), "out_of_range"),
        (raw({"_type": "location", "lat": 1, "lon": 1, "tst": -5}), "out_of_range"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
    ],
)
def test_native_rejections_name_their_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(Route("native", "b-1"), payload, topic="homeward/devices/b-1/up")
    assert err.value.reason == reason


def test_owntracks_encrypted_is_refused_with_a_reason() -> None:
    with pytest.raises(DecodeError) as err:
        decode_owntracks(raw({"_type": "encrypted", "data": "abc"}), topic="owntracks/a/b")
    assert err.value.reason == "encrypted"


def test_future_fix_beyond_clock_skew() -> None:
    check_fix_time(1000.0 + 299, received_at=1000.0)
    with pytest.raises(DecodeError) as err:
        check_fix_time(1000.0 + 301, received_at=1000.0)
    assert err.value.reason == "future_fix"


def test_low_quality_rules() -> None:
    base = Fix(tst=1, lat=1, lon=1, acc=30, src="gps", vel=None, cog=None, batt=None, alarm=None)
    assert not is_low_quality(base)
    assert is_low_quality(Fix(1, 1, 1, 150, "gps", None, None, None, None))
    assert is_low_quality(Fix(1, 1, 1, 30, "cell", None, None, None, None))


def test_a_huge_integer_is_out_of_range_not_a_crash() -> None:
    with pytest.raises(DecodeError) as err:
        decode_native(b'{"_type":"location","lat":1' + b"0" * 400 + b',"lon":1,"tst":1}')
    assert err.value.reason == "out_of_range"


def test_an_unusable_fix_with_an_alarm_salvages_the_alarm() -> None:
    with pytest.raises(DecodeError) as err:
        decode_native(
            raw({"_type": "location", "lat": 0, "lon": 0, "tst": 1, "alarm": "sos", "batt": 40})
        )
    assert err.value.reason == "null_island"
    assert err.value.salvage == Heartbeat(tst=None, batt=40, alarm="sos")
    with pytest.raises(DecodeError) as plain:
        decode_native(raw({"_type": "location", "lat": 0, "lon": 0, "tst": 1}))
    assert plain.value.salvage is None
