"""The districts `bench dispatch` replays alarms over: the demo's, the registry's, rescaled.

Coordinates are metres in a local frame (x east, y north). The demo's district is laid out
like `homeward demo` lays it out around Xishan (homes 100–1600 m from the centre, two paired
volunteers 300–1200 m from each home, a 5-person team within 800 m); the registry's is read
through its owners' readers (volunteers' shared locations, duty, quiet hours, teams, pairs,
elders' homes — nothing else of theirs is kept).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any

DEMO_RADIUS_M = 1800.0  # the demo scatters its volunteers this far from the centre


@dataclass(frozen=True, slots=True)
class Volunteer:
    id: int
    x: float  # metres east of the district's origin
    y: float
    on_duty: bool = True
    quiet_hours: dict[str, str] | None = None
    team_role: str | None = None  # "lead" | "member" for a rescue team's members


@dataclass
class Geography:
    """Where people live, in a local metric frame; pairs are volunteer ids per elder."""

    name: str
    area_km2: float
    homes: list[tuple[float, float]]
    pairs: list[list[int]]
    volunteers: list[Volunteer]

    @property
    def density(self) -> float:
        return len(self.volunteers) / self.area_km2


def _disc(rng: random.Random, low: float, high: float) -> tuple[float, float]:
    angle, dist = rng.uniform(0, 2 * math.pi), math.sqrt(rng.uniform(low**2, high**2))
    return dist * math.sin(angle), dist * math.cos(angle)


def demo_geography(*, elders: int, density: float, seed: int) -> Geography:
    """The demo's district at ``density``: homes 100–1600 m out, a 5-person team, pairs."""
    rng = random.Random(f"geo:{seed}")
    area = math.pi * (DEMO_RADIUS_M / 1000) ** 2
    count = max(6, round(density * area))
    people: list[Volunteer] = []
    for vid in range(1, count + 1):
        team = "lead" if vid == 1 else "member" if vid <= 5 else None
        x, y = _disc(rng, 0, 800 if team else DEMO_RADIUS_M)
        quiet = {"start": "22:00", "end": "07:00"} if not team and rng.random() < 0.4 else None
        people.append(Volunteer(vid, x, y, True, quiet, team))
    homes = [_disc(rng, 100, 1600) for _ in range(elders)]
    taken: set[int] = set()
    pairs: list[list[int]] = []
    for hx, hy in homes:  # like the demo: two volunteers 300–1200 m from her home
        near = [
            v.id
            for v in people
            if v.team_role is None
            and v.id not in taken
            and 300 <= math.hypot(v.x - hx, v.y - hy) <= 1200
        ]
        rng.shuffle(near)
        pairs.append(sorted(near[:2]))
        taken.update(near[:2])
    return Geography("demo district (Xishan, Haining)", area, homes, pairs, people)


def at_density(geo: Geography, density: float, seed: int) -> Geography:
    """The same district with ``density`` volunteers per km² (thinned, or copied nearby)."""
    rng = random.Random(f"density:{seed}:{density}")
    target = max(1, round(density * geo.area_km2))
    people = list(geo.volunteers)
    if target < len(people):
        # A programme pairs its volunteers and staffs its team first: the unattached go first.
        attached = {vid for pair in geo.pairs for vid in pair}
        loose = [v.id for v in people if v.id not in attached and not v.team_role]
        bound = [v.id for v in people if v.id in attached or v.team_role]
        rng.shuffle(loose)
        rng.shuffle(bound)
        keep = set((loose + bound)[len(people) - target :])
        people = [v for v in people if v.id in keep]
        pairs = [[vid for vid in pair if vid in keep] for pair in geo.pairs]
        return Geography(geo.name, geo.area_km2, geo.homes, pairs, people)
    next_id = max((v.id for v in people), default=0) + 1
    sources = [v for v in geo.volunteers if v.team_role is None] or geo.volunteers
    while len(people) < target and sources:
        src = rng.choice(sources)
        x, y = _disc(rng, 0, 200)
        people.append(replace(src, id=next_id, x=src.x + x, y=src.y + y, team_role=None))
        next_id += 1
    return Geography(geo.name, geo.area_km2, geo.homes, [list(p) for p in geo.pairs], people)


async def registry_geography(redis_url: str) -> Geography:
    """The live registry, through its owners' readers: only coordinates, duty and pairs kept."""
    from shapely.geometry import MultiPoint

    from alerts.responders import service as responders
    from devices.elders import service as elders
    from geofences.geometry import LocalFrame
    from locator.core.auth import Principal, Role
    from locator.core.redis import async_client

    client = async_client(redis_url, process="bench-dispatch")
    staff = Principal(Role.ADMIN, "bench-dispatch")
    try:
        found: list[Any] = []
        teams: dict[int, str] = {}
        homes_ll: list[tuple[float, float]] = []
        pair_ids: list[list[int]] = []
        cursor: str | None = None
        while True:
            page = await responders.list_volunteers(client, caller=staff, cursor=cursor, limit=200)
            found += [v for v in page.items if v.location is not None]
            if not (cursor := page.next):
                break
        cursor = None
        while True:
            tpage = await responders.list_teams(client, caller=staff, cursor=cursor, limit=200)
            for t in tpage.items:
                if t.on_duty:
                    for m in t.members:
                        teams.setdefault(m.volunteer_id, m.role)
            if not (cursor := tpage.next):
                break
        cursor = None
        while True:
            epage = await elders.list_page(client, caller=staff, cursor=cursor, limit=200)
            for e in epage.items:
                homes_ll.append((e.home.lat, e.home.lon))
                pair = await responders.get_pair(client, caller=staff, elder_id=e.id)
                pair_ids.append(pair.volunteer_ids or [])
            if not (cursor := epage.next):
                break
    finally:
        await client.aclose()
    if not found or not homes_ll:
        raise ValueError("the registry has no elders or no volunteers with a shared location")
    frame = LocalFrame(*homes_ll[0])
    people = []
    for v in found:
        assert v.location is not None
        x, y = frame.xy(v.location.lat, v.location.lon)
        quiet = v.quiet_hours.model_dump(mode="json") if v.quiet_hours else None
        people.append(Volunteer(v.id, float(x), float(y), v.on_duty, quiet, teams.get(v.id)))
    homes = [(float(x), float(y)) for x, y in (frame.xy(lat, lon) for lat, lon in homes_ll)]
    known = {v.id for v in people}
    pairs = [[vid for vid in p if vid in known] for p in pair_ids]
    hull = MultiPoint([(v.x, v.y) for v in people] + homes).convex_hull.buffer(500.0)
    return Geography("the registry", hull.area / 1e6, homes, pairs, people)
