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
        # Positional, in field order: one per stored fix, and keywords cost a third more.
        return cls(
            device_id,
            elder_id,
            datetime.fromtimestamp(fix.tst, UTC),
            datetime.fromtimestamp(received_at, UTC),
            fix.lat,
            fix.lon,
            fix.acc,
            fix.src,
            fix.vel,
            fix.cog,
            fix.batt,
            fix.alarm,
        )
