"""A small district for the alerts tests: an elder, her pair, volunteers at known distances,
a rescue team and an on-call dispatcher, registered through the real API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import redis

from alerts import intake
from alerts import keys as alerts_keys
from alerts.escalation import Policy
from alerts.incidents import storage
from alerts.incidents.config import AlertsConfig
from alerts.notify.channels import LogChannel, MqttPushChannel
from alerts.notify.outbox import Deliverer
from devices import keys as devices_keys
from geofences import keys as geofences_keys
from geofences.geometry import LocalFrame
from locator import alerts_loop
from locator.core import shards
from locator.core.auth import Role
from locator.core.clock import ManualClock
from locator.core.mqtt import Publisher
from tests.conftest import Api
from tests.factories import HAINING, elder_body, volunteer_body

LAT, LON = HAINING["lat"], HAINING["lon"]
FRAME = LocalFrame(LAT, LON)
# ManualClock starts at 08:00 UTC = 16:00 in Haining: this window is "quiet" then.
QUIET_NOW = {"start": "15:00", "end": "17:00"}


def north(metres: float) -> dict[str, float]:
    lat, lon = FRAME.latlon(0, metres)
    return {"lat": lat, "lon": lon}


@dataclass
class District:
    elder_id: int
    volunteers: dict[str, int]
    tokens: dict[str, str] = field(default_factory=dict)
    team_id: int = 0
    dispatcher_id: int = 0

    def vid(self, name: str) -> int:
        return self.volunteers[name]

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


# name -> (metres north of home where they shared their location, extra volunteer fields)
PEOPLE: dict[str, tuple[float | None, dict[str, Any]]] = {
    "pair1": (5000, {}),  # paired volunteers are paged wherever they are
    "pair2": (None, {"quiet_hours": QUIET_NOW}),  # ... and whatever their quiet hours
    "near200": (200, {}),
    "quiet300": (300, {"quiet_hours": QUIET_NOW}),
    "near400": (400, {}),
    "near600": (600, {}),
    "near900": (900, {}),
    "offduty100": (100, {"on_duty": False}),
    "far2000": (2000, {}),
    "lead": (None, {}),
    "member": (None, {}),
}


async def build_district(api: Api) -> District:
    body = elder_body(
        guardians=[
            {"name": "李明", "phone": "+8613800138000", "relation": "son"},
            {"name": "王芳", "phone": "+8613800138001", "relation": "daughter"},
        ]
    )
    elder = await api.http.post("/api/v1/elders", json=body, headers=api.auth("guardian_a"))
    assert elder.status_code == 201, elder.text
    elder_id = int(elder.json()["id"])
    zone = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [LON, LAT]},
        "properties": {"kind": "safe", "radius_m": 150},
    }
    made = await api.http.post(
        f"/api/v1/elders/{elder_id}/zones", json=zone, headers=api.auth("guardian_a")
    )
    assert made.status_code == 201, made.text
    district = District(elder_id=elder_id, volunteers={})
    for n, (name, (metres, extra)) in enumerate(PEOPLE.items(), start=1):
        r = await api.http.post(
            "/api/v1/volunteers", json=volunteer_body(n, **extra), headers=api.auth("admin")
        )
        assert r.status_code == 201, r.text
        vid = int(r.json()["id"])
        district.volunteers[name] = vid
        district.tokens[name] = await api.token(Role.VOLUNTEER, str(vid))
        if metres is not None:
            r = await api.http.post(
                f"/api/v1/volunteers/{vid}/location",
                json={**north(metres), "acc": 10},
                headers=api.auth("admin"),
            )
            assert r.status_code == 200, r.text
    pair = {"volunteer_ids": [district.vid("pair1"), district.vid("pair2")]}
    r = await api.http.put(f"/api/v1/elders/{elder_id}/pair", json=pair, headers=api.auth("admin"))
    assert r.status_code == 200, r.text
    team = {
        "name": "海宁救援队",
        "members": [
            {"volunteer_id": district.vid("lead"), "role": "lead"},
            {"volunteer_id": district.vid("member"), "role": "member"},
        ],
    }
    r = await api.http.post("/api/v1/teams", json=team, headers=api.auth("admin"))
    assert r.status_code == 201, r.text
    district.team_id = int(r.json()["id"])
    r = await api.http.post(
        "/api/v1/dispatchers",
        json={"name": "值班调度", "phone": "+8613700000001", "on_call": True},
        headers=api.auth("admin"),
    )
    assert r.status_code == 201, r.text
    district.dispatcher_id = int(r.json()["id"])
    return district


def config(
    clock: ManualClock,
    *,
    channels: frozenset[str] = frozenset({"mqtt", "log"}),
    policy: Policy | None = None,
) -> AlertsConfig:
    return AlertsConfig(
        clock=clock,
        timezone=ZoneInfo("Asia/Shanghai"),
        locale="zh-CN",
        channels=channels,
        policy=policy or Policy(),
    )


def deliverer(client: redis.Redis, publisher: Publisher | None) -> Deliverer:
    channels: dict[str, Any] = {"log": LogChannel()}
    if publisher is not None:
        channels["mqtt"] = MqttPushChannel(publisher)
    d = Deliverer(client, channels, "test-delivery")
    d.ensure_group()
    return d


def exit_event(
    client: redis.Redis,
    elder_id: int,
    clock: ManualClock,
    *,
    metres: float = 300,
    kind: str = "zone_exit",
    zone_id: str = "z1",
) -> str:
    """What the ingest script writes on a confirmed exit (same fields)."""
    point = north(metres)
    entry = client.xadd(
        geofences_keys.transitions(shards.shard_of(elder_id)),
        {
            "zone_id": zone_id,
            "kind": kind,
            "outside_all_safe": "1" if kind != "zone_enter" else "0",
            "tst": str(int(clock.time())),
            "lat": str(point["lat"]),
            "lon": str(point["lon"]),
            "acc": "10",
            "elder_id": str(elder_id),
            "device_id": "b-1",
            "received_ms": str(int(clock.time() * 1000)),
        },
    )
    return str(entry)


def device_event(
    client: redis.Redis,
    elder_id: int,
    clock: ManualClock,
    kind: str,
    *,
    metres: float = 0,
    detail: str = "",
) -> str:
    point = north(metres)
    entry = client.xadd(
        devices_keys.device_events(shards.shard_of(elder_id)),
        {
            "type": kind,
            "elder_id": str(elder_id),
            "device_id": "b-1",
            "tst": str(int(clock.time())),
            "lat": str(point["lat"]),
            "lon": str(point["lon"]),
            "acc": "10",
            "received_ms": str(int(clock.time() * 1000)),
            "detail": detail,
        },
    )
    return str(entry)


def consume(client: redis.Redis, cfg: AlertsConfig) -> int:
    return intake.consume_once(client, cfg, consumer="test-alerts", block_ms=10)


def ensure_groups(client: redis.Redis) -> None:
    alerts_loop.ensure_groups(client)


def attempts(client: redis.Redis, incident_id: int) -> dict[str, dict[str, str]]:
    snap = storage.load(client, incident_id)
    ids = client.zrange(alerts_keys.incident_attempts(snap.elder_id, incident_id), 0, -1)
    return {str(a): client.hgetall(alerts_keys.attempt(str(a))) for a in ids}  # type: ignore[misc]


def paged(client: redis.Redis, incident_id: int, step: str) -> set[str]:
    """Recipients with an attempt for ``step`` (any channel)."""
    return {a["recipient"] for a in attempts(client, incident_id).values() if a["step"] == step}
