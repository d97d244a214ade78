"""`homeward bench dispatch`: would the dispatch policy keep the 3/10 promise, at what density?

A month of simulated alarms is replayed over a district's geography — the real registry's
(volunteers' shared locations, on-duty flags, quiet hours, pairs, teams, elders' homes) or
the demo's district around Xishan by default — through the real dispatch ladder:
``alerts/escalation.py`` decides every step in simulated time (accept, decline, arrive, the
voice/respond/on-site steps, stand-downs, ``pick_nearest`` with quiet hours), and the bench
adds only what the service adds around it (who is near, teams at the respond step, the wide
ring at the on-site step) and how people behave.

The volunteer model (stated, not measured):
- a paged volunteer says yes with probability 17 % at 02:00 rising to 47 % at 14:00
  (a cosine over the day); of the others 35 % decline, the rest stay silent;
- reaction time (page → answer) is log-normal, median 75 s (p90 ≈ 3 min); the voice call
  at 90 s reaches a silent one, who says yes with half the hour's probability, ~25 s later;
- someone told "covered, stand by" before they answered does not come;
- after a yes: 30–120 s to set off, then 60 % ride an e-bike at 4–6 m/s, the rest walk at
  1.2 m/s, over 1.3 × the straight-line distance; on site within 100 m of her;
- volunteers are at home (their shared location); 40 % of the demo's keep quiet hours
  22:00–07:00 (nearby paging skips them; paired volunteers are paged regardless).
Alarms fall more often in the afternoon and evening (sundowning); she is 200 m from home.
Densities below the district's own drop unpaired volunteers first, then paired and team
members (their pairs with them); above it, extra unpaired volunteers are copied near
existing ones (within 200 m).
Every random draw is seeded per (alarm, volunteer), so each policy meets the same people
behaving the same way.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from datetime import time as dtime
from pathlib import Path
from typing import Any

import numpy as np

from alerts import escalation
from alerts.escalation import Candidate, Change, Policy, View
from alerts.reports import nearest_rank
from locator.bench.district import Geography, at_density, demo_geography

MONTH_S = 30 * 86_400
HORIZON_S = 3600.0  # an incident nobody reaches within an hour counts as "> 60 min"
DEFAULT_DENSITIES = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
POLICIES: dict[str, Policy] = {
    "paired only": Policy(nearby_count=0, nearby_radius_m=0.0),
    "paired + 3 within 1 km (today)": Policy(),
    "paired + 5 within 2 km": Policy(nearby_count=5, nearby_radius_m=2000.0),
    "over-alert 10 within 3 km, stand down": Policy(nearby_count=10, nearby_radius_m=3000.0),
}
# Alarm hour weights: sundowning makes late afternoon and evening the likeliest.
HOUR_WEIGHTS = [0.5] * 7 + [1.0] * 8 + [2.0] * 6 + [1.0] * 3


@dataclass(frozen=True, slots=True)
class Alarm:
    at: float  # seconds into the month, local time
    x: float
    y: float
    elder: int


@dataclass
class Outcome:
    respond_s: float = math.inf
    onsite_s: float = math.inf
    paged: int = 0


@dataclass
class Row:
    density: float
    volunteers: int
    paired: int
    policy: str
    outcomes: list[Outcome] = field(default_factory=list)

    def compliance(self, attr: str, limit: float) -> float:
        return (
            100.0 * sum(1 for o in self.outcomes if getattr(o, attr) <= limit) / len(self.outcomes)
        )

    def pct(self, attr: str, q: float) -> float:
        return nearest_rank([getattr(o, attr) for o in self.outcomes], q) or 0.0


@dataclass
class Result:
    geography: Geography
    alarms: int
    seed: int
    rows: list[Row]


# --- the people --------------------------------------------------------------------------
def answer_probability(hour: float) -> float:
    """A paged volunteer's chance of saying yes: 17 % at 02:00 to 47 % at 14:00."""
    return 0.17 + 0.30 * (1 + math.cos(2 * math.pi * (hour - 14) / 24)) / 2


@dataclass(frozen=True, slots=True)
class Plan:
    """How one volunteer reacts to one alarm, drawn once so every policy sees the same."""

    answer: str  # "yes" | "no" | "silent"
    react_s: float
    voice_yes: bool
    voice_react_s: float
    ready_s: float
    speed_mps: float


def plan_for(seed: int, alarm: int, vid: int, hour: float) -> Plan:
    rng = random.Random(f"{seed}:{alarm}:{vid}")
    p = answer_probability(hour)
    draw = rng.random()
    answer = "yes" if draw < p else "no" if draw < p + (1 - p) * 0.35 else "silent"
    return Plan(
        answer=answer,
        react_s=rng.lognormvariate(math.log(75.0), 0.7),
        voice_yes=rng.random() < p / 2,
        voice_react_s=rng.lognormvariate(math.log(25.0), 0.5),
        ready_s=rng.uniform(30.0, 120.0),
        speed_mps=rng.uniform(4.0, 6.0) if rng.random() < 0.6 else 1.2,
    )


def make_alarms(geo: Geography, *, count: int, seed: int) -> list[Alarm]:
    rng = random.Random(f"alarms:{seed}")
    out = []
    for _ in range(count):
        day, hour = rng.randrange(30), rng.choices(range(24), HOUR_WEIGHTS)[0]
        elder = rng.randrange(len(geo.homes))
        hx, hy = geo.homes[elder]
        angle = rng.uniform(0, 2 * math.pi)
        at = day * 86_400 + hour * 3600 + rng.uniform(0, 3600)
        out.append(Alarm(at, hx + 200 * math.sin(angle), hy + 200 * math.cos(angle), elder))
    out.sort(key=lambda a: a.at)
    return out


# --- one incident through the real ladder ------------------------------------------------
class Incident:
    """One alarm's incident in simulated time: escalation decides, the bench applies."""

    def __init__(self, geo: Geography, policy: Policy, alarm: Alarm, index: int, seed: int) -> None:
        self.geo, self.policy, self.alarm, self.index, self.seed = geo, policy, alarm, index, seed
        self.by_id = {v.id: v for v in geo.volunteers}
        xs = np.array([v.x for v in geo.volunteers])
        ys = np.array([v.y for v in geo.volunteers])
        dist = np.hypot(xs - alarm.x, ys - alarm.y) if len(xs) else np.array([])
        self.distance = {v.id: float(d) for v, d in zip(geo.volunteers, dist, strict=True)}
        reach = max(policy.nearby_radius_m, policy.wide_radius_m)
        self.candidates = [
            Candidate(v.id, self.distance[v.id], v.on_duty, v.quiet_hours)
            for v in geo.volunteers
            if self.distance[v.id] <= reach
        ]
        self.status, self.step = "open", "t0"
        self.responders: dict[int, dict[str, Any]] = {}
        self.acknowledged_at: float | None = None
        self.on_site_at: float | None = None
        self.events: list[tuple[float, int, str, int]] = []
        self.seq = 0
        self.token = 0
        self.plans: dict[int, Plan] = {}

    def _at(self, t: float, kind: str, arg: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, arg))

    def _local(self, t: float) -> dtime:
        s = int(self.alarm.at + t) % 86_400
        return dtime(s // 3600, s % 3600 // 60)

    def _plan(self, vid: int) -> Plan:
        if vid not in self.plans:
            hour = ((self.alarm.at % 86_400) / 3600.0) % 24
            self.plans[vid] = plan_for(self.seed, self.index, vid, hour)
        return self.plans[vid]

    def view(self) -> View:
        return View(
            status=self.status,
            responders={k: dict(v) for k, v in self.responders.items()},
            acknowledged_at=self.acknowledged_at,
            on_site_at=self.on_site_at,
            step=self.step,
            respond_deadline=float(self.policy.respond_s),
            onsite_deadline=float(self.policy.onsite_s),
        )

    def page(self, vid: int, now: float) -> None:
        if vid in self.responders:
            return
        self.responders[vid] = {"state": escalation.NOTIFIED, "notified_at": now}
        self._at(now + self._plan(vid).react_s, "answer", vid)

    def nearest(self, *, count: int, radius_m: float, now: float) -> list[int]:
        return escalation.pick_nearest(
            self.candidates,
            exclude=set(self.responders),
            count=count,
            local=self._local(now),
            radius_m=radius_m,
        )

    def apply(self, change: Change, now: float) -> None:
        """What commit.lua and the service's ``_people_for`` do with a decision."""
        if change.status:
            self.status = change.status
        self.acknowledged_at = change.fields.get("acknowledged_at", self.acknowledged_at)
        self.on_site_at = change.fields.get("on_site_at", self.on_site_at)
        self.step = change.fields.get("step", self.step)
        for vid, update in change.responders.items():
            before = self.responders.get(vid, {}).get("state")
            self.responders.setdefault(vid, {}).update(update)
            if update.get("state") == escalation.ACCEPTED and before != escalation.ACCEPTED:
                plan, dist = self._plan(vid), self.distance[vid]
                travel = max(0.0, dist * 1.3 - self.policy.onsite_distance_m) / plan.speed_mps
                self._at(now + plan.ready_s + travel, "arrive", vid)
        if change.more_nearby:
            radius = self.policy.nearby_radius_m
            for vid in self.nearest(count=change.more_nearby, radius_m=radius, now=now):
                self.page(vid, now)
        if change.ladder == "stop":
            self.token += 1
        elif change.ladder == "next":
            self.token += 1
            nxt = escalation.next_step(self.policy, status=self.status, after=self.step)
            if nxt is not None:
                self._at(float(nxt[1]), "step", self.token)

    def run_step(self, name: str, now: float) -> None:
        self.apply(escalation.run_step(self.view(), step=name), now)
        team = [v for v in self.geo.volunteers if v.team_role]
        if name == "voice":
            for vid, r in self.responders.items():
                plan = self._plan(vid)
                if r["state"] == escalation.NOTIFIED and plan.answer == "silent" and plan.voice_yes:
                    self._at(now + plan.voice_react_s, "voice_yes", vid)
        elif name == "respond":
            for v in team:
                self.page(v.id, now)
        elif name == "onsite":
            wide = self.policy.wide_radius_m
            for vid in self.nearest(count=self.policy.wide_count, radius_m=wide, now=now):
                self.page(vid, now)
            for v in team:
                if v.team_role == "lead":
                    self.page(v.id, now)

    def run(self) -> Outcome:
        paired = [vid for vid in self.geo.pairs[self.alarm.elder] if vid in self.by_id]
        for vid in paired:
            self.page(vid, 0.0)
        for vid in self.nearest(
            count=self.policy.nearby_count, radius_m=self.policy.nearby_radius_m, now=0.0
        ):
            self.page(vid, 0.0)
        self.apply(Change(ladder="next"), 0.0)
        while self.events and self.on_site_at is None:
            now, _, kind, arg = heapq.heappop(self.events)
            if now > HORIZON_S:
                break
            if kind == "step":
                if arg == self.token:  # a superseded step token is dropped, as in the ticker
                    nxt = escalation.next_step(self.policy, status=self.status, after=self.step)
                    if nxt is not None:
                        self.run_step(nxt[0], now)
                continue
            state = self.responders[arg]["state"]
            if kind in ("answer", "voice_yes") and state == escalation.NOTIFIED:
                yes = kind == "voice_yes" or self._plan(arg).answer == "yes"
                if yes:
                    self.apply(escalation.accept(self.view(), vid=arg, now=now), now)
                elif self._plan(arg).answer == "no":
                    self.apply(escalation.decline(self.view(), vid=arg), now)
            elif kind == "arrive" and state == escalation.ACCEPTED:
                self.apply(escalation.arrive(self.view(), vid=arg, now=now, how="location"), now)
        return Outcome(
            respond_s=self.acknowledged_at if self.acknowledged_at is not None else math.inf,
            onsite_s=self.on_site_at if self.on_site_at is not None else math.inf,
            paged=len(self.responders),
        )


# --- the bench ---------------------------------------------------------------------------
def run(
    *,
    alarms: int = 2000,
    densities: tuple[float, ...] = DEFAULT_DENSITIES,
    seed: int = 1,
    elders: int = 24,
    geography: Geography | None = None,
) -> Result:
    """Every policy over the same alarms at each density: a given district, else the demo's."""
    if geography is not None:
        base = geography
        densities = tuple(sorted({*densities, round(base.density, 2)}))
    else:
        base = demo_geography(elders=elders, density=max(densities), seed=seed)
    events = make_alarms(base, count=alarms, seed=seed)
    rows = []
    for density in densities:
        geo = at_density(base, density, seed)
        paired = len({vid for pair in geo.pairs for vid in pair})
        for name, policy in POLICIES.items():
            row = Row(density, len(geo.volunteers), paired, name)
            for index, alarm in enumerate(events):
                row.outcomes.append(Incident(geo, policy, alarm, index, seed).run())
            rows.append(row)
    return Result(base, alarms, seed, rows)


def _secs(value: float) -> str:
    return "> 60 min" if math.isinf(value) else f"{value:.0f} s"


def report(result: Result) -> str:
    """The table: per density, each policy's compliance, p50/p90 and people paged."""
    geo = result.geography
    lines = [
        f"district: {geo.name}, {geo.area_km2:.1f} km², {len(geo.homes)} elders, "
        f"{len(geo.volunteers)} volunteers ({geo.density:.1f}/km²)",
        f"alarms: {result.alarms} over 30 days, seed {result.seed}; the same alarms and "
        "people for every policy",
    ]
    head = (
        f"{'policy':40} {'respond<=3min':>13} {'onsite<=10min':>13} "
        f"{'respond p50/p90':>20} {'on-site p50/p90':>20} {'paged/alarm':>11}"
    )
    density = None
    for row in result.rows:
        if row.density != density:
            density = row.density
            lines += [
                "",
                f"density {row.density:g} volunteers/km² ({row.volunteers} volunteers, "
                f"{row.paired} paired)",
                head,
            ]
        paged = sum(o.paged for o in row.outcomes) / len(row.outcomes)
        respond = f"{_secs(row.pct('respond_s', 0.5))} / {_secs(row.pct('respond_s', 0.9))}"
        onsite = f"{_secs(row.pct('onsite_s', 0.5))} / {_secs(row.pct('onsite_s', 0.9))}"
        lines.append(
            f"{row.policy:40} {row.compliance('respond_s', 180):12.1f}% "
            f"{row.compliance('onsite_s', 600):12.1f}% {respond:>20} {onsite:>20} {paged:11.1f}"
        )
    return "\n".join(lines)


def plot(result: Result, path: Path) -> Path:
    """Compliance against volunteers per km², one line per policy (needs matplotlib)."""
    import matplotlib  # imported here: only this command needs it, and it is slow to load

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (attr, limit, title) in zip(
        axes,
        (("respond_s", 180, "respond ≤ 3 min"), ("onsite_s", 600, "on site ≤ 10 min")),
        strict=True,
    ):
        for name in POLICIES:
            rows = [r for r in result.rows if r.policy == name]
            ax.plot(
                [r.density for r in rows],
                [r.compliance(attr, limit) for r in rows],
                marker="o",
                label=name,
            )
        ax.set_xscale("log", base=2)
        ticks = sorted({r.density for r in result.rows})
        ax.set_xticks(ticks, [f"{d:g}" for d in ticks])
        ax.minorticks_off()
        ax.set_xlabel("volunteers per km²")
        ax.set_title(title)
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("% of alarms")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"{result.geography.name}: {result.alarms} simulated alarms/month (seed {result.seed})"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
