"""Zone geometry in metres (pure): a local tangent plane per elder, signed distances.

Zones lie within 20 km of the elder's home, where an equirectangular projection centred on
home is off by well under 0.1 %: far below GPS error, and cheap enough to vectorise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon, shape

EARTH_RADIUS_M = 6_371_008.8
Floats = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class LocalFrame:
    """Metres east (x) and north (y) of an origin, for points near it."""

    lat0: float
    lon0: float

    @property
    def _kx(self) -> float:
        return math.radians(1) * EARTH_RADIUS_M * math.cos(math.radians(self.lat0))

    @property
    def _ky(self) -> float:
        return math.radians(1) * EARTH_RADIUS_M

    def xy(self, lat: Any, lon: Any) -> tuple[Any, Any]:
        return (np.asarray(lon) - self.lon0) * self._kx, (np.asarray(lat) - self.lat0) * self._ky

    def xy_one(self, lat: float, lon: float) -> tuple[float, float]:
        """``xy`` for one point in plain floats (the same arithmetic, no array allocation)."""
        return (lon - self.lon0) * self._kx, (lat - self.lat0) * self._ky

    def latlon(self, x: float, y: float) -> tuple[float, float]:
        return self.lat0 + y / self._ky, self.lon0 + x / self._kx


@dataclass(frozen=True, slots=True)
class Shape:
    """A zone's area in a local frame: a circle, or a (multi)polygon."""

    circle: tuple[float, float, float] | None = None  # centre x, centre y, radius (m)
    area: Polygon | MultiPolygon | None = None

    def signed_distance_one(self, x: float, y: float) -> float:
        """The scalar path the ingest takes per fix: no array allocation."""
        if self.circle is not None:
            cx, cy, r = self.circle
            return math.hypot(x - cx, y - cy) - r
        assert self.area is not None
        point = shapely.Point(x, y)
        to_boundary = float(shapely.distance(self.area.boundary, point))
        return -to_boundary if shapely.contains_xy(self.area, x, y) else to_boundary

    def signed_distance(self, xs: Floats, ys: Floats) -> Floats:
        """Metres to the boundary: negative inside, positive outside."""
        if self.circle is not None:
            cx, cy, r = self.circle
            result: Floats = np.hypot(xs - cx, ys - cy) - r
            return result
        assert self.area is not None
        points = shapely.points(xs, ys)
        to_boundary = shapely.distance(self.area.boundary, points)
        inside = shapely.contains_xy(self.area, xs, ys)
        signed: Floats = np.where(inside, -to_boundary, to_boundary)
        return signed


def project_geometry(geometry: dict[str, Any], frame: LocalFrame, radius_m: float | None) -> Shape:
    """A GeoJSON geometry (WGS-84) as a Shape in ``frame``."""
    if geometry["type"] == "Point":
        lon, lat = geometry["coordinates"][:2]
        x, y = frame.xy(lat, lon)
        assert radius_m is not None
        return Shape(circle=(float(x), float(y), float(radius_m)))
    projected = shapely.transform(
        shape(geometry), lambda coords: np.column_stack(frame.xy(coords[:, 1], coords[:, 0]))
    )
    shapely.prepare(projected)
    return Shape(area=projected)  # type: ignore[arg-type]
