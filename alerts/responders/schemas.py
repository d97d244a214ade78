"""Bodies and answers for volunteers, teams, pairs and the dispatcher roster."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from locator.core.schemas import CrsName, LatLon, Phone, QuietHours, Strict

Name = Annotated[str, Field(min_length=1, max_length=64)]


class VolunteerCreate(Strict):
    name: Name
    phone: Phone
    on_duty: bool = True
    quiet_hours: QuietHours | None = None


class VolunteerUpdate(Strict):
    name: Name | None = None
    phone: Phone | None = None
    on_duty: bool | None = None
    quiet_hours: QuietHours | None = None


class SharedLocation(BaseModel):
    lat: float
    lon: float
    acc: float | None
    at: str


class VolunteerRead(BaseModel):
    id: int
    name: str
    phone: str
    on_duty: bool
    quiet_hours: QuietHours | None
    location: SharedLocation | None = None
    created_at: str
    updated_at: str


# Redis GEO (Web Mercator) cannot index the polar caps.
GEO_MAX_LAT = 85.05112878


class LocationReport(LatLon):
    acc: Annotated[float | None, Field(ge=0, le=100_000)] = None
    crs: CrsName = "wgs84"

    @field_validator("lat")
    @classmethod
    def _indexable(cls, lat: float) -> float:
        if abs(lat) > GEO_MAX_LAT:
            raise ValueError(f"must be within ±{GEO_MAX_LAT} to be searchable")
        return lat


class TeamMember(Strict):
    volunteer_id: int = Field(gt=0)
    role: Literal["lead", "member"] = "member"


def _distinct_members(members: list[TeamMember]) -> list[TeamMember]:
    seen: set[int] = set()
    for member in members:
        if member.volunteer_id in seen:
            raise ValueError(f"volunteer {member.volunteer_id} is listed twice")
        seen.add(member.volunteer_id)
    return members


class TeamCreate(Strict):
    name: Name
    members: Annotated[list[TeamMember], Field(min_length=1, max_length=500)]
    on_duty: bool = True

    _distinct = field_validator("members")(_distinct_members)


class TeamUpdate(Strict):
    name: Name | None = None
    members: Annotated[list[TeamMember] | None, Field(min_length=1, max_length=500)] = None
    on_duty: bool | None = None

    @field_validator("members")
    @classmethod
    def _distinct(cls, members: list[TeamMember] | None) -> list[TeamMember] | None:
        return None if members is None else _distinct_members(members)


class TeamMemberRead(BaseModel):
    volunteer_id: int
    role: Literal["lead", "member"]
    name: str | None


class TeamRead(BaseModel):
    id: int
    name: str
    members: list[TeamMemberRead]
    on_duty: bool
    created_at: str
    updated_at: str


class PairBody(Strict):
    volunteer_ids: Annotated[list[int], Field(min_length=1, max_length=2)]

    @field_validator("volunteer_ids")
    @classmethod
    def _distinct(cls, ids: list[int]) -> list[int]:
        if len(set(ids)) != len(ids):
            raise ValueError("the two paired volunteers must be different people")
        return ids


class PairedVolunteer(BaseModel):
    id: int | None = None
    name: str
    phone: str | None = None


class PairRead(BaseModel):
    elder_id: int
    volunteer_ids: list[int] | None
    volunteers: list[PairedVolunteer]


class DispatcherCreate(Strict):
    name: Name
    phone: Phone
    on_call: bool = False


class DispatcherUpdate(Strict):
    name: Name | None = None
    phone: Phone | None = None
    on_call: bool | None = None


class DispatcherRead(BaseModel):
    id: int
    name: str
    phone: str
    on_call: bool
    created_at: str
    updated_at: str
