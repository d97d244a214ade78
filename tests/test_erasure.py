"""Erasure (PIPL Art. 47) through the real service: an elder with a photo, a walk over MQTT
through the ingest, an incident with SMS through a Twilio-compatible server, then DELETE —
and a scan of every key and value in Redis finds nothing of hers."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from alerts import keys as alerts_keys
from alerts.incidents import storage
from devices import keys as devices_keys
from geofences.geometry import LocalFrame
from locator.core.clock import ManualClock
from tests.conftest import Api
from tests.ingest_harness import Publisher, RunningIngest, wait_for
from tests.test_twilio import Stack, running_stack

HOME = {"lat": 30.4753187, "lon": 120.6381943}
FRAME = LocalFrame(HOME["lat"], HOME["lon"])
NAME = "祁婉秋Zq9"
GUARDIAN_PHONES = ["+8613912345671", "+8613912345672"]
TEXTS = {
    "name": NAME,
    "guardian name": "Gdn-Wq7",
    "address": "Xylo Lane 77 幢",
    "description": "Qv8 red knitted hat",
    "notes": "Mnk3 mid-stage dementia",
    "missing note": "Nt5 seen near the Qmarket",
}
PHOTO_MARKER = b"PHOTO-MARKER-7731"


def at(east: float, north: float) -> dict[str, float]:
    lat, lon = FRAME.latlon(east, north)
    return {"lat": lat, "lon": lon}


def photo() -> bytes:
    """A real 1×1 PNG carrying a marker in a text chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", b"Comment\0" + PHOTO_MARKER)
        + chunk(b"IDAT", zlib.compress(b"\x00\xcc\x88\x44"))
        + chunk(b"IEND", b"")
    )


def coordinate_needles(points: list[dict[str, float]]) -> set[str]:
    """Each latitude and longitude to 4 decimals (~10 m), as any stored text of it begins."""
    out = set()
    for p in points:
        for value in (p["lat"], p["lon"]):
            text = repr(value)
            out.add(text[: text.index(".") + 5])
    return out


def dump(client: redis.Redis) -> tuple[list[str], list[tuple[float, float]]]:
    """Every key name and value as text (type-aware), and every GEO position stored."""
    texts: list[str] = []
    places: list[tuple[float, float]] = []
    for key in client.scan_iter(match="*", count=1000):
        texts.append(key)
        kind = client.type(key)
        if kind == "string":
            texts.append(str(client.get(key)))
        elif kind == "hash":
            for f, v in client.hgetall(key).items():  # type: ignore[union-attr]
                texts += [f, v]
        elif kind == "list":
            texts += client.lrange(key, 0, -1)  # type: ignore[arg-type]
        elif kind == "set":
            texts += client.smembers(key)  # type: ignore[arg-type]
        elif kind == "zset":
            members = client.zrange(key, 0, -1, withscores=True)
            for m, score in members:  # type: ignore[union-attr]
                texts += [m, repr(score)]
            names = [m for m, _ in members]  # type: ignore[union-attr]
            if names:
                # Any zset may be a GEO set: decode every score as a position.
                for pos in client.geopos(key, *names):  # type: ignore[union-attr]
                    if pos:
                        places.append((float(pos[1]), float(pos[0])))
        elif kind == "stream":
            for entry_id, fields in client.xrange(key, "-", "+"):  # type: ignore[union-attr]
                texts.append(entry_id)
                for f, v in fields.items():
                    texts += [f, v]
            for group in client.xinfo_groups(key):  # type: ignore[union-attr]
                texts.append(str(group))
        else:
            raise AssertionError(f"{key}: type {kind} not dumped")
    return texts, places


def findings(
    client: redis.Redis, needles: dict[str, str], points: list[dict[str, float]]
) -> list[str]:
    texts, places = dump(client)
    found = [label for label, needle in needles.items() if any(needle in t for t in texts)]
    for p in points:
        for lat, lon in places:
            if abs(lat - p["lat"]) < 1e-4 and abs(lon - p["lon"]) < 1e-4:
                found.append(f"GEO member at {p}")
    return found


@pytest.fixture
def stack(
    redis: object, redis_url: str, mqtt_url: str, clock: ManualClock, tmp_path: Path
) -> Iterator[Stack]:
    with running_stack(redis_url, clock, tmp_path) as running:
        yield running


async def register(api: Api) -> tuple[int, str]:
    """Her record, photo, zone, pair and bracelet (claimed from stock by her family)."""
    body = {
        "name": NAME,
        "home": HOME,
        "address": TEXTS["address"],
        "description": TEXTS["description"],
        "medical_notes": TEXTS["notes"],
        "guardians": [
            {"name": TEXTS["guardian name"], "phone": GUARDIAN_PHONES[0], "relation": "son"},
            {"name": "Gdn-Two", "phone": GUARDIAN_PHONES[1], "relation": "daughter"},
        ],
    }
    r = await api.http.post("/api/v1/elders", json=body, headers=api.auth("guardian_a"))
    assert r.status_code == 201, r.text
    eid = int(r.json()["id"])
    r = await api.http.put(
        f"/api/v1/elders/{eid}/photo",
        content=photo(),
        headers={**api.auth("guardian_a"), "Content-Type": "image/png"},
    )
    assert r.status_code == 200, r.text
    zone = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [HOME["lon"], HOME["lat"]]},
        "properties": {"kind": "safe", "radius_m": 150},
    }
    r = await api.http.post(
        f"/api/v1/elders/{eid}/zones", json=zone, headers=api.auth("guardian_a")
    )
    assert r.status_code == 201, r.text
    vids = []
    for n, place in ((1, at(60, 5000)), (2, at(-70, 230))):
        r = await api.http.post(
            "/api/v1/volunteers",
            json={"name": f"志愿者{n}", "phone": f"+861390000{n:04d}", "on_duty": True},
            headers=api.auth("admin"),
        )
        vid = int(r.json()["id"])
        vids.append(vid)
        r = await api.http.post(
            f"/api/v1/volunteers/{vid}/location",
            json={**place, "acc": 10},
            headers=api.auth("admin"),
        )
        assert r.status_code == 200, r.text
    r = await api.http.put(
        f"/api/v1/elders/{eid}/pair", json={"volunteer_ids": vids}, headers=api.auth("admin")
    )
    assert r.status_code == 200, r.text
    r = await api.http.post(
        "/api/v1/devices/stock", json={"device_id": "zq-1"}, headers=api.auth("admin")
    )
    code = r.json()["claim_code"]
    r = await api.http.post(
        "/api/v1/devices",
        json={"device_id": "zq-1", "elder_id": eid, "claim_code": code},
        headers=api.auth("guardian_a"),
    )
    assert r.status_code == 201, r.text
    return eid, code


async def test_erasure_leaves_nothing_of_her_in_redis(
    api: Api, stack: Stack, mqtt_url: str, redis_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    eid, code = await register(api)
    client = stack.client
    ingest = RunningIngest(mqtt_url, redis_url, tmp_path / "ingest", clock)
    bracelet = Publisher(mqtt_url)
    walk = [at(0, 0), at(13, 0), at(31, 300), at(37, 320), at(41, 340)]
    try:
        for n, point in enumerate(walk, start=1):
            clock.advance(15)
            # The last fix reports a low battery: a family notice by SMS.
            batt = 9 if n == len(walk) else 80
            fix = {"_type": "location", **point, "tst": clock.time(), "acc": 10, "batt": batt}
            bracelet.send("homeward/devices/zq-1/up", fix)
            ingest.wait_processed(n)
        # One impossible jump is dead-lettered with its payload.
        jump = at(40_000, 40_000)
        clock.advance(15)
        bracelet.send(
            "homeward/devices/zq-1/up",
            {"_type": "location", **jump, "tst": clock.time(), "acc": 10},
        )
        ingest.wait_processed(len(walk) + 1)
    finally:
        bracelet.close()
        ingest.close()
    wait_for(lambda: storage.open_incident_id(client, eid) is not None)
    incident_id = storage.open_incident_id(client, eid)
    assert incident_id is not None
    r = await api.http.post(
        "/api/v1/incidents",
        json={"elder_id": eid, "note": TEXTS["missing note"]},
        headers=api.auth("guardian_a"),
    )
    assert r.status_code in (200, 201), r.text

    def sms_to(number: str) -> list[str]:
        return [m.form["Body"] for m in stack.twilio.messages() if m.form["To"] == number]

    wait_for(lambda: any(NAME in b for b in sms_to(GUARDIAN_PHONES[0])))
    wait_for(lambda: any(NAME in b for b in sms_to("+8613900000001")))
    wait_for(lambda: any("电量" in b or "%" in b for b in sms_to(GUARDIAN_PHONES[1])))
    code_of = storage.load(client, incident_id).fields["code"]

    needles = {**TEXTS, "photo": base64.b64encode(photo()).decode()[:40]}
    needles["photo marker"] = PHOTO_MARKER.decode()
    for i, phone in enumerate(GUARDIAN_PHONES):
        needles[f"guardian phone {i}"] = phone
    points = [HOME, *walk, jump]
    for n, needle in enumerate(sorted(coordinate_needles(points))):
        needles[f"coordinate {n} ({needle})"] = needle
    # The scan can fail: before the erasure it finds every kind of datum.
    before = findings(client, needles, points)
    for label in ("name", "notes", "missing note", "photo", "guardian phone 0", "address"):
        assert label in before, f"the scan did not see her {label} before erasing"
    assert any(b.startswith("coordinate") for b in before)

    sms_before = len(stack.twilio.messages())
    async with httpx.AsyncClient(base_url=stack.url) as http:
        gone = await http.delete(f"/api/v1/elders/{eid}", headers=api.auth("guardian_a"))
        assert gone.status_code == 204, gone.text
        again = await http.get(f"/api/v1/elders/{eid}", headers=api.auth("admin"))
        assert again.status_code == 404

    # Her open incident was cancelled: the volunteers are told, her name is not in it.
    def stand_down() -> list[str]:
        return [
            m.form["Body"]
            for m in stack.twilio.messages()[sms_before:]
            if m.form["To"] == "+8613900000001"
        ]

    wait_for(lambda: any(code_of in b and "取消" in b for b in stand_down()))
    assert not any(NAME in b for b in stand_down())
    assert not any(m.form["To"] in GUARDIAN_PHONES for m in stack.twilio.messages()[sms_before:]), (
        "her family was messaged about the erasure"
    )
    wait_for(
        lambda: all(
            a.get("status") not in ("queued", "sending", "retry")
            for a in stack.attempts(incident_id).values()
        )
    )

    assert findings(client, needles, points) == []
    # What stays: the incident's anonymous SLA figures, and "erased by X at T".
    kept: dict[str, Any] = client.hgetall(alerts_keys.incident(eid, incident_id))  # type: ignore[assignment]
    assert kept["status"] == "cancelled" and kept["trigger"] and float(kept["t0"]) > 0
    assert float(kept["respond_deadline"]) > float(kept["t0"]) and kept["resolved_at"]
    timeline = [
        json.loads(e) for e in client.lrange(alerts_keys.incident_timeline(eid, incident_id), 0, -1)
    ]  # type: ignore[union-attr]
    assert timeline[0]["type"] == "opened" and timeline[-1]["reason"] == "erased"
    report = await api.http.get("/api/v1/reports/sla", headers=api.auth("admin"))
    assert report.status_code == 200, report.text
    assert incident_id in [row["incident_id"] for row in report.json()["rows"]]
    log = client.xrange(devices_keys.access_log(eid))
    assert [(f["action"], f["role"], f["subject"]) for _, f in log] == [  # type: ignore[union-attr]
        ("erased", "guardian", "fam-a")
    ]
    # The bracelet is back in stock: the next family claims it with the code on its box.
    stocked = await api.http.get("/api/v1/devices/stock", headers=api.auth("admin"))
    assert "zq-1" in [s["device_id"] for s in stocked.json()["items"]]
    other = await api.http.post(
        "/api/v1/elders",
        json={
            "name": "另一位",
            "home": HOME,
            "guardians": [{"name": "王", "phone": "+8613700000009", "relation": "son"}],
        },
        headers=api.auth("guardian_b"),
    )
    claimed = await api.http.post(
        "/api/v1/devices",
        json={"device_id": "zq-1", "elder_id": other.json()["id"], "claim_code": code},
        headers=api.auth("guardian_b"),
    )
    assert claimed.status_code == 201, claimed.text
    # Deleting again finds no elder: nothing of her is left to delete.
    assert (
        await api.http.delete(f"/api/v1/elders/{eid}", headers=api.auth("guardian_a"))
    ).status_code == 404
