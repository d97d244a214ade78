"""Zones per elder: validated GeoJSON in, WGS-84 stored, GCJ-02/BD-09 out on request."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, timedelta
from typing import Any

import numpy as np
import redis.asyncio as aioredis
import shapely
from shapely.geometry import shape
from shapely.validation import explain_validity

from devices.elders import service as elders
from geofences import keys
from geofences.geometry import LocalFrame
from geofences.zones.schemas import (
    PauseBody,
    PauseRead,
    TransitionRead,
    ZoneFeature,
    ZoneRead,
)
from locator.core import crs as crs_mod
from locator.core import store
from locator.core.auth import Principal
from locator.core.clock import Clock, isoformat, ms_to_iso, parse_iso
from locator.core.errors import NotFound, Unprocessable
from locator.core.schemas import LatLon, Page

MIN_RADIUS_M = 100.0
QUIET_RADIUS_M = 150.0  # below this, indoor drift (20–80 m) makes a circle noisy
MAX_RADIUS_M = 5000.0
MAX_FROM_HOME_M = 20_000.0
MAX_VERTICES = 2000
MAX_PAUSE = timedelta(hours=24)
MAX_ZONES_PER_ELDER = 50
MIN_INSCRIBED_M = 5.0
QUIET_INSCRIBED_M = 50.0


def _inscribed_radius_m(area: Any, home: LatLon) -> float:
    """Radius of the largest circle inside the polygon, in metres."""
    frame = LocalFrame(home.lat, home.lon)
    metric = shapely.transform(area, lambda c: np.column_stack(frame.xy(c[:, 1], c[:, 0])))
    line = shapely.maximum_inscribed_circle(metric, tolerance=1.0)
    return float(line.length)


def _bad(loc: list[str | int], message: str) -> Unprocessable:
    return Unprocessable(loc, message)


def _position(value: Any, loc: list[str | int], system: crs_mod.Crs) -> list[float]:
    if (
        not isinstance(value, list)
        or len(value) < 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value[:2])
    ):
        raise _bad(loc, "a position is [lon, lat]")
    try:
        lon, lat = float(value[0]), float(value[1])
    except OverflowError:
        raise _bad(loc, "a position is [lon, lat] in degrees") from None
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise _bad(loc, "lon must be within ±180 and lat within ±90")
    wlat, wlon = crs_mod.to_wgs84(lat, lon, system)
    return [round(wlon, 7), round(wlat, 7)]


def _ring(value: Any, loc: list[str | int], system: crs_mod.Crs) -> list[list[float]]:
    if not isinstance(value, list) or len(value) < 4:
        raise _bad(loc, "a ring needs at least 4 positions (3 corners, closed)")
    ring = [_position(p, [*loc, i], system) for i, p in enumerate(value)]
    if ring[0] != ring[-1]:
        raise _bad(loc, "a ring must be closed: its last position repeats the first")
    return ring


def _polygon(value: Any, loc: list[str | int], system: crs_mod.Crs) -> list[list[list[float]]]:
    if not isinstance(value, list) or not value:
        raise _bad(loc, "a polygon is a list of rings")
    return [_ring(r, [*loc, i], system) for i, r in enumerate(value)]


def validate(
    feature: ZoneFeature, *, home: LatLon
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Geometry (WGS-84 GeoJSON) and properties as stored, and warnings; 422 on a problem."""
    props = feature.properties
    system: crs_mod.Crs = props.crs
    geom = feature.geometry
    loc: list[str | int] = ["geometry", "coordinates"]
    warnings: list[str] = []
    if geom.type == "Point":
        coordinates: Any = _position(geom.coordinates, loc, system)
        radius = props.radius_m
        if radius is None:
            raise _bad(["properties", "radius_m"], "a circle zone needs radius_m")
        if not MIN_RADIUS_M <= radius <= MAX_RADIUS_M:
            raise _bad(
                ["properties", "radius_m"],
                f"must be {MIN_RADIUS_M:.0f}..{MAX_RADIUS_M:.0f} m (indoor GPS drifts 20–80 m)",
            )
        if radius < QUIET_RADIUS_M:
            warnings.append(
                f"radius {radius:.0f} m is below {QUIET_RADIUS_M:.0f} m: indoor drift may "
                "look like leaving; 150 m is the smallest reliably quiet circle"
            )
        far = crs_mod.haversine_m(home.lat, home.lon, coordinates[1], coordinates[0]) + radius
    else:
        if props.radius_m is not None:
            raise _bad(["properties", "radius_m"], "only a Point zone has a radius")
        if geom.type == "Polygon":
            coordinates = _polygon(geom.coordinates, loc, system)
            rings = coordinates
        else:
            if not isinstance(geom.coordinates, list) or not geom.coordinates:
                raise _bad(loc, "a MultiPolygon is a list of polygons")
            coordinates = [_polygon(p, [*loc, i], system) for i, p in enumerate(geom.coordinates)]
            rings = [ring for polygon in coordinates for ring in polygon]
        vertices = [p for ring in rings for p in ring]
        if len(vertices) > MAX_VERTICES:
            raise _bad(loc, f"more than {MAX_VERTICES} vertices; simplify the drawing")
        area = shape({"type": geom.type, "coordinates": coordinates})
        if not area.is_valid:
            raise _bad(loc, f"invalid geometry: {explain_validity(area)}")
        if area.area == 0:
            raise _bad(loc, "the polygon has no area")
        narrowest = _inscribed_radius_m(area, home)
        if narrowest < MIN_INSCRIBED_M:
            raise _bad(loc, f"the zone is only {2 * narrowest:.0f} m across at its widest point")
        if narrowest < QUIET_INSCRIBED_M:
            warnings.append(
                f"the zone is only {2 * narrowest:.0f} m across: with fixes 20–50 m off, the "
                "engine cannot confirm she is inside it (it needs 20 m beyond the accuracy)"
            )
        far = max(crs_mod.haversine_m(home.lat, home.lon, lat, lon) for lon, lat in vertices)
    if far > MAX_FROM_HOME_M:
        raise _bad(loc, f"the zone reaches {far / 1000:.1f} km from home (at most 20 km)")
    properties: dict[str, Any] = {"kind": props.kind, "name": props.name}
    if geom.type == "Point":
        properties["radius_m"] = props.radius_m
    if props.schedule:
        properties["schedule"] = [w.model_dump() for w in props.schedule]
    return {"type": geom.type, "coordinates": coordinates}, properties, warnings


def _invalidate(pipe: Any, elder_id: int) -> None:
    """Zones or pause changed: bumping her state version, in the same transaction as the
    change, makes any zone update already in flight conflict (and be evaluated again)."""
    pipe.hincrby(keys.zone_state(elder_id), "v", 1)


async def _reload_caches(redis: aioredis.Redis) -> None:
    """The global version (another slot), bumped after her change: caches reload at once.

    A crash before it loses nothing: the store script refuses a cached copy of her zones
    older than her own version, and the evaluator then reloads her.
    """
    await redis.incr(keys.ZONES_VERSION)


def _display(geometry: dict[str, Any], system: crs_mod.Crs) -> dict[str, Any]:
    """Coordinates for a map drawn in ``system`` (AMap: gcj02, Baidu: bd09)."""
    if system == "wgs84":
        return geometry

    def convert(node: Any) -> Any:
        if node and isinstance(node[0], int | float):
            lat, lon = crs_mod.from_wgs84(node[1], node[0], system)
            return [round(lon, 7), round(lat, 7)]
        return [convert(child) for child in node]

    return {"type": geometry["type"], "coordinates": convert(geometry["coordinates"])}


def _read(
    doc: dict[str, Any], system: crs_mod.Crs = "wgs84", warnings: list[str] | None = None
) -> ZoneRead:
    properties = dict(doc["properties"])
    if system != "wgs84":
        properties["crs"] = system
    return ZoneRead(
        id=doc["id"],
        geometry=_display(doc["geometry"], system),
        properties=properties,
        warnings=warnings or [],
    )


async def create(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, feature: ZoneFeature, clock: Clock
) -> ZoneRead:
    """Draw a zone for an elder."""
    elder = await elders.authorize(redis, caller=caller, elder_id=elder_id, write=True)
    geometry, properties, warnings = validate(feature, home=LatLon.model_validate(elder["home"]))
    if await redis.hlen(keys.zones(elder_id)) >= MAX_ZONES_PER_ELDER:
        raise _bad(["geometry"], f"an elder has at most {MAX_ZONES_PER_ELDER} zones")
    zone_id = f"z{await store.next_id(redis, 'zone')}"
    doc = {
        "id": zone_id,
        "geometry": geometry,
        "properties": {**properties, "created_at": isoformat(clock.now())},
    }
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.zones(elder_id), zone_id, store.dump(doc))
        _invalidate(pipe, elder_id)
        await pipe.execute()
    await _reload_caches(redis)
    return _read(doc, warnings=warnings)


async def list_zones(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, system: crs_mod.Crs
) -> Page[ZoneRead]:
    """An elder's zones (all on one page: a family draws a handful)."""
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=False)
    raw: dict[str, str] = await redis.hgetall(keys.zones(elder_id))  # type: ignore[assignment]
    docs = sorted((json.loads(v) for v in raw.values()), key=lambda d: int(d["id"][1:]))
    return Page[ZoneRead](items=[_read(d, system) for d in docs], next=None)


async def get_zone(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, zone_id: str, system: crs_mod.Crs
) -> ZoneRead:
    """One zone."""
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=False)
    raw = store.text(await redis.hget(keys.zones(elder_id), zone_id))
    if raw is None:
        raise NotFound(f"zone {zone_id} not found for elder {elder_id}")
    return _read(json.loads(raw), system)


async def delete_zone(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, zone_id: str
) -> None:
    """Remove a zone and its state."""
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=True)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.zones(elder_id), zone_id)
        pipe.hdel(keys.zone_state(elder_id), zone_id)
        _invalidate(pipe, elder_id)
        removed, *_ = await pipe.execute()
    await _reload_caches(redis)
    if not removed:
        raise NotFound(f"zone {zone_id} not found for elder {elder_id}")


async def set_pause(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, body: PauseBody, clock: Clock
) -> PauseRead:
    """ "He is with me": no zone alarms until ``until`` (at most 24 h ahead)."""
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=True)
    until = body.until if body.until.tzinfo else body.until.replace(tzinfo=UTC)
    now = clock.now()
    if until <= now:
        raise _bad(["until"], "must be in the future")
    if until - now > MAX_PAUSE:
        raise _bad(["until"], "a pause lasts at most 24 hours")
    pause = PauseRead(until=isoformat(until), reason=body.reason, set_at=isoformat(now))
    async with redis.pipeline(transaction=True) as pipe:
        # No Redis expiry: "until" is compared with the fix time (the clock), not Redis time.
        pipe.set(keys.pause(elder_id), pause.model_dump_json())
        _invalidate(pipe, elder_id)
        await pipe.execute()
    await _reload_caches(redis)
    return pause


async def get_pause(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, clock: Clock
) -> PauseRead:
    """The pause in force, or 404."""
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=False)
    raw = store.text(await redis.get(keys.pause(elder_id)))
    pause = PauseRead.model_validate_json(raw) if raw else None
    if pause is None or parse_iso(pause.until) <= clock.now():
        raise NotFound(f"elder {elder_id} is not paused")
    return pause


async def end_pause(redis: aioredis.Redis, *, caller: Principal, elder_id: int) -> None:
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=True)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.pause(elder_id))
        _invalidate(pipe, elder_id)
        await pipe.execute()
    await _reload_caches(redis)


async def transitions(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, cursor: str | None, limit: int
) -> Page[TransitionRead]:
    """Zone transitions of an elder, newest first."""
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=False)
    limit = max(1, min(limit, store.MAX_PAGE))
    if cursor is not None and not re.fullmatch(r"\d+-\d+", cursor):
        raise Unprocessable(
            ["cursor"], "must be the `next` value of a previous page", where="query"
        )
    end = f"({cursor}" if cursor else "+"
    entries: list[tuple[str, dict[str, str]]] = await redis.xrevrange(  # type: ignore[assignment]
        keys.elder_transitions(elder_id), end, "-", count=limit + 1
    )
    next_cursor = entries[limit - 1][0] if len(entries) > limit else None
    items = [
        TransitionRead(
            id=entry_id,
            zone_id=f["zone_id"],
            kind=f["kind"],
            tst=ms_to_iso(float(f["tst"]) * 1000),
            at=LatLon(lat=float(f["lat"]), lon=float(f["lon"])),
            outside_all_safe=f.get("outside_all_safe") == "1",
        )
        for entry_id, f in entries[:limit]
    ]
    return Page[TransitionRead](items=items, next=next_cursor)
