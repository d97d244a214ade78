"""The one Position value type every later stage (geofences, alerts) consumes (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from devices.ingest.codecs import Fix


@dataclass(frozen=True, slots=True)
class Position:
    """A fix attributed to a device and its wearer, in WGS-84 and SI-ish units."""

    device_id: str
    elder_id: int
    fix_time: datetime  # UTC, from the device
    received_at: datetime  # UTC, when the service received it
    lat: float
    lon: float
    accuracy_m: float | None
    source: str  # gps | wifi | cell
    speed_kmh: float | None
    course_deg: float | None
    battery: int | None
    alarm: str | None

    @classmethod
    def from_fix(cls, fix: Fix, *, device_id: str, elder_id: int, received_at: float) -> Position:
        return cls(
            device_id=device_id,
            elder_id=elder_id,
            fix_time=datetime.fromtimestamp(fix.tst, UTC),
            received_at=datetime.fromtimestamp(received_at, UTC),
            lat=fix.lat,
            lon=fix.lon,
            accuracy_m=fix.acc,
            source=fix.src,
            speed_kmh=fix.vel,
            course_deg=fix.cog,
            battery=fix.batt,
            alarm=fix.alarm,
        )
