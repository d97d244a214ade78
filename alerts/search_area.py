"""Probable search area from the Point Last Seen and the time since (pure).

People with dementia found on foot (Grampian 2007): 50% within 0.7 km of where they were
last seen, 70% 1.2 km, 80% 2.0 km, 90% 3.7 km, 95% 5.8 km. Nobody walks further than time
allows, so each ring's radius is the study's distance capped by a brisk 1.2 m/s walk since
she was last seen (0.8 m/s is the typical pace: the "likely" core). They tend to go
straight until they get stuck, so rings are pushed forward along the last heading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from geofences.geometry import LocalFrame

FAST_MPS = 1.2
TYPICAL_MPS = 0.8
GRAMPIAN_M: tuple[tuple[float, float], ...] = (
    (0.50, 700.0),
    (0.70, 1200.0),
    (0.80, 2000.0),
    (0.90, 3700.0),
    (0.95, 5800.0),
)
# How far a ring's centre moves ahead along the heading, as a share of its radius: the last
# fix stays well inside every ring, the far side reaches further where she was heading.
SKEW = 0.35
# A bracelet heard from this recently is still reporting: show where it is, not a guess.
LIVE_WITHIN_S = 180.0
VERTICES = 48


@dataclass(frozen=True, slots=True)
class Ring:
    probability: float
    radius_m: float
    capped_by: str  # "walking" (time) or "study" (the Grampian distance)


def rings(elapsed_s: float, *, accuracy_m: float = 0.0) -> list[Ring]:
    """The rings at ``elapsed_s`` after the last good fix (radius includes its accuracy)."""
    reach = FAST_MPS * max(0.0, elapsed_s)
    out = []
    for probability, study in GRAMPIAN_M:
        capped = "study" if study <= reach else "walking"
        out.append(Ring(probability, round(min(study, reach) + accuracy_m, 1), capped))
    return out


def typical_reach_m(elapsed_s: float) -> float:
    return round(TYPICAL_MPS * max(0.0, elapsed_s), 1)


def heading_between(lat1: float, lon1: float, lat2: float, lon2: float) -> float | None:
    """Compass bearing from the first point to the second (None when they coincide)."""
    frame = LocalFrame(lat1, lon1)
    x, y = frame.xy(lat2, lon2)
    if math.hypot(float(x), float(y)) < 5.0:
        return None
    return math.degrees(math.atan2(float(x), float(y))) % 360


def _circle(frame: LocalFrame, cx: float, cy: float, radius: float) -> list[list[float]]:
    ring = []
    for k in range(VERTICES + 1):
        angle = 2 * math.pi * (k % VERTICES) / VERTICES
        lat, lon = frame.latlon(cx + radius * math.sin(angle), cy + radius * math.cos(angle))
        ring.append([round(lon, 7), round(lat, 7)])
    return ring


def area(
    *,
    lat: float,
    lon: float,
    accuracy_m: float,
    elapsed_s: float,
    heading_deg: float | None,
    live: bool,
    origin: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection: the point last seen, then rings from most to least likely.

    ``origin`` (which place and time the area starts from, and why) is carried in the
    collection's properties so every reader can say "last seen … ago at …".
    """
    frame = LocalFrame(lat, lon)
    seen = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {
            "kind": "live" if live else "last_seen",
            "accuracy_m": accuracy_m,
            "elapsed_s": round(elapsed_s, 1),
        },
    }
    features: list[dict[str, Any]] = [seen]
    if live:
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [_circle(frame, 0, 0, max(accuracy_m, 10.0))],
                },
                "properties": {
                    "kind": "live_accuracy",
                    "radius_m": max(accuracy_m, 10.0),
                    "probability": 0.68,
                },
            }
        )
        return {
            "type": "FeatureCollection",
            "features": features,
            "properties": {"mode": "live", "elapsed_s": round(elapsed_s, 1), "origin": origin},
        }
    for ring in rings(elapsed_s, accuracy_m=accuracy_m):
        shift = SKEW * ring.radius_m if heading_deg is not None else 0.0
        theta = math.radians(heading_deg or 0.0)
        cx, cy = shift * math.sin(theta), shift * math.cos(theta)
        centre_lat, centre_lon = frame.latlon(cx, cy)
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [_circle(frame, cx, cy, max(ring.radius_m, 1.0))],
                },
                "properties": {
                    "kind": "ring",
                    "probability": ring.probability,
                    "radius_m": ring.radius_m,
                    "capped_by": ring.capped_by,
                    "center": {"lat": round(centre_lat, 7), "lon": round(centre_lon, 7)},
                    "shift_m": round(shift, 1),
                },
            }
        )
    return {
        "type": "FeatureCollection",
        "features": features,
        "properties": {
            "mode": "estimate",
            "elapsed_s": round(elapsed_s, 1),
            "heading_deg": None if heading_deg is None else round(heading_deg, 1),
            "typical_reach_m": typical_reach_m(elapsed_s),
            "fast_reach_m": round(FAST_MPS * max(0.0, elapsed_s), 1),
            "origin": origin,
        },
    }
