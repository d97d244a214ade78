"""Gateway codecs without a network: published frames, checksums, replies, commands, fuzz.

Frames marked "Traccar" come from traccar/traccar's src/test/java/org/traccar/protocol
tests (the file is named beside each frame); where Traccar's test states the decoded
position it is checked to its precision, the others were decoded by hand from the protocol
documents and their values are asserted here.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.gateway import gt06, h02, jt808, watch
from devices.gateway.common import (
    CELL_ACC_M,
    Authenticate,
    CellFix,
    Command,
    Location,
    Login,
    Packet,
    Register,
    Reply,
    Status,
    gps_accuracy,
    to_native,
)
from devices.gateway.framing import Frame, Skipped, StreamFramer, crc16_x25, xor_check
from devices.ingest.codecs import DecodeError, Fix, Heartbeat, decode_native

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def one(packet: Packet) -> object:
    assert len(packet.messages) == 1, packet.messages
    return packet.messages[0]


def frames_of(framer: StreamFramer, data: bytes) -> list[bytes]:
    return [e.data for e in framer.feed(data) if isinstance(e, Frame)]


# --- published frames -----------------------------------------------------------------

GT06 = {
    # Gt06ProtocolDecoderTest.java: login, IMEI 0864717003283581 → 15 digits
    "login": "78780D01086471700328358100093F040D0A",
    # Gt06ProtocolDecoderTest.java: position("2015-10-20 14:21:11.000", true, 54.94535, 24.01762)
    "gps_lbs": "78781f120f0a140e150bc505e51e780293a9e800540000f601006e0055da00035f240d0a",
    # Gt06ProtocolDecoderTest.java: 0x22 GPS+LBS, Shenzhen
    "gps_lbs_2": "787822220F0C1D023305C9027AC8180C46586000140001CC00287D001F71000001000820860D0A",
    # Gt06ProtocolDecoderTest.java: 0x16 alarm, Traccar expects ALARM_REMOVING
    "alarm_removed": "7878251613020C12141AC5027951430C2A16F60014000900000000001A00007C550300020002F1E70D0A",
    # Gt06ProtocolDecoderTest.java: 0x16 alarm packet, south/west hemispheres
    "alarm_sw": "7878251610051b0f1c34c5022515d504b5dcd20738080902d4022bdf009cba5006640201006759680d0a",
    # Gt06ProtocolDecoderTest.java: 0x13 status, voltage level 6, GSM 4
    "status": "78780a13c40604000201298f5b0d0a",
    # Gt06ProtocolDecoderTest.java: 0x28 LBS multiple (cells, no coordinate)
    "lbs": "78783B2810010D02020201CC00287D001F713E287D001F7231287D001E232D287D001F4018000000000000000000000000000000000000FF00020005B14B0D0A",
}


def test_gt06_login_names_the_imei_and_is_acknowledged() -> None:
    packet = gt06.decode(bytes.fromhex(GT06["login"]))
    assert one(packet) == Login("864717003283581")
    assert packet.device_id == "864717003283581"
    ack = gt06.reply(packet)
    assert ack is not None and ack.hex() == "787805010009" + ack[6:8].hex() + "0d0a"
    assert int.from_bytes(ack[6:8], "big") == crc16_x25(ack[2:6])


def test_gt06_locations_decode_to_the_published_values() -> None:
    fix = one(gt06.decode(bytes.fromhex(GT06["gps_lbs"])))
    assert isinstance(fix, Location)
    assert fix.tst == ts("2015-10-20 14:21:11")
    assert (round(fix.lat, 5), round(fix.lon, 5), fix.valid) == (54.94535, 24.01762, True)
    assert fix.satellites == 5

    fix = one(gt06.decode(bytes.fromhex(GT06["gps_lbs_2"])))
    assert isinstance(fix, Location)
    assert fix.tst == ts("2015-12-29 02:51:05")
    assert (round(fix.lat, 5), round(fix.lon, 5)) == (23.11169, 114.4093)
    assert (fix.satellites, fix.speed_kmh, fix.history) == (9, 0.0, False)
    assert gt06.reply(gt06.decode(bytes.fromhex(GT06["gps_lbs_2"]))) is None  # no ack


def test_gt06_alarm_packets_carry_alarm_battery_and_hemispheres() -> None:
    packet = gt06.decode(bytes.fromhex(GT06["alarm_removed"]))
    fix = one(packet)
    assert isinstance(fix, Location)
    assert (fix.alarm, fix.batt, fix.gsm) == ("removed", 85, 3)
    assert gt06.reply(packet) is not None

    fix = one(gt06.decode(bytes.fromhex(GT06["alarm_sw"])))
    assert isinstance(fix, Location)
    assert fix.tst == ts("2016-05-27 15:28:52")
    assert (round(fix.lat, 5), round(fix.lon, 5)) == (-19.99159, -43.90412)
    assert (fix.speed_kmh, fix.course) == (7.0, 8.0)


def test_gt06_status_and_cells() -> None:
    status = one(gt06.decode(bytes.fromhex(GT06["status"])))
    assert status == Status(batt=100, gsm=4, alarm=None)
    cells = one(gt06.decode(bytes.fromhex(GT06["lbs"])))
    assert isinstance(cells, CellFix)
    assert cells.tst == ts("2016-01-13 02:02:02")
    assert cells.cells[0].mcc == 460 and len(cells.cells) == 4
    assert to_native(cells) == {"_type": "status", "tst": int(cells.tst or 0)}


JT808 = {
    # HuabaoProtocolDecoderTest.java: 0x0200 with extra item 0xFE battery 69 %
    "location": "7e02000033202011200010001300020000000400020158b30006c93ee5002000000000201127162937010400000000fe0145ff0c01cc00000000263300000f3e627e",
    # HuabaoProtocolDecoderTest.java: alarm bit 7, Traccar expects ALARM_LOW_BATTERY
    "low_battery": "7E020000480123456789010013000000800000000301597BC506CBFF6600EB00000155210726203531010400000000EB24000C00B28986047701207027150200060089FFFFEFFF0004002D0E10000600C5FFFFFFEF697E",
    # HuabaoProtocolDecoderTest.java: not positioned, signal 0x30 and satellites 0x31
    "unpositioned": "7e0200002c00160128561400020000000000040001005de1f7065c6cef00000000000017011710044201040000a9002a02000030011b3101030c7e",
    # HuabaoProtocolDecoderTest.java: 0x0704 batch of 8, type 1 (blind-area re-send)
    "batch": "7E0704014301356777777707F5000801002600000000000000030159741206CBFD5001720000000116052709062401040000001D03020000002600000000000000030159746606CBFD50016B0000000116052709065301040000001D0302000000260000000000000003015975E406CBFE58013F0000000116052709072701040000001D0302000000260000000000000003015976DE06CBFF10012E0000000116052709075601040000001D0302000000260000000000000003015976BC06CBFED0012D0000000116052709083001040000001D0302000000260000000000000003015976FE06CBFEC001080000000116052709090001040000001D0302000000260000000000000003015976FE06CBFE7800FC0000000116052709093301040000001D0302000000260000000000000003015977A606CBFF3001080000000116052709100201040000001D030200001F7E",
    # HuabaoProtocolDecoderTest.java: 0x0100 registration (2013 layout, GBK plate)
    "register": "7E0100002D013511221122000500000000373031303748422D52303347424400000000000000000000003233363631303402CBD5424136383630387E",
    # HuabaoProtocolDecoderTest.java: 0x0102 authentication
    "auth": "7E0102000E013511221122000661757468656E7469636174696F6E3F7E",
    # HuabaoProtocolDecoderTest.java: 0x0002 heartbeat
    "heartbeat": "7e0002000004304832546500b7ca7e",
}


def test_jt808_location_converts_beijing_time_to_utc() -> None:
    packet = jt808.decode(bytes.fromhex(JT808["location"]))
    fix = one(packet)
    assert packet.device_id == "202011200010"
    assert isinstance(fix, Location)
    assert fix.tst == ts("2020-11-27 08:29:37")  # 16:29:37 in Beijing
    assert (fix.lat, fix.lon, fix.valid) == (22.590208, 113.852133, True)
    assert (fix.altitude, fix.batt, fix.alarm) == (32.0, 69, None)


def test_jt808_alarm_bits_and_unpositioned_reports() -> None:
    fix = one(jt808.decode(bytes.fromhex(JT808["low_battery"])))
    assert isinstance(fix, Location) and fix.alarm == "low_battery"
    assert (fix.lat, fix.lon, fix.course) == (22.641605, 114.032486, 341.0)
    last = one(jt808.decode(bytes.fromhex(JT808["unpositioned"])))
    assert isinstance(last, Location)
    assert (last.valid, last.gsm, last.satellites) == (False, 27, 3)
    native = to_native(last)
    assert native is not None and (native["src"], native["acc"]) == ("cell", CELL_ACC_M)


def test_jt808_batch_is_history() -> None:
    packet = jt808.decode(bytes.fromhex(JT808["batch"]))
    assert len(packet.messages) == 8
    first = packet.messages[0]
    assert isinstance(first, Location) and first.history
    assert first.tst == ts("2016-05-27 01:06:24")
    assert (first.lat, first.lon, first.altitude) == (22.639634, 114.031952, 370.0)
    ack = jt808.reply(packet, serial=7, auth_code="x")
    assert ack is not None
    answer = one(jt808.decode(ack))
    assert answer == Reply("platform_response", "0x0704", 0x07F5, 0)


def test_jt808_registration_authentication_heartbeat() -> None:
    packet = jt808.decode(bytes.fromhex(JT808["register"]))
    reg = one(packet)
    assert isinstance(reg, Register)
    assert (reg.maker, reg.model, reg.terminal_id, reg.plate) == (
        "70107",
        "HB-R03GBD",
        "2366104",
        "苏BA6860",
    )
    response = jt808.reply(packet, serial=1, auth_code="hw-secret")
    assert response is not None
    answer = one(jt808.decode(response))
    assert answer == Reply("register_response", "0x0100", 5, 0, "hw-secret")
    assert one(jt808.decode(bytes.fromhex(JT808["auth"]))) == Authenticate("authentication")
    heartbeat = jt808.decode(bytes.fromhex(JT808["heartbeat"]))
    assert one(heartbeat) == Status()
    assert heartbeat.device_id == "043048325465"


def test_jt808_2019_header_round_trips() -> None:
    body = (
        bytes.fromhex("0000000100000003")  # SOS; positioned
        + (22_590_208).to_bytes(4, "big")
        + (113_852_133).to_bytes(4, "big")
        + bytes.fromhex("002001f4005a250101120000")  # 32 m, 50.0 km/h, 90°
        + bytes.fromhex("310109")  # 9 satellites
    )
    phone = "00000000013912345678"
    frame = jt808.encode(jt808.LOCATION, body, phone=phone, serial=42, version=1)
    packet = jt808.decode(frame)
    assert isinstance(packet.header, jt808.Jt808Header) and packet.header.version == 1
    assert packet.device_id == "013912345678"
    fix = one(packet)
    assert isinstance(fix, Location)
    assert fix.tst == ts("2025-01-01 04:00:00")
    assert (fix.speed_kmh, fix.course, fix.satellites, fix.alarm) == (50.0, 90.0, 9, "sos")
    ack = jt808.reply(packet, serial=3, auth_code="x")
    assert ack is not None
    back = jt808.decode(ack)
    assert isinstance(back.header, jt808.Jt808Header)
    assert (back.header.version, back.header.phone, back.header.serial) == (1, phone, 3)
    assert one(back) == Reply("platform_response", "0x0200", 42, 0)


WATCH = {
    # WatchProtocolDecoderTest.java: UD2, valid fix
    "ud2": "[3G*9031853319*004E*UD2,220322,055105,A,22.761162,N,114.360192,E,0,0,47,14,100,64,0,0,00000008,0,0]",
    # WatchProtocolDecoderTest.java: UD, western longitude (SG vendor; length field off by 3)
    "ud_west": "[SG*9059056143*0053*UD,251021,223408,A,41.46500,N,081.53128,W,0.926,000,0,00,70,70,0,50,00000000,0,1,,,,00]",
    # WatchProtocolDecoderTest.java: AL with status bit 16 (SOS), no fix, seven cells
    "al_sos": "[3G*8809008845*00C0*AL,271219,094744,V,00.000000,N, 0.0000000,E,0.00,0.0,0.0,0,100,81,0,0,00010000,7,0,460,0,9336,3981,141,9336,3912,141,9336,3982,140,9765,4233,134,9765,4071,134,9765,4321,134,9336,4353,132,0,0.0]",
    # WatchProtocolDecoderTest.java: AL with status bit 21 (fall)
    "al_fall": "[3G*8308373902*0080*AL,230817,095346,A,47.083950,N,15.4821850,E,7.60,273.8,0.0,4,15,44,0,0,00200010,2,255,232,1,7605,42530,118,7605,58036,119,0,65.8]",
    # WatchProtocolDecoderTest.java: ZJ with an index field, status bit 20 (removed)
    "al_removed": "[ZJ*014111001332708*0075*0064*AL,040418,052156,A,22.536207,N,113.938673,E,0,0,0,5,100,82,1000,50,00100000,1,255,460,0,9340,3663,35]",
}


def test_watch_positions_and_alarms() -> None:
    fix = one(watch.decode(WATCH["ud2"].encode()))
    assert isinstance(fix, Location)
    assert fix.tst == ts("2022-03-22 05:51:05")
    assert (fix.lat, fix.lon, fix.altitude, fix.satellites, fix.batt) == (
        22.761162,
        114.360192,
        47.0,
        14,
        64,
    )
    west = one(watch.decode(WATCH["ud_west"].encode()))
    assert isinstance(west, Location) and (west.lat, west.lon) == (41.465, -81.53128)

    packet = watch.decode(WATCH["al_sos"].encode())
    sos = one(packet)
    assert isinstance(sos, CellFix) and sos.alarm == "sos" and len(sos.cells) == 7
    assert watch.reply(packet) == b"[3G*8809008845*0002*AL]"
    assert to_native(sos) == {
        "_type": "status",
        "tst": int(ts("2019-12-27 09:47:44")),
        "batt": 81,
        "alarm": "sos",
    }

    fall = one(watch.decode(WATCH["al_fall"].encode()))
    assert isinstance(fall, Location) and (fall.alarm, fall.speed_kmh) == ("fall", 7.6)
    packet = watch.decode(WATCH["al_removed"].encode())
    assert isinstance(one(packet), Location) and one(packet).alarm == "removed"  # type: ignore[union-attr]
    assert watch.reply(packet) == b"[ZJ*014111001332708*0075*0002*AL]"


def test_watch_link_is_a_heartbeat_with_battery() -> None:
    packet = watch.decode(b"[SG*8800000015*000D*LK,50,100,88]")
    assert one(packet) == Status(batt=88)
    assert watch.reply(packet) == b"[SG*8800000015*0002*LK]"


H02 = {
    # H02ProtocolDecoderTest.java: position("2015-12-22 16:45:49.000", true, 9.93978, -84.11178)
    "west": "*HQ,4210051415,V1,164549,A,0956.3869,N,08406.7068,W,000.00,000,221215,FFFFFBFF,712,01,0,0,6#",
    # H02ProtocolDecoderTest.java: position("2015-10-03 05:04:18.000", false, 28.46021, 77.06414)
    "invalid": "*HQ,355488020119695,V1,050418,,2827.61232,N,07703.84822,E,0.00,0,031015,FFFEFBFF#",
    # H02ProtocolDecoderTest.java: position("2015-03-07 03:01:49.000", true, -23.48349, -46.85975)
    "minus": "*HQ,1451316409,V1,030149,A,-23-29.0095,S,-46-51.5852,W,2.4,065,070315,FFFFFFFF#",
    # H02ProtocolDecoderTest.java: speed 21.03 knots, status bit 18 clear (SOS as Traccar reads it)
    "sos": "*HQ,353505220903211,V1,140817,A,5239.3538,N,01003.5292,E,21.03,312,221013,FFFBFFFF,106,14, 203,1cd#",
    # H02ProtocolDecoderTest.java: LINK heartbeat, battery 84
    "link": "*HQ,1700086468,LINK,180902,15,0,84,0,0,240517,FFFFFBFF#",
}


def test_h02_positions_match_traccar() -> None:
    fix = one(h02.decode(H02["west"].encode()))
    assert isinstance(fix, Location)
    assert fix.tst == ts("2015-12-22 16:45:49")
    assert (round(fix.lat, 5), round(fix.lon, 5), fix.valid) == (9.93978, -84.11178, True)
    fix = one(h02.decode(H02["invalid"].encode()))
    assert isinstance(fix, Location)
    assert (round(fix.lat, 5), round(fix.lon, 5), fix.valid) == (28.46021, 77.06414, False)
    fix = one(h02.decode(H02["minus"].encode()))
    assert isinstance(fix, Location)
    assert fix.tst == ts("2015-03-07 03:01:49")
    assert (round(fix.lat, 5), round(fix.lon, 5)) == (-23.48349, -46.85975)
    fix = one(h02.decode(H02["sos"].encode()))
    assert isinstance(fix, Location)
    assert fix.alarm == "sos" and fix.speed_kmh == pytest.approx(21.03 * 1.852)
    assert one(h02.decode(H02["link"].encode())) == Status(
        tst=ts("2017-05-24 18:09:02"), batt=84, gsm=15
    )
    assert h02.reply(h02.decode(H02["west"].encode())) is None


def test_h02_binary_form_is_skipped_with_a_reason() -> None:
    binary = bytes.fromhex("2441060116601245431311165035313006004318210e000000fffffbffff0024")
    events = h02.H02Framer().feed(binary + H02["west"].encode())
    assert isinstance(events[0], Skipped) and events[0].reason == "h02_binary_unsupported"
    assert events[-1] == Frame(H02["west"].encode())
    with pytest.raises(DecodeError) as err:
        h02.decode(binary)
    assert err.value.reason == "h02_binary_unsupported"


# --- checksums ----------------------------------------------------------------------------


def test_crc_and_xor_reference_values() -> None:
    assert crc16_x25(b"123456789") == 0x906E  # the CRC-16/X-25 check value
    assert xor_check(b"\x01\x02\x04") == 0x07


@pytest.mark.parametrize("offset", [-3, -4])
def test_gt06_bad_crc_is_rejected_with_a_reason(offset: int) -> None:
    frame = bytearray(bytes.fromhex(GT06["gps_lbs"]))
    frame[offset] ^= 0x01
    [event] = gt06.Gt06Framer().feed(bytes(frame))
    assert isinstance(event, Frame)  # well delimited: the framer passes it on ...
    with pytest.raises(DecodeError) as err:
        gt06.decode(bytes(frame))
    assert err.value.reason == "bad_checksum"  # ... and the decoder says why it is refused


def test_jt808_bad_check_byte_is_rejected_with_a_reason() -> None:
    frame = bytearray(bytes.fromhex(JT808["location"]))
    frame[-2] ^= 0x01
    with pytest.raises(DecodeError) as err:
        jt808.decode(bytes(frame))
    assert err.value.reason == "bad_checksum"
    events = jt808.Jt808Framer().feed(bytes(frame) + bytes.fromhex(JT808["heartbeat"]))
    assert [type(e) for e in events] == [Skipped, Skipped, Frame]
    assert events[0].reason == "bad_checksum"  # type: ignore[union-attr]
    assert events[-1] == Frame(bytes.fromhex(JT808["heartbeat"]))


def test_jt808_desynchronised_stream_recovers_the_next_frame() -> None:
    heartbeat = bytes.fromhex(JT808["heartbeat"])
    # the tail of a frame we missed: its closing 7E looks like an opening one
    stream = b"\x01\x02\x7e" + b"\x55\x66" + heartbeat + heartbeat
    got = frames_of(jt808.Jt808Framer(), stream)
    assert got == [heartbeat, heartbeat]


# --- replies and commands round-trip: encoder → framer → decoder --------------------------


def test_gt06_replies_and_commands_round_trip() -> None:
    framer = gt06.Gt06Framer()
    for key in ("login", "status", "alarm_removed"):
        packet = gt06.decode(bytes.fromhex(GT06[key]))
        ack = gt06.reply(packet)
        assert ack is not None
        [frame] = frames_of(framer, ack)
        back = gt06.decode(frame)
        assert isinstance(back.header, gt06.Gt06Header) and isinstance(
            packet.header, gt06.Gt06Header
        )
        assert (back.header.proto, back.header.serial) == (
            packet.header.proto,
            packet.header.serial,
        )
        assert one(back) == Reply("ack", f"0x{packet.header.proto:02x}")
    frame = gt06.command("reportLocation", serial=9)
    assert b"DWXX#" in frame
    assert one(gt06.decode(frames_of(framer, frame)[0])) == Command("reportLocation")
    frame = gt06.command("setInterval", 15, serial=10)
    assert b"TIMER,15#" in frame
    assert one(gt06.decode(frames_of(framer, frame)[0])) == Command("setInterval", 15)
    assert framer.pending == b""


@pytest.mark.parametrize(
    ("version", "phone"), [(None, "013511221122"), (1, "00000000013511221122")]
)
def test_jt808_replies_and_commands_round_trip(version: int | None, phone: str) -> None:
    framer = jt808.Jt808Framer()
    for msg_id in (jt808.AUTH, jt808.HEARTBEAT, jt808.LOCATION, jt808.BATCH):
        body = b"" if msg_id != jt808.AUTH else (b"\x04code" if version else b"code")
        if msg_id == jt808.LOCATION:
            body = bytes(28)
        if msg_id == jt808.BATCH:
            body = b"\x00\x01\x00\x00\x1c" + bytes(28)
        terminal = jt808.encode(msg_id, body, phone=phone, serial=0x7E7D, version=version)
        packet = jt808.decode(frames_of(framer, terminal)[0])
        ack = jt808.reply(packet, serial=0x1234, auth_code="a")
        assert ack is not None
        back = jt808.decode(frames_of(framer, ack)[0])
        assert one(back) == Reply("platform_response", f"0x{msg_id:04x}", 0x7E7D, 0)
        assert isinstance(back.header, jt808.Jt808Header) and back.header.serial == 0x1234
    query = jt808.command("reportLocation", phone=phone, serial=1, version=version)
    assert one(jt808.decode(frames_of(framer, query)[0])) == Command("reportLocation")
    params = jt808.command("setInterval", 15, phone=phone, serial=2, version=version)
    packet = jt808.decode(frames_of(framer, params)[0])
    assert isinstance(packet.header, jt808.Jt808Header) and packet.header.msg_id == 0x8103
    assert one(packet) == Command("setInterval", 15)
    assert framer.pending == b""


def test_watch_replies_and_commands_round_trip() -> None:
    framer = watch.WatchFramer()
    for frame in (WATCH["al_removed"], WATCH["al_fall"], "[CS*1234567890*0002*LK]"):
        packet = watch.decode(frame.encode())
        ack = watch.reply(packet)
        assert ack is not None
        back = watch.decode(frames_of(framer, ack)[0])
        assert isinstance(back.header, watch.WatchHeader)
        assert back.header.device_id == packet.device_id
    cr = watch.command("reportLocation", vendor="SG", device_id="8800000015")
    assert cr == b"[SG*8800000015*0002*CR]"
    assert one(watch.decode(frames_of(framer, cr)[0])) == Command("reportLocation")
    upload = watch.command("setInterval", 60, vendor="3G", device_id="9031853319")
    assert upload == b"[3G*9031853319*0009*UPLOAD,60]"
    assert one(watch.decode(frames_of(framer, upload)[0])) == Command("setInterval", 60)


def test_h02_commands_round_trip() -> None:
    now = ts("2024-05-01 08:09:10")
    frame = h02.command("setInterval", 30, device_id="4210051415", now=now)
    assert frame == b"*HQ,4210051415,S71,080910,22,30#"
    assert one(h02.decode(frames_of(h02.H02Framer(), frame)[0])) == Command("setInterval", 30)
    with pytest.raises(ValueError):
        h02.command("reportLocation", device_id="4210051415", now=now)


# --- the native uplink -------------------------------------------------------------------


def _published() -> list[Packet]:
    packets = [gt06.decode(bytes.fromhex(h)) for h in GT06.values()]
    packets += [jt808.decode(bytes.fromhex(h)) for h in JT808.values()]
    packets += [watch.decode(t.encode()) for t in WATCH.values()]
    packets += [h02.decode(t.encode()) for t in H02.values()]
    return packets


def test_every_mapped_message_is_a_valid_native_uplink() -> None:
    mapped = 0
    for packet in _published():
        for message in packet.messages:
            native = to_native(message)
            if native is None:
                continue
            decoded = decode_native(json.dumps(native).encode())
            mapped += 1
            if native["_type"] == "location":
                assert isinstance(decoded, Fix)
                assert decoded.src in ("gps", "cell")
                assert decoded.acc is not None
                assert decoded.acc >= 1000 if decoded.src == "cell" else decoded.acc <= 50
            else:
                assert isinstance(decoded, Heartbeat)
    assert mapped >= 25


def test_accuracy_rule() -> None:
    assert gps_accuracy(None, 0.8) == 5.0
    assert gps_accuracy(None, 2.0) == 10.0
    assert [gps_accuracy(n, None) for n in (12, 7, 5, 4, 3)] == [10.0, 15.0, 20.0, 30.0, 50.0]
    assert gps_accuracy(None, None) == 30.0


finite = st.floats(allow_nan=True, allow_infinity=True)


@FUZZ
@given(
    tst=st.floats(min_value=-1e10, max_value=1e10),
    lat=finite,
    lon=finite,
    valid=st.booleans(),
    sats=st.none() | st.integers(0, 40),
    hdop=st.none() | finite,
    speed=st.none() | finite,
    course=st.none() | finite,
    batt=st.none() | st.integers(-5, 300),
    alarm=st.none() | st.sampled_from(["sos", "fall", "removed", "low_battery"]),
)
def test_any_location_maps_to_a_valid_native_uplink(
    tst: float,
    lat: float,
    lon: float,
    valid: bool,
    sats: int | None,
    hdop: float | None,
    speed: float | None,
    course: float | None,
    batt: int | None,
    alarm: str | None,
) -> None:
    message = Location(
        tst=tst,
        lat=lat,
        lon=lon,
        valid=valid,
        satellites=sats,
        hdop=hdop,
        speed_kmh=speed,
        course=course,
        batt=batt,
        alarm=alarm,  # type: ignore[arg-type]
    )
    native = to_native(message)
    assert native is not None
    decode_native(json.dumps(native, allow_nan=False).encode())


# --- fuzz: framers and decoders never raise, never duplicate, ignore splits --------------

PROTOCOLS = {
    "gt06": (gt06.Gt06Framer, gt06.decode, [bytes.fromhex(h) for h in GT06.values()]),
    "jt808": (jt808.Jt808Framer, jt808.decode, [bytes.fromhex(h) for h in JT808.values()]),
    "watch": (watch.WatchFramer, watch.decode, [t.encode() for t in WATCH.values()]),
    "h02": (h02.H02Framer, h02.decode, [t.encode() for t in H02.values()]),
}
# garbage that cannot open or close a frame of any of the protocols
GARBAGE = st.binary(max_size=12).map(
    lambda b: bytes(x for x in b if x not in b"\x78\x79\x7e\x7d[]*$#")
)


def _feed_in_pieces(framer: StreamFramer, data: bytes, cuts: list[int]) -> list[object]:
    events: list[object] = []
    previous = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += framer.feed(data[previous:cut])
        previous = cut
    return events


@pytest.mark.parametrize("name", PROTOCOLS)
@FUZZ
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=8))
def test_framer_accounts_for_every_byte_once(name: str, data: bytes, cuts: list[int]) -> None:
    framer_type, decode, _ = PROTOCOLS[name]
    framer = framer_type()
    events = _feed_in_pieces(framer, data, [c for c in cuts if c <= len(data)])
    emitted = b"".join(e.data for e in events)  # type: ignore[attr-defined]
    assert emitted + framer.pending == data
    for event in events:
        if isinstance(event, Frame):
            with contextlib.suppress(DecodeError):
                decode(event.data)


@pytest.mark.parametrize("name", PROTOCOLS)
@FUZZ
@given(data=st.data())
def test_valid_stream_splits_give_the_same_frames(name: str, data: st.DataObject) -> None:
    framer_type, decode, samples = PROTOCOLS[name]
    chosen = data.draw(st.lists(st.sampled_from(samples), min_size=1, max_size=5))
    junk = data.draw(st.lists(GARBAGE, min_size=len(chosen) + 1, max_size=len(chosen) + 1))
    stream = junk[0] + b"".join(f + g for f, g in zip(chosen, junk[1:], strict=True))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    whole = frames_of(framer_type(), stream)
    pieces = [e.data for e in _feed_in_pieces(framer_type(), stream, cuts) if isinstance(e, Frame)]
    assert whole == pieces == chosen
    for frame in whole:
        decode(frame)


@pytest.mark.parametrize("name", PROTOCOLS)
@FUZZ
@given(payload=st.binary(max_size=300))
def test_decoders_only_raise_decode_errors(name: str, payload: bytes) -> None:
    _, decode, samples = PROTOCOLS[name]
    for candidate in (payload, samples[0][:3] + payload + samples[0][-3:]):
        try:
            packet = decode(candidate)
        except DecodeError:
            continue
        for message in packet.messages:
            native = to_native(message)
            if native is not None:
                decode_native(json.dumps(native, allow_nan=False).encode())


@pytest.mark.parametrize("name", PROTOCOLS)
@FUZZ
@given(data=st.data())
def test_mutated_published_frames_never_crash(name: str, data: st.DataObject) -> None:
    _, decode, samples = PROTOCOLS[name]
    frame = bytearray(data.draw(st.sampled_from(samples)))
    for _ in range(data.draw(st.integers(1, 4))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        decode(bytes(frame))


@FUZZ
@given(payload=st.binary(max_size=400), serial=st.integers(0, 0xFFFF), v2019=st.booleans())
def test_jt808_escaping_round_trips(payload: bytes, serial: int, v2019: bool) -> None:
    assert jt808.unescape(jt808.escape(payload)) == payload
    assert b"\x7e" not in jt808.escape(payload)
    phone = "00000000013912345678" if v2019 else "013912345678"
    frame = jt808.encode(0x0900, payload, phone=phone, serial=serial, version=1 if v2019 else None)
    assert frames_of(jt808.Jt808Framer(), frame) == [frame]
    header, body = jt808.parse_header(jt808._checked(frame))
    assert (body, header.serial, header.phone) == (payload, serial, phone)
