"""Accuracy-aware zone membership with hysteresis (pure: no Redis, no clock).

A fix is *evidence* for a side of a zone's boundary only when it is beyond the buffer even
after its claimed accuracy: outside when ``distance − accuracy > buffer``, inside when
``−distance − accuracy > buffer``. A zone's state flips only after ``N`` consecutive
counting fixes of evidence for the other side; a single fix never confirms, however
confident (a one-fix jump of kilometres with 5 m claimed accuracy is a known GPS failure).
Cell-only or > 100 m fixes do not count at all. SOS / fall / removed confirm at once.

What is *reported* is separate from what is *tracked*: a zone switched off by its schedule,
or an elder on pause ("he is with me"), keeps being tracked but reports nothing; when the
zone comes back on, the next fix re-evaluates and reports an exit only if she is outside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from geofences.geometry import LocalFrame, Shape
from geofences.schedule import is_active

BUFFER_M = 20.0
CONFIRMING_FIXES = 2
MAX_COUNTING_ACCURACY_M = 100.0
BYPASS_ALARMS = frozenset({"sos", "fall", "removed"})

Side = Literal["inside", "outside", "unknown"]
# "new": a zone just drawn, its first determination is silent (the family drawing a zone
# while out with her is not an alarm); None: was switched off or paused, report on return.
Reported = Literal["inside", "outside", "new"] | None


@dataclass(frozen=True, slots=True)
class Zone:
    id: str
    kind: Literal["safe", "danger"]
    shape: Shape
    schedule: list[dict[str, Any]] | None = None


@dataclass
class ZoneState:
    tracked: Side = "unknown"
    streak: int = 0
    streak_to: Side | None = None
    reported: Reported = "new"

    def to_json(self) -> dict[str, Any]:
        return {"t": self.tracked, "s": self.streak, "to": self.streak_to, "r": self.reported}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ZoneState:
        return cls(tracked=data["t"], streak=data["s"], streak_to=data["to"], reported=data["r"])


@dataclass(frozen=True, slots=True)
class FixInput:
    lat: float
    lon: float
    accuracy_m: float | None
    low_quality: bool
    alarm: str | None


@dataclass(frozen=True, slots=True)
class Transition:
    zone_id: str
    kind: Literal["zone_exit", "zone_enter", "danger_enter"]
    outside_all_safe: bool


@dataclass
class Evaluation:
    states: dict[str, ZoneState]
    transitions: list[Transition] = field(default_factory=list)
    changed: bool = False


def evidence(signed_distance_m: float, accuracy_m: float, buffer_m: float = BUFFER_M) -> Side:
    """Which side of the boundary a fix proves, if any."""
    if signed_distance_m - accuracy_m > buffer_m:
        return "outside"
    if -signed_distance_m - accuracy_m > buffer_m:
        return "inside"
    return "unknown"


def step(state: ZoneState, seen: Side, *, needed: int) -> bool:
    """Advance one zone's hysteresis with one counting fix; True if the tracked side flipped."""
    if seen == "unknown" or seen == state.tracked:
        state.streak, state.streak_to = 0, None
        return False
    if state.streak_to == seen:
        state.streak += 1
    else:
        state.streak, state.streak_to = 1, seen
    if state.streak >= needed:
        state.tracked, state.streak, state.streak_to = seen, 0, None
        return True
    return False


def evaluate(
    zones: list[Zone],
    states: dict[str, ZoneState],
    frame: LocalFrame,
    fix: FixInput,
    *,
    local_time: datetime,
    paused: bool,
) -> Evaluation:
    """One fix against an elder's zones: new states and the transitions to report."""
    new_states = {
        z.id: ZoneState(**vars(states[z.id])) if z.id in states else ZoneState() for z in zones
    }
    result = Evaluation(states=new_states)
    counting = (
        not fix.low_quality
        and fix.accuracy_m is not None
        and fix.accuracy_m <= MAX_COUNTING_ACCURACY_M
    )
    if counting and zones:
        x, y = frame.xy(fix.lat, fix.lon)
        needed = 1 if fix.alarm in BYPASS_ALARMS else CONFIRMING_FIXES
        for zone in zones:
            distance = zone.shape.signed_distance_one(float(x), float(y))
            before = vars(new_states[zone.id]).copy()
            step(new_states[zone.id], evidence(distance, fix.accuracy_m or 0.0), needed=needed)
            result.changed |= before != vars(new_states[zone.id])
    active = {z.id: is_active(z.schedule, local_time) and not paused for z in zones}
    safe_active = [z for z in zones if z.kind == "safe" and active[z.id]]
    outside_all_safe = bool(safe_active) and all(
        new_states[z.id].tracked == "outside" for z in safe_active
    )
    for zone in zones:
        state = new_states[zone.id]
        if not active[zone.id]:
            if state.reported not in (None, "new"):
                state.reported, result.changed = None, True
            continue
        if state.tracked == "unknown" or state.tracked == state.reported:
            continue
        previous, state.reported, result.changed = state.reported, state.tracked, True
        if previous == "new":
            continue  # a freshly drawn zone learns where she is without raising anything
        if zone.kind == "safe":
            kind: Literal["zone_exit", "zone_enter", "danger_enter"] | None = (
                "zone_exit" if state.tracked == "outside" else "zone_enter" if previous else None
            )
        else:
            kind = "danger_enter" if state.tracked == "inside" else None
        if kind is not None:
            result.transitions.append(Transition(zone.id, kind, outside_all_safe))
    return result
