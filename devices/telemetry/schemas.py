"""Answers about where elders are and what their devices said."""

from __future__ import annotations

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
