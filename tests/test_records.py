"""Typed records the owning domains hand to the others: elder, last position, attempt (pure)."""

from __future__ import annotations

import json

from alerts.notify.attempts import Attempt, attempt_id, parse_attempt
from devices.elders.records import ElderRecord, parse_elder
from devices.telemetry.positions import parse_position


def _as_redis(fields: dict[str, object]) -> dict[str, str]:
    """What HGETALL gives back for fields written by HSET (every value a string)."""
    return {k: str(v) for k, v in fields.items()}


def test_an_elder_document_reads_typed_and_a_tombstone_is_not_live() -> None:
    doc = {
        "id": 7,
        "name": "张阿婆",
        "home": {"lat": 30.5, "lon": 120.6},
        "guardians": [{"name": "女儿", "phone": "+8613800000001", "relation": "daughter"}],
        "owner": "g-1",
        "medical_notes": "diabetes",
    }
    elder = parse_elder(json.dumps(doc, ensure_ascii=False), 7)
    assert elder is not None and elder.live
    assert elder.home == (30.5, 120.6)
    assert [g.phone for g in elder.guardians] == ["+8613800000001"]
    assert elder.owner == "g-1" and elder.medical_notes == "diabetes" and elder.address == ""
    gone = parse_elder(json.dumps({**doc, "deleted_at": "2026-01-01T00:00:00+08:00"}), 7)
    assert gone is not None and not gone.live
    assert parse_elder(None, 7) is None
    stand_in = ElderRecord.anonymous(7)
    assert stand_in.name == "#7" and stand_in.guardians == () and stand_in.home is None


def test_the_last_position_reads_typed_with_its_good_fix() -> None:
    raw = {
        b"lat": b"30.1",
        b"lon": b"120.2",
        b"acc": b"800",
        b"src": b"cell",
        b"tst": b"1000",
        b"order_t": b"1000",
        b"received_ms": b"1000500",
        b"device_id": b"b-1",
        b"flags": b"low_quality",
        b"good_lat": b"30.0",
        b"good_lon": b"120.0",
        b"good_tst": b"900",
        b"good_acc": b"12",
    }
    pos = parse_position(raw)
    assert pos is not None
    assert (pos.lat, pos.lon, pos.acc, pos.src) == (30.1, 120.2, 800.0, "cell")
    assert pos.flags == ("low_quality",) and pos.vel is None and pos.battery is None
    assert pos.good is not None and (pos.good.lat, pos.good.tst, pos.good.acc) == (30.0, 900, 12)
    only_good = parse_position({"good_lat": "30.0", "good_lon": "120.0", "good_tst": "900"})
    assert only_good is not None and (only_good.lat, only_good.lon) == (30.0, 120.0)
    assert parse_position({}) is None


def test_an_attempt_reads_back_as_built_and_its_fallback_names_it() -> None:
    built = Attempt(
        elder_id=3,
        incident_id=11,
        scope="i11",
        step="t0",
        recipient="volunteer:5",
        phone="+8613900000005",
        channel="mqtt",
        template="alert",
        text="张阿婆走失",
        data=json.dumps({"incident_id": 11}),
        locale="zh-CN",
    )
    assert built.id == "3.i11.t0.volunteer:5.mqtt"
    assert built.id == attempt_id(
        elder_id=3, scope="i11", step="t0", recipient="volunteer:5", channel="mqtt"
    )
    stored = _as_redis({**built.record(), "seq": 1, "status": "queued", "tries": 0})
    read = parse_attempt(stored)
    assert read is not None
    assert read.record() == built.record()
    assert (read.status, read.tries, read.incident_id) == ("queued", 0, 11)
    nxt = read.on("sms")
    assert nxt.id == "3.i11.t0.volunteer:5.sms" and nxt.fallback_of == built.id
    assert nxt.record()["fallback_of"] == built.id and nxt.status == ""
    notice = Attempt(
        elder_id=3,
        scope="nlow_battery",
        step="low_battery",
        recipient="guardian:0",
        channel="sms",
        template="low_battery",
        text="...",
        locale="zh-CN",
    )
    assert notice.record()["incident_id"] == "" and "fallback_of" not in notice.record()
    again = parse_attempt(_as_redis(notice.record()))
    assert again is not None and again.incident_id is None
    assert parse_attempt({}) is None
