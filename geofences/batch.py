"""Zone evaluation for a whole batch of fixes at once (pure, numpy + vectorised shapely).

Same rules as ``engine.evaluate`` for zones that are on (no schedule window closed, no
pause): evidence beyond buffer + accuracy, N consecutive counting fixes to flip, a new
zone's first determination silent. Distances for every (fix, zone of its elder) pair are
computed in one pass — numpy for circles, shapely's array functions for polygons — and the
hysteresis then runs in *rounds*: the k-th fix of every elder in round k, all elders at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray

from geofences.engine import BUFFER_M, CONFIRMING_FIXES, MAX_COUNTING_ACCURACY_M, Zone

UNKNOWN, INSIDE, OUTSIDE = 0, 1, 2
NEW = 3  # reported: a zone that has not said anything yet
EXIT, ENTER, DANGER_ENTER = 1, 2, 3


@dataclass
class ZoneTable:
    """Every zone of every elder, flattened; geometry in each elder's local frame (metres)."""

    elder: NDArray[np.int64]  # elder index of each zone
    danger: NDArray[np.bool_]
    is_circle: NDArray[np.bool_]
    cx: NDArray[np.float64]
    cy: NDArray[np.float64]
    r: NDArray[np.float64]
    polygons: NDArray[np.object_]  # shapely geometries (None for circles), prepared
    boundaries: NDArray[np.object_]


@dataclass
class ZoneStates:
    tracked: NDArray[np.int8]
    streak: NDArray[np.int16]
    streak_to: NDArray[np.int8]
    reported: NDArray[np.int8]
    said: NDArray[np.int8]

    @classmethod
    def fresh(cls, zones: int) -> ZoneStates:
        return cls(
            tracked=np.zeros(zones, np.int8),
            streak=np.zeros(zones, np.int16),
            streak_to=np.zeros(zones, np.int8),
            reported=np.full(zones, NEW, np.int8),
            said=np.zeros(zones, np.int8),
        )


@dataclass
class Fixes:
    """A batch in arrival order; x/y already in the fix's elder's frame."""

    elder: NDArray[np.int64]
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    acc: NDArray[np.float64]
    counting: NDArray[np.bool_]


def pairs(
    fixes: Fixes, zones: ZoneTable, zones_of_elder: list[NDArray[np.int64]]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every (fix, zone) check of the batch."""
    counts = np.array([len(zones_of_elder[e]) for e in fixes.elder], dtype=np.int64)
    fix_index = np.repeat(np.arange(len(fixes.elder)), counts)
    zone_index = (
        np.concatenate([zones_of_elder[e] for e in fixes.elder])
        if len(fixes.elder)
        else np.zeros(0, np.int64)
    )
    return fix_index, zone_index.astype(np.int64)


def signed_distances(
    fixes: Fixes, zones: ZoneTable, fix_index: NDArray[np.int64], zone_index: NDArray[np.int64]
) -> NDArray[np.float64]:
    x, y = fixes.x[fix_index], fixes.y[fix_index]
    out = np.empty(len(fix_index))
    circle = zones.is_circle[zone_index]
    zc = zone_index[circle]
    out[circle] = np.hypot(x[circle] - zones.cx[zc], y[circle] - zones.cy[zc]) - zones.r[zc]
    poly = ~circle
    if poly.any():
        zp = zone_index[poly]
        points = shapely.points(x[poly], y[poly])
        to_boundary = shapely.distance(zones.boundaries[zp], points)
        inside = shapely.contains(zones.polygons[zp], points)
        out[poly] = np.where(inside, -to_boundary, to_boundary)
    return out


def evaluate_batch(
    fixes: Fixes, zones: ZoneTable, zones_of_elder: list[NDArray[np.int64]], states: ZoneStates
) -> list[tuple[int, int, int]]:
    """Advance ``states`` in place over the batch; returns (fix, zone, transition) triples."""
    fix_index, zone_index = pairs(fixes, zones, zones_of_elder)
    distance = signed_distances(fixes, zones, fix_index, zone_index)
    acc = fixes.acc[fix_index]
    seen = np.where(
        distance - acc > BUFFER_M, OUTSIDE, np.where(-distance - acc > BUFFER_M, INSIDE, UNKNOWN)
    ).astype(np.int8)
    counting = fixes.counting[fix_index]
    # Round k holds the k-th check of each zone in arrival order.
    order = np.argsort(zone_index, kind="stable")
    sorted_zones = zone_index[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_zones)) + 1]
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    transitions: list[tuple[int, int, int]] = []
    for k in range(int(rank.max()) + 1 if len(rank) else 0):
        sel = np.flatnonzero(rank == k)
        z, s, c = zone_index[sel], seen[sel], counting[sel]
        tracked, streak, streak_to = states.tracked[z], states.streak[z], states.streak_to[z]
        reset = c & ((s == UNKNOWN) | (s == tracked))
        grow = c & ~reset & (streak_to == s)
        start = c & ~reset & (streak_to != s)
        streak = np.where(reset, 0, np.where(grow, streak + 1, np.where(start, 1, streak))).astype(
            np.int16
        )
        streak_to = np.where(reset, 0, np.where(grow | start, s, streak_to)).astype(np.int8)
        flip = c & ~reset & (streak >= CONFIRMING_FIXES)
        tracked = np.where(flip, s, tracked).astype(np.int8)
        streak = np.where(flip, 0, streak).astype(np.int16)
        streak_to = np.where(flip, 0, streak_to).astype(np.int8)
        states.tracked[z], states.streak[z], states.streak_to[z] = tracked, streak, streak_to
        reported = states.reported[z]
        report = (tracked != UNKNOWN) & (tracked != reported)
        silent = report & (reported == NEW)
        danger = zones.danger[z]
        said = states.said[z]
        kind = np.where(
            danger,
            np.where(tracked == INSIDE, DANGER_ENTER, 0),
            np.where(tracked == OUTSIDE, EXIT, np.where(said == OUTSIDE, ENTER, 0)),
        )
        emit = report & ~silent & (kind != 0)
        states.reported[z] = np.where(report, tracked, reported)
        states.said[z] = np.where(emit, tracked, said)
        for i in np.flatnonzero(emit):
            transitions.append((int(fix_index[sel[i]]), int(z[i]), int(kind[i])))
    return transitions


def counting_mask(acc: NDArray[np.float64], low_quality: NDArray[np.bool_]) -> NDArray[np.bool_]:
    result: NDArray[np.bool_] = ~low_quality & (acc <= MAX_COUNTING_ACCURACY_M)
    return result


def table_from(zones_per_elder: list[list[Zone]]) -> tuple[ZoneTable, list[NDArray[np.int64]]]:
    """Flatten engine zones (one list per elder index) into a ZoneTable."""
    flat = [(e, z) for e, zones in enumerate(zones_per_elder) for z in zones]
    n = len(flat)
    table = ZoneTable(
        elder=np.array([e for e, _ in flat], dtype=np.int64),
        danger=np.array([z.kind == "danger" for _, z in flat], dtype=bool),
        is_circle=np.array([z.shape.circle is not None for _, z in flat], dtype=bool),
        cx=np.array([z.shape.circle[0] if z.shape.circle else 0.0 for _, z in flat]),
        cy=np.array([z.shape.circle[1] if z.shape.circle else 0.0 for _, z in flat]),
        r=np.array([z.shape.circle[2] if z.shape.circle else 0.0 for _, z in flat]),
        polygons=np.array([z.shape.area for _, z in flat] + [None], dtype=object)[:n],
        boundaries=np.array(
            [z.shape.area.boundary if z.shape.area is not None else None for _, z in flat] + [None],
            dtype=object,
        )[:n],
    )
    shapely.prepare(table.polygons[~table.is_circle])
    index: list[NDArray[np.int64]] = [np.zeros(0, np.int64) for _ in zones_per_elder]
    start = 0
    for e, zones in enumerate(zones_per_elder):
        index[e] = np.arange(start, start + len(zones), dtype=np.int64)
        start += len(zones)
    return table, index
