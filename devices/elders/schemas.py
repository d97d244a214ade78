"""Bodies and answers of /api/v1/elders."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, HttpUrl, model_validator

from locator.core.schemas import CrsName, LatLon, Phone, Strict

Name = Annotated[str, Field(min_length=1, max_length=64)]
Text = Annotated[str, Field(max_length=2000)]


class Guardian(Strict):
    name: Name
    phone: Phone
    relation: Annotated[str, Field(max_length=32)] = ""


class ElderCreate(Strict):
    name: Name
    home: LatLon
    address: Annotated[str, Field(max_length=200)] = ""
    photo_url: HttpUrl | None = None
    description: Text = ""
    medical_notes: Text = ""
    guardians: Annotated[list[Guardian], Field(min_length=1, max_length=5)]
    crs: CrsName = "wgs84"
    owner: Annotated[
        str | None, Field(max_length=64, description="guardian subject; staff only")
    ] = None

    @model_validator(mode="after")
    def _home_in_wgs84(self) -> ElderCreate:
        self.home = self.home.to_wgs84(self.crs)
        self.crs = "wgs84"
        return self


class ElderUpdate(Strict):
    name: Name | None = None
    home: LatLon | None = None
    address: Annotated[str | None, Field(max_length=200)] = None
    photo_url: HttpUrl | None = None
    description: Text | None = None
    medical_notes: Text | None = None
    guardians: Annotated[list[Guardian] | None, Field(min_length=1, max_length=5)] = None
    crs: CrsName = "wgs84"

    @model_validator(mode="after")
    def _home_in_wgs84(self) -> ElderUpdate:
        if self.home is not None:
            self.home = self.home.to_wgs84(self.crs)
        self.crs = "wgs84"
        return self


class ElderRead(BaseModel):
    id: int
    name: str
    home: LatLon
    address: str
    photo_url: str | None
    description: str
    medical_notes: str
    guardians: list[Guardian]
    owner: str | None
    device_id: str | None = None
    created_at: str
    updated_at: str
