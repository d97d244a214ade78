"""The Point Last Seen: the place and time an incident's search starts from, and why.

Searchers need both: rings grow with the time since she was last seen, not since someone
reported it. An incident stores its origin when it opens (the family's word, else her last
good bracelet fix and that fix's time, else her home at the report's time) and a sighting
replaces it; a good bracelet fix at least as new as the origin always wins (it is where she
was, measured). The same rule picks the centre later ladder steps page volunteers around.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis

from alerts import search_area as geo_area
from devices.telemetry.positions import LastPosition
from devices.telemetry.readers import read_position, recent_good_fixes
from locator.core.clock import isoformat
from locator.core.errors import NotFound, Unprocessable

# Why the origin's time is what it is (the rings grow from it).
Source = Literal["bracelet_fix", "family", "report", "sighting"]
# Where the origin's place came from.
Place = Literal["bracelet_fix", "family", "sighting", "unsure_fix", "home"]

# A time last seen further back than this is a typo or another episode: ask again.
MAX_AGE_S = 7 * 24 * 3600
# Phones and servers disagree by a little; a minute ahead is "now", not the future.
SKEW_S = 60.0


@dataclass(frozen=True, slots=True)
class Origin:
    lat: float
    lon: float
    time: float
    source: Source
    place: Place
    accuracy_m: float = 0.0

    def fields(self) -> dict[str, str]:
        """The incident hash fields that store this origin."""
        return {
            "origin_lat": repr(self.lat),
            "origin_lon": repr(self.lon),
            "origin_time": repr(self.time),
            "origin_source": self.source,
            "origin_place": self.place,
            "origin_acc": repr(self.accuracy_m),
        }

    def doc(self) -> dict[str, Any]:
        """The origin as answers show it (``time`` ISO-8601 UTC)."""
        return {
            "at": {"lat": self.lat, "lon": self.lon},
            "time": isoformat(datetime.fromtimestamp(self.time, tz=UTC)),
            "source": self.source,
            "place": self.place,
            "accuracy_m": self.accuracy_m,
        }


def check_time(seen_time: float, *, now: float, field: str) -> float:
    """422 naming ``field`` when the time is in the future or more than a week back."""
    if seen_time > now + SKEW_S:
        raise Unprocessable([field], "is in the future: when was she last seen?")
    if seen_time < now - MAX_AGE_S:
        raise Unprocessable([field], f"is more than {MAX_AGE_S // 86400} days ago: check the date")
    return min(seen_time, now)


def _good_fix(pos: LastPosition | None) -> Origin | None:
    if pos is None or pos.good is None:
        return None
    good = pos.good
    return Origin(good.lat, good.lon, good.tst, "bracelet_fix", "bracelet_fix", good.acc)


def opening(
    pos: LastPosition | None,
    *,
    at: tuple[float, float] | None,
    reported: bool,
    seen_time: float | None,
    home: tuple[float, float],
    now: float,
) -> Origin:
    """Where and when to start at open: a report's place/time, else her last good fix."""
    time_source: Source = "family" if seen_time is not None else "report"
    if at is not None and reported:
        return Origin(
            at[0], at[1], seen_time if seen_time is not None else now, time_source, "family"
        )
    fix = _good_fix(pos)
    if at is not None:
        # An alarm from the bracelet: its own fix, confirmed now.
        return Origin(at[0], at[1], seen_time or now, "bracelet_fix", "bracelet_fix")
    if fix is not None:
        if seen_time is None:
            return fix
        return Origin(fix.lat, fix.lon, seen_time, "family", "bracelet_fix", fix.accuracy_m)
    if pos is not None:
        return Origin(pos.lat, pos.lon, seen_time or now, time_source, "unsure_fix")
    return Origin(home[0], home[1], seen_time or now, time_source, "home")


def stored(fields: Mapping[str, str]) -> Origin | None:
    """The origin an incident stores (incidents opened before origins had times: at t0)."""
    if not fields.get("origin_lat"):
        return None
    source = fields.get("origin_source") or (
        "report" if fields.get("trigger") == "missing" else "bracelet_fix"
    )
    return Origin(
        float(fields["origin_lat"]),
        float(fields["origin_lon"]),
        float(fields.get("origin_time") or fields.get("t0") or 0.0),
        source,  # type: ignore[arg-type]
        fields.get("origin_place") or "bracelet_fix",  # type: ignore[arg-type]
        float(fields.get("origin_acc") or 0.0),
    )


def current(pos: LastPosition | None, fields: Mapping[str, str]) -> tuple[Origin | None, bool]:
    """The origin that holds now and whether it is her latest good fix (newest wins)."""
    fix = _good_fix(pos)
    origin = stored(fields)
    # An alarm's origin is the bracelet's own word, stamped when the alarm was confirmed
    # (after its fix was taken): her latest good fix is never older news than that.
    if fix is not None and (
        origin is None or origin.source == "bracelet_fix" or fix.time >= origin.time
    ):
        return fix, True
    return origin, False


def centre(client: redis.Redis, elder_id: int, fields: Mapping[str, str]) -> tuple[float, float]:
    """Where to look for volunteers now: the current origin (her home if nothing is known)."""
    origin, _ = current(read_position(client, elder_id=elder_id), fields)
    if origin is None:
        return 0.0, 0.0
    return origin.lat, origin.lon


def search_area(
    client: redis.Redis, *, now: float, elder_id: int, incident_id: int, fields: Mapping[str, str]
) -> dict[str, Any]:
    """Where to look now: the live fix while the bracelet reports, else rings from the origin."""
    pos = read_position(client, elder_id=elder_id)
    origin, fix_wins = current(pos, fields)
    if origin is None:
        raise NotFound(f"no position is known for incident {incident_id}")
    live = (
        fix_wins
        and pos is not None
        and bool(pos.received_ms)
        and pos.good is not None
        and pos.good.tst == pos.order_t
        and now - pos.received_ms / 1000 <= geo_area.LIVE_WITHIN_S
    )
    result = geo_area.area(
        lat=origin.lat,
        lon=origin.lon,
        accuracy_m=origin.accuracy_m,
        elapsed_s=now - origin.time,
        heading_deg=_heading(client, elder_id, pos)
        if fix_wins or origin.place == "bracelet_fix"
        else None,
        live=live,
        origin=origin.doc(),
    )
    result["properties"]["incident_id"] = incident_id
    result["properties"]["last_seen_at"] = origin.doc()["time"]
    return result


def _heading(client: redis.Redis, elder_id: int, pos: LastPosition | None) -> float | None:
    """Her last heading: the bracelet's course while moving, else her last two good fixes."""
    if pos is None:
        return None
    if pos.cog is not None and (pos.vel or 0) > 0:
        return pos.cog % 360
    if not pos.device_id:
        return None
    good = recent_good_fixes(client, elder_id=elder_id, device_id=pos.device_id)
    if len(good) < 2:
        return None
    return geo_area.heading_between(good[1][0], good[1][1], good[0][0], good[0][1])
