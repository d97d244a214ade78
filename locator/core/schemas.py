"""Value types every domain's bodies share: phones, coordinates, pages."""

from __future__ import annotations

import math
from typing import Annotated, Generic, Literal, TypeVar

import phonenumbers
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from locator.core import crs as crs_mod

T = TypeVar("T")


def _e164(value: str) -> str:
    raw = value.strip()
    if not raw.startswith("+"):
        raise ValueError("must be in E.164 form with the country code, e.g. +8613800138000")
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"is not a phone number ({exc})") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("is not a valid phone number for its country code")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


Phone = Annotated[str, Field(max_length=32), AfterValidator(_e164)]
"""A phone number normalised to E.164 (``+8613800138000``)."""


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class Strict(BaseModel):
    """Base for request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class LatLon(Strict):
    """A WGS-84 coordinate (or in the body's ``crs``, converted on input)."""

    lat: Annotated[float, AfterValidator(_finite), Field(ge=-90, le=90)]
    lon: Annotated[float, AfterValidator(_finite), Field(ge=-180, le=180)]

    def to_wgs84(self, crs: crs_mod.Crs) -> LatLon:
        lat, lon = crs_mod.to_wgs84(self.lat, self.lon, crs)
        return LatLon(lat=round(lat, 7), lon=round(lon, 7))


CrsName = Literal["wgs84", "gcj02", "bd09"]


class Page(BaseModel, Generic[T]):
    """The list shape of the contract: items plus an opaque cursor for the next page."""

    items: list[T]
    next: str | None = None


class QuietHours(Strict):
    """A daily local-time window (may cross midnight) when a volunteer is not paged."""

    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["22:00"])
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["07:00"])

    @field_validator("end")
    @classmethod
    def _not_empty(cls, value: str, info: object) -> str:
        data = getattr(info, "data", {})
        if data.get("start") == value:
            raise ValueError("must differ from start")
        return value
