"""The incident state machine and the dispatch ladder, as pure functions (no I/O).

An incident's policy is snapshotted when it opens; every later decision reads the
snapshot, so editing the policy never changes a running incident. Decisions are values
(``Change``): the alerts service applies one atomically, conditioned on the incident's
version and, for timer steps, on the step token (a stale token means the step was
superseded, so it is dropped and nobody is paged twice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from typing import Any, Literal

Status = Literal["open", "acknowledged", "on_site", "resolved", "cancelled"]
ACTIVE: frozenset[str] = frozenset({"open", "acknowledged", "on_site"})
Outcome = Literal[
    "found_safe", "returned_home", "found_injured", "handed_to_police", "false_alarm", "other"
]
OUTCOMES: tuple[str, ...] = (
    "found_safe",
    "returned_home",
    "found_injured",
    "handed_to_police",
    "false_alarm",
    "other",
)

# A responder's state on one incident.
NOTIFIED, ACCEPTED, DECLINED, WITHDRAWN, ARRIVED, STOOD_DOWN = (
    "notified",
    "accepted",
    "declined",
    "withdrawn",
    "arrived",
    "stood_down",
)
ENGAGED = frozenset({ACCEPTED, ARRIVED})
# Who may still say yes: a volunteer told "covered, stand by" may still come and help.
MAY_ACCEPT = frozenset({NOTIFIED, DECLINED, WITHDRAWN, STOOD_DOWN})

# Timer steps after t0, in order: (name, which deadline, statuses in which it still runs).
STEPS: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("voice", "voice_after_s", frozenset({"open"})),
    ("respond", "respond_s", frozenset({"open"})),
    ("onsite", "onsite_s", frozenset({"open", "acknowledged"})),
)


@dataclass(frozen=True, slots=True)
class Policy:
    """The dispatch ladder's numbers, copied onto each incident when it opens."""

    respond_s: int = 180
    onsite_s: int = 600
    voice_after_s: int = 90
    nearby_radius_m: float = 1000.0
    nearby_count: int = 3
    wide_radius_m: float = 3000.0
    wide_count: int = 10
    # Accepting, moving, and ending up this close (plus the fix's accuracy) means on site.
    onsite_distance_m: float = 100.0

    def to_json(self) -> dict[str, Any]:
        return {
            "respond_s": self.respond_s,
            "onsite_s": self.onsite_s,
            "voice_after_s": self.voice_after_s,
            "nearby_radius_m": self.nearby_radius_m,
            "nearby_count": self.nearby_count,
            "wide_radius_m": self.wide_radius_m,
            "wide_count": self.wide_count,
            "onsite_distance_m": self.onsite_distance_m,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def offset(self, deadline: str) -> int:
        return int(getattr(self, deadline))


def next_step(policy: Policy, *, status: str, after: str | None) -> tuple[str, int] | None:
    """The next ladder step (name, seconds after t0) that still applies, after step ``after``."""
    names = [name for name, _, _ in STEPS]
    start = 0 if after is None or after == "t0" else names.index(after) + 1
    for name, deadline, statuses in STEPS[start:]:
        if status in statuses:
            return name, policy.offset(deadline)
    return None


# --- choosing people ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Candidate:
    """A volunteer near the elder, as found in the shared-location index."""

    volunteer_id: int
    distance_m: float
    on_duty: bool
    quiet_hours: dict[str, str] | None = None


def in_quiet_hours(quiet: dict[str, str] | None, local: time) -> bool:
    """Whether a local time falls in a daily ``{"start","end"}`` window (may cross midnight)."""
    if not quiet:
        return False
    start = time.fromisoformat(quiet["start"])
    end = time.fromisoformat(quiet["end"])
    if start < end:
        return start <= local < end
    return local >= start or local < end


def pick_nearest(
    candidates: list[Candidate], *, exclude: set[int], count: int, local: time, radius_m: float
) -> list[int]:
    """The ``count`` nearest on-duty volunteers within ``radius_m``, outside quiet hours."""
    usable = [
        c
        for c in candidates
        if c.volunteer_id not in exclude
        and c.on_duty
        and c.distance_m <= radius_m
        and not in_quiet_hours(c.quiet_hours, local)
    ]
    usable.sort(key=lambda c: (c.distance_m, c.volunteer_id))
    return [c.volunteer_id for c in usable[:count]]


# --- the decision value ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Notice:
    """Someone to tell something: ``recipient`` is ``volunteer:<id>``, ``guardian:<i>``, ..."""

    recipient: str
    template: str
    # What makes it a distinct message for one recipient (defaults to the template): the
    # attempt id is (step, recipient, channel), so a repeat with the same step is dropped.
    step: str = ""
    channel: str | None = None  # start the channel chain here (the voice step)


@dataclass
class Change:
    """What one decision does to an incident; applied in one atomic script."""

    status: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    responders: dict[int, dict[str, Any]] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    # How many more nearby volunteers to page now (a decline or withdraw, by the service).
    more_nearby: int = 0
    # A dispatcher calls the rescue team (and the on-call roster) now, before the deadline.
    page_team: bool = False
    # The ladder: "keep" leaves the scheduled step alone; "stop" cancels it; "next" schedules
    # the first step after the last one that ran that still applies in the new status.
    ladder: Literal["keep", "stop", "next"] = "keep"


class InvalidTransition(Exception):
    """The action does not apply in the incident's current state (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class View:
    """What a decision needs to know about an incident."""

    status: str
    responders: dict[int, dict[str, Any]]
    acknowledged_at: float | None = None
    on_site_at: float | None = None
    step: str | None = None
    respond_deadline: float | None = None
    onsite_deadline: float | None = None


def dispatcher_pages(view: View, *, more: int, team: bool) -> Change:
    """A dispatcher asks for more people now: that many more nearby, and/or the team."""
    _require_active(view, "page more people for")
    change = Change(more_nearby=more, page_team=team)
    # A dispatcher working the incident makes it live again: a later alarm joins it rather
    # than closing it as "returned home".
    change.fields["suggested_outcome"] = ""
    change.timeline.append({"type": "dispatcher_paged", "more": more, "team": team})
    return change


def _stand_down(
    view: View,
    *,
    keep: set[int],
    template: str,
    states: frozenset[str] = frozenset({NOTIFIED, ACCEPTED, ARRIVED, WITHDRAWN}),
) -> Change:
    change = Change()
    for vid, responder in view.responders.items():
        if vid in keep:
            continue
        if responder["state"] in states:
            change.responders[vid] = {"state": STOOD_DOWN}
            change.notices.append(Notice(f"volunteer:{vid}", template))
    return change


def _require_active(view: View, action: str) -> None:
    if view.status not in ACTIVE:
        raise InvalidTransition(f"cannot {action}: the incident is {view.status}")


def _responder(view: View, vid: int, action: str) -> dict[str, Any]:
    responder = view.responders.get(vid)
    if responder is None:
        raise InvalidTransition(f"cannot {action}: volunteer {vid} was not alerted")
    return responder


def accept(view: View, *, vid: int, now: float) -> Change:
    """A volunteer says yes; the first yes acknowledges and stands the others down."""
    _require_active(view, "accept")
    responder = _responder(view, vid, "accept")
    if responder["state"] in ENGAGED:
        return Change()  # pressing accept twice is not news
    change = Change(responders={vid: {"state": ACCEPTED, "accepted_at": now}})
    change.timeline.append({"type": "accepted", "volunteer_id": vid})
    if view.status == "open":
        if view.acknowledged_at is None:
            change.fields.update(acknowledged_at=now, acknowledged_by=vid)
            if _late(now, view.respond_deadline):
                # The respond step will never run now: the accept itself records the breach.
                change.fields["respond_breached"] = True
        change.status = "acknowledged"
        # Only those still waiting to answer hear "covered, stand by".
        covered = _stand_down(view, keep={vid}, template="covered", states=frozenset({NOTIFIED}))
        change.responders.update(covered.responders)
        change.notices.extend(covered.notices)
        change.ladder = "next"
    change.notices.append(Notice("guardians", "accepted", step=f"accepted.{vid}"))
    return change


def decline(view: View, *, vid: int) -> Change:
    """A volunteer says no: page the next nearest one at once."""
    _require_active(view, "decline")
    responder = _responder(view, vid, "decline")
    if responder["state"] in ENGAGED:
        raise InvalidTransition("cannot decline after accepting: withdraw instead")
    if responder["state"] == DECLINED:
        return Change()
    change = Change(responders={vid: {"state": DECLINED}})
    change.timeline.append({"type": "declined", "volunteer_id": vid})
    if view.status == "open":
        change.more_nearby = 1
    return change


def withdraw(view: View, *, vid: int) -> Change:
    """An accepted volunteer cannot come after all: page the next nearest at once."""
    _require_active(view, "withdraw")
    responder = _responder(view, vid, "withdraw")
    if responder["state"] not in ENGAGED:
        raise InvalidTransition(f"cannot withdraw: volunteer {vid} has not accepted")
    change = Change(responders={vid: {"state": WITHDRAWN}})
    change.timeline.append({"type": "withdrawn", "volunteer_id": vid})
    others = [k for k, r in view.responders.items() if k != vid and r["state"] in ENGAGED]
    if not others:
        change.more_nearby = 1
        if view.status == "acknowledged":
            # Nobody is coming any more; the respond SLA keeps its first accept.
            change.status = "open"
            change.ladder = "next"
    return change


def arrive(view: View, *, vid: int, now: float, how: str) -> Change:
    """A responder is on scene (pressed arrived, or their location says so)."""
    _require_active(view, "arrive")
    responder = _responder(view, vid, "arrive")
    if responder["state"] == ARRIVED:
        return Change()
    if responder["state"] not in ENGAGED:
        if how != "pressed":
            return Change()  # only an accepted responder is placed on site by location
        # Pressing "arrived" without accepting first is an accept too.
        change = accept(view, vid=vid, now=now)
    else:
        change = Change()
    change.responders.setdefault(vid, {}).update(state=ARRIVED, arrived_at=now)
    change.timeline.append({"type": "arrived", "volunteer_id": vid, "how": how})
    if view.status != "on_site":
        change.status = "on_site"
        if view.on_site_at is None:
            change.fields.update(on_site_at=now, on_site_by=vid)
            if _late(now, view.onsite_deadline):
                change.fields["onsite_breached"] = True
        change.ladder = "stop"
    change.notices.append(Notice("guardians", "on_site", step=f"on_site.{vid}"))
    return change


def close(view: View, *, status: str, outcome: str | None, now: float, actor: str) -> Change:
    """Resolve (with an outcome) or cancel: everyone still involved stands down."""
    _require_active(view, "resolve" if status == "resolved" else "cancel")
    change = _stand_down(view, keep=set(), template=status)
    change.status = status
    change.fields.update(resolved_at=now, outcome=outcome, closed_by=actor)
    change.timeline.append({"type": status, "outcome": outcome})
    change.notices.append(Notice("guardians", status))
    change.ladder = "stop"
    return change


def returned_home(view: View) -> Change:
    """Back inside the home zone: stand everyone down and suggest resolving as returned_home."""
    if view.status not in ACTIVE:
        return Change()
    change = _stand_down(view, keep=set(), template="returned_home")
    change.fields.update(suggested_outcome="returned_home")
    change.timeline.append({"type": "returned_home"})
    change.notices.append(Notice("guardians", "returned_home"))
    change.ladder = "stop"
    return change


def _late(done_at: float | None, deadline: float | None) -> bool:
    """Not done, or done after the deadline (a step run late by an overdue ticker)."""
    return done_at is None or (deadline is not None and done_at > deadline)


def run_step(view: View, *, step: str) -> Change:
    """A ladder step came due: what it records (the service adds the people it pages).

    A deadline step is a breach only if its promise was not kept: an accept that was later
    withdrawn still met the 3 minutes, and the ladder runs on without calling it broken.
    """
    breach = (step == "respond" and _late(view.acknowledged_at, view.respond_deadline)) or (
        step == "onsite" and _late(view.on_site_at, view.onsite_deadline)
    )
    change = Change(ladder="next")
    change.fields["step"] = step
    entry: dict[str, Any] = {"type": "step", "step": step}
    if breach:
        change.fields[f"{step}_breached"] = True
        entry["breach"] = True
    change.timeline.append(entry)
    return change
