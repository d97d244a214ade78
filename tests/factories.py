"""Request bodies used across tests."""

from __future__ import annotations

from typing import Any

HAINING = {"lat": 30.5112, "lon": 120.6853}


def elder_body(name: str = "张阿婆", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "home": dict(HAINING),
        "address": "海宁市西山社区 3 幢",
        "description": "灰色外套，拄拐杖",
        "medical_notes": "阿尔茨海默病中期",
        "guardians": [{"name": "李明", "phone": "+8613800138000", "relation": "son"}],
    }
    body.update(extra)
    return body


def volunteer_body(n: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"志愿者{n}", "phone": f"+861390000{n:04d}", "on_duty": True}
    body.update(extra)
    return body


async def register_elder_at_home(api: Any, *, device_id: str) -> int:
    """Through the API: an elder with a 150 m safe zone at home and one bracelet; the clock
    moved past the new zone's grace, so a first "outside" is an exit. Returns her id."""
    elder = await api.http.post("/api/v1/elders", json=elder_body(), headers=api.auth("admin"))
    elder_id = int(elder.json()["id"])
    home = elder_body()["home"]
    zone = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [home["lon"], home["lat"]]},
        "properties": {"kind": "safe", "radius_m": 150},
    }
    made = await api.http.post(
        f"/api/v1/elders/{elder_id}/zones", json=zone, headers=api.auth("admin")
    )
    assert made.status_code == 201, made.text
    body = {"device_id": device_id, "elder_id": elder_id}
    made = await api.http.post("/api/v1/devices", json=body, headers=api.auth("admin"))
    assert made.status_code == 201, made.text
    api.clock.advance(700)
    return elder_id
