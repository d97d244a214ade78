"""The bracelet-side encoders round-trip through the gateway's own framers and decoders and
map to the native uplink the ingest accepts."""

from __future__ import annotations

import json

import pytest

from devices.gateway import device_side as dev
from devices.gateway import gt06, jt808
from devices.gateway.common import (
    Authenticate,
    Location,
    Login,
    Packet,
    Register,
    Reply,
    Status,
    to_native,
)
from devices.gateway.framing import Frame
from devices.ingest.codecs import decode_native
from locator.gateway.protocols import ADAPTERS

TST = 1_780_000_000.0  # 2026-05-28, a whole second
LAT, LON = 30.5112, 120.6853
IMEI, PHONE, WATCH_ID, H02_ID = "359710040000042", "013912345678", "8800000042", "4210000042"


def through(protocol: str, data: bytes) -> Packet:
    """Frame (split in two reads, as TCP may) and decode, as the gateway does."""
    framer = ADAPTERS[protocol].framer()
    events = list(framer.feed(data[:5])) + list(framer.feed(data[5:]))
    frames = [e for e in events if isinstance(e, Frame)]
    assert len(frames) == 1 and len(events) == 1, events
    return ADAPTERS[protocol].decode(frames[0].data)


def assert_fix(packet: Packet, *, alarm: str | None = None) -> None:
    (message,) = packet.messages
    assert isinstance(message, Location) and message.valid
    assert (message.tst, message.alarm) == (TST, alarm)
    assert abs(message.lat - LAT) < 1e-5 and abs(message.lon - LON) < 1e-5
    native = to_native(message)
    assert native is not None and native["src"] == "gps" and native["tst"] == int(TST)
    decoded = decode_native(json.dumps(native).encode())  # what the gateway publishes
    assert decoded.tst == int(TST)  # type: ignore[union-attr]


def test_gt06_login_heartbeat_fix_alarm_and_answer() -> None:
    login = through("gt06", dev.gt06_login(imei=IMEI, serial=1))
    assert login.messages == (Login(IMEI),) and login.device_id == IMEI
    beat = through("gt06", dev.gt06_heartbeat(serial=2, battery=50))
    assert beat.messages == (Status(batt=50, gsm=4, alarm=None),)
    assert gt06.reply(beat) is not None  # the heartbeat is acknowledged
    fix = through("gt06", dev.gt06_location(tst=TST, lat=LAT, lon=LON, serial=3, speed_kmh=4))
    assert_fix(fix)
    assert gt06.reply(fix) is None  # 0x12 needs no ack
    sos = through("gt06", dev.gt06_location(tst=TST, lat=LAT, lon=LON, serial=4, alarm="sos"))
    assert_fix(sos, alarm="sos")
    assert gt06.reply(sos) is not None
    answer = through("gt06", dev.gt06_answer(text="TIMER=15 OK", serial=5))
    assert answer.messages == (Reply("command_reply", text="TIMER=15 OK"),)
    with pytest.raises(ValueError, match="15 digits"):
        dev.gt06_login(imei="12345", serial=1)


def test_jt808_register_auth_fix_query_answer_and_response() -> None:
    reg = through("jt808", dev.jt808_register(phone=PHONE, serial=1))
    assert isinstance(reg.messages[0], Register) and reg.device_id == PHONE
    auth = through("jt808", dev.jt808_auth(phone=PHONE, code="abc123", serial=2))
    assert auth.messages == (Authenticate("abc123"),)
    fix = through("jt808", dev.jt808_location(phone=PHONE, tst=TST, lat=LAT, lon=LON, serial=3))
    assert_fix(fix)
    low = dev.jt808_location(phone=PHONE, tst=TST, lat=LAT, lon=LON, serial=4, alarm="sos")
    assert_fix(through("jt808", low), alarm="sos")
    query = dev.jt808_location_answer(phone=PHONE, answered=7, tst=TST, lat=LAT, lon=LON, serial=5)
    assert_fix(through("jt808", query))
    resp = through(
        "jt808", dev.jt808_response(phone=PHONE, answered=9, msg_id=jt808.SET_PARAMS, serial=6)
    )
    (reply,) = resp.messages
    assert isinstance(reply, Reply) and (reply.answers, reply.result) == ("0x8103", 0)
    beat = through("jt808", dev.jt808_heartbeat(phone=PHONE, serial=7))
    assert jt808.reply(beat, serial=1, auth_code="") is not None


def test_watch_link_fix_alarm_and_answer() -> None:
    link = through("watch", dev.watch_link(device_id=WATCH_ID, battery=76))
    assert link.messages == (Status(batt=76),) and link.device_id == WATCH_ID
    assert_fix(through("watch", dev.watch_location(device_id=WATCH_ID, tst=TST, lat=LAT, lon=LON)))
    fall = dev.watch_location(device_id=WATCH_ID, tst=TST, lat=LAT, lon=LON, alarm="fall")
    assert_fix(through("watch", fall), alarm="fall")
    answer = through("watch", dev.watch_answer(device_id=WATCH_ID, kind="UPLOAD"))
    assert answer.messages == (Reply("command_reply", "UPLOAD"),)


def test_h02_fix_sos_heartbeat_and_answer() -> None:
    fix = through("h02", dev.h02_location(device_id=H02_ID, tst=TST, lat=LAT, lon=LON))
    assert_fix(fix)
    assert fix.device_id == H02_ID
    sos = dev.h02_location(device_id=H02_ID, tst=TST, lat=LAT, lon=LON, alarm="sos")
    assert_fix(through("h02", sos), alarm="sos")
    beat = through("h02", dev.h02_heartbeat(device_id=H02_ID, battery=60))
    assert beat.messages == (Status(batt=60),)
    answer = through("h02", dev.h02_answer(device_id=H02_ID, kind="S71", tst=TST))
    (reply,) = answer.messages
    assert isinstance(reply, Reply) and reply.answers == "S71"


def test_southern_and_western_fixes_keep_their_signs() -> None:
    lat, lon = -33.8688, -70.6693
    for protocol, data in (
        ("gt06", dev.gt06_location(tst=TST, lat=lat, lon=lon, serial=1)),
        ("jt808", dev.jt808_location(phone=PHONE, tst=TST, lat=lat, lon=lon, serial=1)),
        ("watch", dev.watch_location(device_id=WATCH_ID, tst=TST, lat=lat, lon=lon)),
        ("h02", dev.h02_location(device_id=H02_ID, tst=TST, lat=lat, lon=lon)),
    ):
        (message,) = through(protocol, data).messages
        assert isinstance(message, Location), protocol
        assert abs(message.lat - lat) < 1e-5 and abs(message.lon - lon) < 1e-5, protocol


def test_an_untrusted_fix_becomes_a_cell_accuracy_uplink_in_every_protocol() -> None:
    for protocol, data in (
        ("gt06", dev.gt06_location(tst=TST, lat=LAT, lon=LON, serial=1, valid=False)),
        (
            "jt808",
            dev.jt808_location(phone=PHONE, tst=TST, lat=LAT, lon=LON, serial=1, valid=False),
        ),
        ("watch", dev.watch_location(device_id=WATCH_ID, tst=TST, lat=LAT, lon=LON, valid=False)),
        ("h02", dev.h02_location(device_id=H02_ID, tst=TST, lat=LAT, lon=LON, valid=False)),
    ):
        (message,) = through(protocol, data).messages
        native = to_native(message)
        assert native is not None and native["src"] == "cell", (protocol, native)
