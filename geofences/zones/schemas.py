"""Zones as GeoJSON Features, pauses and transitions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from locator.core.schemas import CrsName, LatLon, Strict

HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
EVERY_DAY = (1, 2, 3, 4, 5, 6, 7)


class Window(Strict):
    days: Annotated[list[Annotated[int, Field(ge=1, le=7)]], Field(min_length=1)] = Field(
        default_factory=lambda: list(EVERY_DAY), description="ISO weekdays, 1 = Monday"
    )
    start: str = Field(pattern=HHMM, examples=["20:00"])
    end: str = Field(pattern=HHMM, examples=["07:00"])

    @field_validator("end")
    @classmethod
    def _not_empty(cls, end: str, info: Any) -> str:
        if info.data.get("start") == end:
            raise ValueError("must differ from start (an always-on zone has no schedule)")
        return end


class ZoneProperties(BaseModel):
    # Drawing tools add their own properties (stroke colours...): keep ours, ignore theirs.
    model_config = ConfigDict(extra="ignore")

    kind: Literal["safe", "danger"]
    name: Annotated[str, Field(max_length=64)] = ""
    radius_m: Annotated[float | None, Field(description="circles only; 100..5000")] = None
    schedule: Annotated[list[Window] | None, Field(max_length=14)] = None
    crs: CrsName = "wgs84"


class ZoneGeometry(BaseModel):
    type: Literal["Point", "Polygon", "MultiPolygon"]
    coordinates: Any


class ZoneFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: ZoneGeometry
    properties: ZoneProperties


class ZoneRead(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str
    geometry: dict[str, Any]
    properties: dict[str, Any]
    warnings: list[str] = []


class PauseBody(Strict):
    until: datetime
    reason: Annotated[str, Field(max_length=200)] = ""


class PauseRead(BaseModel):
    until: str
    reason: str
    set_at: str


class TransitionRead(BaseModel):
    id: str
    zone_id: str
    kind: Literal["zone_exit", "zone_enter", "danger_enter"]
    tst: str
    at: LatLon
    outside_all_safe: bool
