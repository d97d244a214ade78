"""`homeward bench fences`: the zone engine against a per-point shapely loop, in one run.

10,000 elders with two zones each (a circle at home, a polygon a kilometre away) and
200,000 fixes wandering around their homes. Measured in checks/s (fix × zone of its elder):
(a) the engine's vectorised batch path with hysteresis, in memory; (b) a prepared-geometry
shapely loop, point by point, with the same hysteresis; (c) one set-based PostGIS query when
a PostgreSQL with the extension is reachable; (d) the whole ingest path (decode, store
script, zone state in Redis).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from geofences.batch import Fixes, ZoneStates, counting_mask, evaluate_batch, table_from
from geofences.engine import BUFFER_M, CONFIRMING_FIXES, Zone, ZoneState, evidence, step
from geofences.geometry import LocalFrame, project_geometry
from locator.bench.ingest import machine

HAINING = (30.5112, 120.6853)


@dataclass
class World:
    frames: list[LocalFrame]
    zones: list[list[Zone]]
    geojson: list[list[dict[str, object]]]
    elder: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    acc: np.ndarray
    low: np.ndarray


def build(elders: int, fixes: int, seed: int = 1) -> World:
    rng = np.random.default_rng(seed)
    frames, zones, geojson = [], [], []
    for e in range(elders):
        lat0 = HAINING[0] + rng.uniform(-0.1, 0.1)
        lon0 = HAINING[1] + rng.uniform(-0.1, 0.1)
        frame = LocalFrame(lat0, lon0)
        circle = {"type": "Point", "coordinates": [lon0, lat0]}
        d = 0.002
        plat, plon = lat0 + 0.009, lon0
        ring = [
            [plon - d, plat - d],
            [plon + d, plat - d],
            [plon + d, plat + d],
            [plon - d, plat + d],
            [plon - d, plat - d],
        ]
        polygon = {"type": "Polygon", "coordinates": [ring]}
        radius = float(rng.uniform(150, 300))
        frames.append(frame)
        zones.append(
            [
                Zone(f"z{2 * e + 1}", "safe", project_geometry(circle, frame, radius)),
                Zone(f"z{2 * e + 2}", "danger", project_geometry(polygon, frame, None)),
            ]
        )
        geojson.append(
            [
                {"geometry": circle, "properties": {"kind": "safe", "radius_m": radius}},
                {"geometry": polygon, "properties": {"kind": "danger"}},
            ]
        )
    elder = np.tile(np.arange(elders), fixes // elders + 1)[:fixes]
    lat0s = np.array([f.lat0 for f in frames])[elder]
    lon0s = np.array([f.lon0 for f in frames])[elder]
    # Mostly near home, sometimes far: enough on both sides of every boundary.
    distance = np.abs(rng.normal(0, 500, fixes))
    bearing = rng.uniform(0, 2 * np.pi, fixes)
    lat = lat0s + distance * np.cos(bearing) / 111_195
    lon = lon0s + distance * np.sin(bearing) / (111_195 * np.cos(np.radians(lat0s)))
    acc = rng.choice([5.0, 10.0, 20.0, 40.0, 80.0, 150.0], fixes)
    low = rng.random(fixes) < 0.05
    return World(frames, zones, geojson, elder, lat, lon, acc, low)


def run_batch(world: World, chunk: int = 10_000) -> float:
    """(a) checks/s of the vectorised engine, projection and hysteresis included."""
    table, index = table_from(world.zones)
    states = ZoneStates.fresh(len(table.elder))
    kx = np.array([f._kx for f in world.frames])
    ky = np.array([f._ky for f in world.frames])
    lat0 = np.array([f.lat0 for f in world.frames])
    lon0 = np.array([f.lon0 for f in world.frames])
    checks = 0
    started = time.perf_counter()
    for start in range(0, len(world.elder), chunk):
        sl = slice(start, start + chunk)
        e = world.elder[sl]
        fixes = Fixes(
            elder=e,
            x=(world.lon[sl] - lon0[e]) * kx[e],
            y=(world.lat[sl] - lat0[e]) * ky[e],
            acc=world.acc[sl],
            counting=counting_mask(world.acc[sl], world.low[sl]),
        )
        evaluate_batch(fixes, table, index, states)
        checks += 2 * len(e)
    return checks / (time.perf_counter() - started)


def run_loop(world: World, limit: int) -> float:
    """(b) checks/s of a prepared-geometry shapely loop, one point and one zone at a time."""
    geoms = []
    for e in range(len(world.frames)):
        pair: list[tuple[BaseGeometry, BaseGeometry]] = []
        for zone in world.zones[e]:
            area: BaseGeometry
            if zone.shape.circle is not None:
                cx, cy, r = zone.shape.circle
                area = shapely.Point(cx, cy).buffer(r, quad_segs=16)
            else:
                assert zone.shape.area is not None
                area = zone.shape.area
            shapely.prepare(area)
            pair.append((area, area.boundary))
        geoms.append(pair)
    states = [[ZoneState(), ZoneState()] for _ in world.frames]
    checks = 0
    started = time.perf_counter()
    for i in range(min(limit, len(world.elder))):
        e = int(world.elder[i])
        x, y = world.frames[e].xy(float(world.lat[i]), float(world.lon[i]))
        counting = not world.low[i] and world.acc[i] <= 100
        point = shapely.Point(float(x), float(y))
        for j, (area, boundary) in enumerate(geoms[e]):
            d = boundary.distance(point)
            signed = -d if area.contains(point) else d
            if counting:
                step(
                    states[e][j],
                    evidence(signed, float(world.acc[i]), BUFFER_M),
                    needed=CONFIRMING_FIXES,
                )
            checks += 1
    return checks / (time.perf_counter() - started)


def run_postgis(world: World, dsn: str) -> tuple[float | None, str]:
    """(c) checks/s of one set-based PostGIS query: signed distance of every (fix, zone) pair.

    Runs in a database of its own, created and dropped here, on a server given by ``dsn``.
    Geometries are in UTM 51N (metres, Haining's zone); circles are buffered polygons. Only
    the query is timed, and it stops at the signed distance: no hysteresis, which favours
    PostGIS.
    """
    try:
        import psycopg
    except ImportError:
        return None, "not run: psycopg is not installed"
    name = f"homeward_bench_{os.getpid()}"
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except Exception as exc:
        return None, f"not run: no PostgreSQL at {dsn} ({type(exc).__name__})"
    try:
        admin.execute(f"CREATE DATABASE {name}")  # name is ours: digits of our pid
        try:
            with psycopg.connect(dsn.rsplit("/", 1)[0] + f"/{name}") as conn:
                return _postgis_query(conn, world), "ran"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
    except Exception as exc:
        return None, f"not run: {type(exc).__name__}: {str(exc).strip()[:120]}"
    finally:
        admin.close()


def _postgis_query(conn: Any, world: World) -> float:
    conn.execute("CREATE EXTENSION postgis")
    conn.execute("CREATE TABLE zones_raw (elder int, zid int, geojson text, radius float8)")
    conn.execute("CREATE TABLE staging (seq int, elder int, lon float8, lat float8, acc float8)")
    with conn.cursor().copy("COPY zones_raw FROM STDIN") as copy:
        for e, pair in enumerate(world.geojson):
            for k, zone in enumerate(pair):
                properties: dict[str, Any] = zone["properties"]  # type: ignore[assignment]
                copy.write_row((e, k, json.dumps(zone["geometry"]), properties.get("radius_m")))
    conn.execute(
        "CREATE TABLE zones AS SELECT elder, zid, CASE WHEN radius IS NULL THEN utm"
        " ELSE ST_Buffer(utm, radius, 'quad_segs=16') END AS geom FROM ("
        "  SELECT elder, zid, radius,"
        "  ST_Transform(ST_SetSRID(ST_GeomFromGeoJSON(geojson), 4326), 32651) AS utm"
        "  FROM zones_raw) AS projected"
    )
    conn.execute("ALTER TABLE zones ADD COLUMN boundary geometry")
    conn.execute("UPDATE zones SET boundary = ST_Boundary(geom)")
    with conn.cursor().copy("COPY staging FROM STDIN") as copy:
        for i in range(len(world.elder)):
            row = (i, int(world.elder[i]), float(world.lon[i]), float(world.lat[i]))
            copy.write_row((*row, float(world.acc[i])))
    conn.execute(
        "CREATE TABLE fixes AS SELECT seq, elder, acc, "
        "ST_Transform(ST_SetSRID(ST_MakePoint(lon, lat), 4326), 32651) AS pt FROM staging"
    )
    conn.execute("CREATE INDEX ON zones (elder)")
    conn.execute("CREATE INDEX ON fixes (elder)")
    conn.execute("ANALYZE")
    started = time.perf_counter()
    # The evidence of each check is aggregated, so the planner must compute every distance
    # (a bare count(*) would let it skip them).
    outside, inside, rows = conn.execute(
        "SELECT count(*) FILTER (WHERE signed - acc > 20),"
        " count(*) FILTER (WHERE -signed - acc > 20), count(*) FROM ("
        " SELECT f.acc, CASE WHEN ST_Contains(z.geom, f.pt) THEN -ST_Distance(z.boundary, f.pt)"
        "             ELSE ST_Distance(z.geom, f.pt) END AS signed"
        " FROM fixes f JOIN zones z ON z.elder = f.elder) AS checks"
    ).fetchone()
    assert outside + inside <= rows
    return int(rows) / (time.perf_counter() - started)


def run_pipeline(elders: int, fixes: int, world: World) -> float:
    """(d) checks/s through the ingest's store with zone state in Redis, batches of 100."""
    from zoneinfo import ZoneInfo

    from devices.ingest.batch import Message
    from devices.ingest.pipeline import UplinkStore
    from geofences.evaluator import ZoneEvaluator
    from geofences.service import queue_store_zones
    from locator.bench.ingest import register_devices
    from locator.core.clock import SystemClock
    from locator.core.redis import sync_client
    from locator.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="homeward-fences-") as tmp:
        server = EmbeddedRedis(Path(tmp))
        url = server.start()
        try:
            asyncio.run(
                register_devices(
                    url, elders, home=lambda e: (world.frames[e].lat0, world.frames[e].lon0)
                )
            )
            client = sync_client(url, process="bench")
            pipe = client.pipeline(transaction=False)
            for e in range(elders):
                zones = {
                    f"z{2 * e + k + 1}": {"id": f"z{2 * e + k + 1}", **z}
                    for k, z in enumerate(world.geojson[e])
                }
                queue_store_zones(pipe, elder_id=e + 1, zones=zones)
            pipe.execute()
            ingest = UplinkStore(
                client,
                clock=SystemClock(),
                retention_s=30 * 86400,
                evaluator=ZoneEvaluator(client, timezone=ZoneInfo("Asia/Shanghai")),
            )
            base = time.time() - fixes
            messages = [
                Message(
                    f"homeward/devices/bench-{int(world.elder[i])}/up",
                    json.dumps(
                        {
                            "_type": "location",
                            "lat": float(world.lat[i]),
                            "lon": float(world.lon[i]),
                            "tst": base + i,
                            "acc": float(world.acc[i]),
                        }
                    ).encode(),
                    time.time(),
                )
                for i in range(fixes)
            ]
            started = time.perf_counter()
            for start in range(0, fixes, 100):
                ingest.process(messages[start : start + 100])
            rate = 2 * fixes / (time.perf_counter() - started)
            client.close()
            return rate
        finally:
            server.stop()


def run(
    *, elders: int, fixes: int, loop_fixes: int, pipeline_fixes: int, postgis_dsn: str | None
) -> str:
    world = build(elders, fixes)
    batch = run_batch(world)
    loop = run_loop(world, loop_fixes)
    postgis, note = run_postgis(world, postgis_dsn) if postgis_dsn else (None, "not run: no DSN")
    pipeline = run_pipeline(elders, pipeline_fixes, world)
    lines = [
        f"machine: {machine()}",
        f"elders: {elders:,} x 2 zones (circle + polygon)   fixes: {fixes:,}   "
        f"checks: {2 * fixes:,}",
        f"(a) engine batch path, hysteresis in memory: {batch:,.0f} checks/s",
        f"(b) prepared shapely loop, per point ({loop_fixes:,} fixes): {loop:,.0f} checks/s",
        f"    (a)/(b) = {batch / loop:.1f}x",
        (
            f"(c) PostGIS, one set-based query (no hysteresis): {postgis:,.0f} checks/s"
            f"   (a)/(c) = {batch / postgis:.1f}x"
            if postgis
            else f"(c) PostGIS: {note}"
        ),
        f"(d) whole ingest path with Redis zone state, batches of 100 "
        f"({pipeline_fixes:,} fixes): {pipeline:,.0f} checks/s",
    ]
    return "\n".join(lines)
