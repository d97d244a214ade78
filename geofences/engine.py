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
# A zone drawn while the family is out with her learns where she is silently, but only for
# this long: after it, a first "outside" is an exit like any other.
NEW_ZONE_GRACE_S = 600.0

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
    created: float = 0.0  # epoch seconds the zone was drawn


@dataclass
class ZoneState:
    tracked: Side = "unknown"
    streak: int = 0
    streak_to: Side | None = None
    reported: Reported = "new"
    said: Side | None = None  # the last side a transition announced (survives pauses)

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.tracked,
            "s": self.streak,
            "to": self.streak_to,
            "r": self.reported,
            "said": self.said,
        }

    def fields(self) -> tuple[Side, int, Side | None, Reported, Side | None]:
        return (self.tracked, self.streak, self.streak_to, self.reported, self.said)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ZoneState:
        return cls(
            tracked=data["t"],
            streak=data["s"],
            streak_to=data["to"],
            reported=data["r"],
            said=data.get("said"),
        )


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
    # This counting fix puts her past the line of an active zone she is not yet confirmed on
    # the wrong side of: the moment to ask the bracelet for fixes fast.
    leaving: bool = False
    # Nothing here proves she is on the right side of every active zone she was last known
    # to be on the right side of (a cell fix, or one within buffer + accuracy of the line):
    # on a slow bracelet, the moment to ask for one more fix instead of waiting minutes.
    unsure: bool = False


def _copied(state: ZoneState | None) -> ZoneState:
    """A state to advance without touching the one the caller holds (a fresh one if none)."""
    if state is None:
        return ZoneState()
    return ZoneState(state.tracked, state.streak, state.streak_to, state.reported, state.said)


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
    new_states = {z.id: _copied(states.get(z.id)) for z in zones}
    result = Evaluation(states=new_states)
    counting = (
        not fix.low_quality
        and fix.accuracy_m is not None
        and fix.accuracy_m <= MAX_COUNTING_ACCURACY_M
    )
    seen: dict[str, Side] = {}
    beyond: dict[str, bool] = {}
    if counting and zones:
        x, y = frame.xy_one(fix.lat, fix.lon)
        needed = 1 if fix.alarm in BYPASS_ALARMS else CONFIRMING_FIXES
        for zone in zones:
            distance = zone.shape.signed_distance_one(x, y)
            seen[zone.id] = evidence(distance, fix.accuracy_m or 0.0)
            # Past the line at all (not yet beyond buffer + accuracy): worth fast fixes now,
            # so the two confirming fixes come 15 s apart instead of a base interval apart.
            beyond[zone.id] = distance > 0 if zone.kind == "safe" else distance < 0
            state = new_states[zone.id]
            before = state.fields()
            step(state, seen[zone.id], needed=needed)
            result.changed |= before != state.fields()
    now = local_time.timestamp()
    active = {z.id: is_active(z.schedule, local_time) and not paused for z in zones}
    safe_active = [z for z in zones if z.kind == "safe" and active[z.id]]
    outside_all_safe = bool(safe_active) and all(
        new_states[z.id].tracked != "inside" for z in safe_active
    )
    for zone in zones:
        wrong_side = "outside" if zone.kind == "safe" else "inside"
        right_side = "inside" if zone.kind == "safe" else "outside"
        prior = states.get(zone.id)
        was_right = (prior.tracked if prior is not None else "unknown") != wrong_side
        if active[zone.id] and beyond.get(zone.id):
            result.leaving |= was_right
        if active[zone.id] and was_right and seen.get(zone.id) != right_side:
            result.unsure = True
    for zone in zones:
        state = new_states[zone.id]
        if not active[zone.id]:
            if state.reported not in (None, "new"):
                state.reported, result.changed = None, True
            continue
        if state.reported == "new" and now - zone.created > NEW_ZONE_GRACE_S:
            state.reported, result.changed = None, True
        if state.tracked == "unknown" or state.tracked == state.reported:
            continue
        previous = state.reported
        if previous is None and seen.get(zone.id) != state.tracked:
            # Back from a pause or a closed window: speak only on a fix that itself shows
            # where she is now, not on a side recorded hours ago.
            continue
        state.reported, result.changed = state.tracked, True
        if previous == "new":
            continue  # a freshly drawn zone learns where she is without raising anything
        kind = _transition(zone.kind, state.tracked, previous, state.said)
        if kind is not None:
            state.said = state.tracked
            result.transitions.append(Transition(zone.id, kind, outside_all_safe))
    return result


def _transition(
    kind: str, side: Side, previous: Reported, said: Side | None
) -> Literal["zone_exit", "zone_enter", "danger_enter"] | None:
    if kind == "danger":
        return "danger_enter" if side == "inside" else None
    if side == "outside":
        return "zone_exit"
    # Inside a safe zone: news only if her exit was announced (now or before a pause).
    return "zone_enter" if said == "outside" else None
