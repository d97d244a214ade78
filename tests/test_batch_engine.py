"""The vectorised batch path decides exactly what the per-fix engine decides."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from geofences.batch import (
    DANGER_ENTER,
    ENTER,
    EXIT,
    Fixes,
    ZoneStates,
    counting_mask,
    evaluate_batch,
    table_from,
)
from geofences.engine import FixInput, Zone, ZoneState, evaluate
from geofences.geometry import LocalFrame, project_geometry

KIND = {EXIT: "zone_exit", ENTER: "zone_enter", DANGER_ENTER: "danger_enter"}
NOON = datetime(2026, 11, 23, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def test_batch_matches_the_per_fix_engine_on_noisy_walks() -> None:
    rng = np.random.default_rng(7)
    elders = 40
    frames = [LocalFrame(30.5 + 0.01 * e, 120.6 + 0.01 * e) for e in range(elders)]
    zones_per_elder: list[list[Zone]] = []
    for e, frame in enumerate(frames):
        home = {"type": "Point", "coordinates": [frame.lon0, frame.lat0]}
        d = 0.003
        ring = [
            [frame.lon0 + d, frame.lat0 - d],
            [frame.lon0 + 3 * d, frame.lat0 - d],
            [frame.lon0 + 3 * d, frame.lat0 + d],
            [frame.lon0 + d, frame.lat0 + d],
            [frame.lon0 + d, frame.lat0 - d],
        ]
        # Drawn just now: the batch path assumes zones inside their first-learning grace or
        # already settled, and always on (no schedule, no pause).
        drawn = NOON.timestamp()
        zones_per_elder.append(
            [
                Zone(
                    f"c{e}", "safe", project_geometry(home, frame, 150 + 10 * (e % 5)), None, drawn
                ),
                Zone(
                    f"p{e}",
                    "danger" if e % 2 else "safe",
                    project_geometry({"type": "Polygon", "coordinates": [ring]}, frame, None),
                    None,
                    drawn,
                ),
            ]
        )
    # Interleaved fixes: each elder wanders out and back with GPS noise and some bad fixes.
    rows = []
    for step in range(60):
        for e in range(elders):
            radius = 400 * abs(np.sin(step / 10 + e))
            x = radius * np.cos(e) + rng.normal(0, 15)
            y = radius * np.sin(e) + rng.normal(0, 15)
            acc = float(rng.choice([8, 15, 30, 60, 150]))
            low = bool(rng.random() < 0.1)
            rows.append((e, x, y, acc, low))
    # Scalar engine, elder by elder in arrival order.
    expected = set()
    states: list[dict[str, ZoneState]] = [{} for _ in range(elders)]
    for i, (e, x, y, acc, low) in enumerate(rows):
        lat, lon = frames[e].latlon(x, y)
        result = evaluate(
            zones_per_elder[e],
            states[e],
            frames[e],
            FixInput(lat, lon, acc, low, None),
            local_time=NOON,
            paused=False,
        )
        states[e] = result.states
        expected |= {(i, t.zone_id, t.kind) for t in result.transitions}
    # Batch path, all at once.
    table, index = table_from(zones_per_elder)
    elder = np.array([r[0] for r in rows])
    acc = np.array([r[3] for r in rows])
    fixes = Fixes(
        elder=elder,
        x=np.array([r[1] for r in rows]),
        y=np.array([r[2] for r in rows]),
        acc=acc,
        counting=counting_mask(acc, np.array([r[4] for r in rows])),
    )
    got = {
        (
            i,
            zones_per_elder[int(table.elder[z])][int(z - index[int(table.elder[z])][0])].id,
            KIND[k],
        )
        for i, z, k in evaluate_batch(fixes, table, index, ZoneStates.fresh(len(table.elder)))
    }
    assert expected, "the walk produced no transitions: nothing was compared"
    assert got == expected
