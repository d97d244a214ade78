"""Answers about where elders are and what their devices said."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from locator.core.schemas import LatLon


class PositionRead(BaseModel):
    lat: float
    lon: float
    acc: float | None
    src: str
    tst: str
    received_at: str
    battery: int | None
    stale: bool
    device_id: str
    speed_kmh: float | None
    course: float | None
    flags: list[str]


class TrackCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[dict[str, Any]]


class RejectedRead(BaseModel):
    id: str
    reason: str
    detail: str
    topic: str
    payload: str
    device_id: str | None
    elder_id: int | None
    received_at: str


class DeviceEventRead(BaseModel):
    id: str
    type: str
    device_id: str
    tst: str | None
    at: LatLon | None
    acc: float | None
    received_at: str
    detail: str


@dataclass(frozen=True)
class Fix:
    """One stored fix, from either store (Redis hot window or the PostgreSQL archive)."""

    device_id: str
    entry_id: str  # the Redis stream id it was stored under: the fix's identity in both stores
    tst: float
    received_ms: float
    lat: float
    lon: float
    acc: float | None = None
    src: str | None = None
    vel: float | None = None
    cog: float | None = None
    batt: int | None = None
    alarm: str | None = None
    flags: tuple[str, ...] = ()

    @classmethod
    def from_stream(cls, device_id: str, entry_id: str, fields: dict[str, str]) -> Fix:
        """A fix from its track stream entry (empty fields are absent values)."""

        def num(name: str) -> float | None:
            value = fields.get(name)
            return float(value) if value not in (None, "") else None

        return cls(
            device_id=device_id,
            entry_id=entry_id,
            tst=float(fields["tst"]),
            received_ms=float(fields.get("received_ms") or 0),
            lat=float(fields["lat"]),
            lon=float(fields["lon"]),
            acc=num("acc"),
            src=fields.get("src") or None,
            vel=num("vel"),
            cog=num("cog"),
            batt=int(fields["batt"]) if fields.get("batt") else None,
            alarm=fields.get("alarm") or None,
            flags=tuple(f for f in fields.get("flags", "").split(",") if f),
        )
