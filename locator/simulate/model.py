"""A day of a bracelet around Haining's Xishan community (pure: seeded, no I/O, no clock).

Default noise model (what the `simulate` help text and README state):
- indoors: drift 20–80 m around home, claimed accuracy 20–60 m; Wi-Fi fixes (accuracy
  50–120 m, ``src: wifi``) about 10 % of the time;
- cell-only runs (500–2,500 m off, accuracy 800–2,000 m, ``src: cell``), 3 a day, 3–10 min;
- one-fix GPS jumps of 300 m–5 km claiming 10–30 m, about twice a day;
- stale repeats (the same fix and time sent again) on 1 % of fixes, out-of-order duplicates
  (an earlier fix sent again later) on 0.5 %;
- wandering episodes: 0.8–1.2 m/s, mostly straight with small turns, out for ≥ 20 min; the
  ground-truth exit time is when the true path crosses the safe circle.
Outdoors, GPS fixes are 5–15 m accurate with error of that size.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

XISHAN = (30.5100, 120.6800)
DAY_S = 86_400.0
M_PER_DEG_LAT = 111_195.0


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (
        lat + north_m / M_PER_DEG_LAT,
        lon + east_m / (M_PER_DEG_LAT * math.cos(math.radians(lat))),
    )


@dataclass
class Episode:
    """One wander: leaves home at ``start`` and walks for ``duration`` seconds."""

    start: float
    duration: float
    speed: float
    heading: float  # radians, 0 = north
    turns: list[float]  # heading change per minute of walking
    exit_time: float | None = None  # when the true path leaves the safe circle

    def position_m(self, t: float) -> tuple[float, float]:
        """(north, east) metres from home at time t (home before and after the walk)."""
        if t < self.start or t > self.start + self.duration:
            return 0.0, 0.0
        north = east = 0.0
        heading = self.heading
        elapsed = t - self.start
        minute = 0
        while elapsed > 0:
            step = min(60.0, elapsed)
            north += math.cos(heading) * self.speed * step
            east += math.sin(heading) * self.speed * step
            heading += self.turns[minute % len(self.turns)]
            elapsed -= step
            minute += 1
        return north, east


def plan_episode(rng: random.Random, day_start: float, safe_radius_m: float) -> Episode:
    start = day_start + rng.uniform(8 * 3600, 18 * 3600)
    episode = Episode(
        start=start,
        duration=rng.uniform(20 * 60, 60 * 60),
        speed=rng.uniform(0.8, 1.2),
        heading=rng.uniform(0, 2 * math.pi),
        turns=[rng.gauss(0, 0.08) for _ in range(120)],
    )
    # Ground truth, to the second: the first moment the path is beyond the safe circle.
    t = episode.start
    while t <= episode.start + episode.duration:
        north, east = episode.position_m(t)
        if math.hypot(north, east) > safe_radius_m:
            episode.exit_time = t
            break
        t += 1.0
    return episode


@dataclass
class Bracelet:
    """One simulated bracelet: reports on its interval, answers commands like the real one."""

    device_id: str
    home: tuple[float, float]
    rng: random.Random
    interval_s: float
    day_start: float
    episode: Episode | None = None
    cell_runs: list[tuple[float, float]] = field(default_factory=list)
    next_due: float = 0.0
    extra_due: float | None = None  # a reportLocation answer
    sent: list[dict[str, Any]] = field(default_factory=list)
    drift: tuple[float, float] = (0.0, 0.0)
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.next_due = self.day_start + self.rng.uniform(0, self.interval_s)
        self.cell_runs = []
        for _ in range(3):
            start = self.day_start + self.rng.uniform(0, DAY_S)
            self.cell_runs.append((start, start + self.rng.uniform(180, 600)))
        self._redraw_drift()

    def _redraw_drift(self) -> None:
        distance, bearing = self.rng.uniform(20, 80), self.rng.uniform(0, 2 * math.pi)
        self.drift = (distance * math.cos(bearing), distance * math.sin(bearing))

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def command(self, payload: dict[str, Any], now: float) -> None:
        """A downlink command: a fix within 10 s, or a new interval."""
        if payload.get("action") == "reportLocation":
            self.extra_due = now + self.rng.uniform(2, 10)
        elif payload.get("action") == "setInterval" and payload.get("seconds"):
            self.interval_s = float(payload["seconds"])
            self.next_due = min(self.next_due, now + self.interval_s)

    def due(self) -> float:
        return min(self.next_due, self.extra_due) if self.extra_due else self.next_due

    def emit(self) -> list[dict[str, Any]]:
        """The payloads sent at ``due()``; advances the schedule."""
        t = self.due()
        if self.extra_due is not None and self.extra_due <= self.next_due:
            self.extra_due = None
        else:
            self.next_due = t + self.interval_s
        out = [self._fix(t)]
        roll = self.rng.random()
        if roll < 0.01:
            out.append(dict(out[0]))  # a stale repeat: the same fix and time again
            self._count("stale_repeat")
        elif roll < 0.015 and len(self.sent) > 3:
            out.append(dict(self.sent[-3]))  # an out-of-order duplicate
            self._count("out_of_order_duplicate")
        self.sent.append(out[0])
        if len(self.sent) > 10:
            self.sent.pop(0)
        return out

    def _fix(self, t: float) -> dict[str, Any]:
        north, east = self.episode.position_m(t) if self.episode else (0.0, 0.0)
        outdoors = (north, east) != (0.0, 0.0)
        src = "gps"
        jumps_per_fix = 2 * self.interval_s / DAY_S
        if any(a <= t <= b for a, b in self.cell_runs):
            distance, bearing = self.rng.uniform(500, 2500), self.rng.uniform(0, 2 * math.pi)
            north += distance * math.cos(bearing)
            east += distance * math.sin(bearing)
            acc, src = self.rng.uniform(800, 2000), "cell"
            self._count("cell")
        elif self.rng.random() < jumps_per_fix:
            distance, bearing = self.rng.uniform(300, 5000), self.rng.uniform(0, 2 * math.pi)
            north += distance * math.cos(bearing)
            east += distance * math.sin(bearing)
            acc = self.rng.uniform(10, 30)
            self._count("jump")
        elif outdoors:
            acc = self.rng.uniform(5, 15)
            north += self.rng.gauss(0, acc / 2)
            east += self.rng.gauss(0, acc / 2)
        elif self.rng.random() < 0.10:
            acc, src = self.rng.uniform(50, 120), "wifi"
            north += self.drift[0] / 2 + self.rng.gauss(0, acc / 3)
            east += self.drift[1] / 2 + self.rng.gauss(0, acc / 3)
            self._count("wifi")
        else:
            if self.rng.random() < 0.05:
                self._redraw_drift()
            acc = self.rng.uniform(20, 60)
            north += self.drift[0]
            east += self.drift[1]
        lat, lon = offset(self.home[0], self.home[1], north, east)
        return {
            "_type": "location",
            "lat": round(lat, 7),
            "lon": round(lon, 7),
            "tst": round(t, 3),
            "acc": round(acc, 1),
            "src": src,
            "batt": 80,
        }


def elder_home(rng: random.Random) -> tuple[float, float]:
    """A home within about 1 km of Xishan community."""
    return offset(XISHAN[0], XISHAN[1], rng.uniform(-1000, 1000), rng.uniform(-1000, 1000))
