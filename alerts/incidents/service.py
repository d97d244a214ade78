"""Incidents: one per elder, opened or joined, answered, closed; the actions callers take.

These functions are synchronous: the alerts worker and the ticker call them directly, the
HTTP routes through a worker thread. Storage, paging, texts and reads live beside this
module (``storage``, ``paging``, ``compose``, ``reads``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis

from alerts import escalation, keys
from alerts.escalation import Change, InvalidTransition, Notice, View
from alerts.incidents import drills, last_seen
from alerts.incidents.config import AlertsConfig
from alerts.incidents.paging import guarded, mutate, nearby, page
from alerts.incidents.reads import authorize
from alerts.incidents.storage import (
    Plan,
    Snapshot,
    as_str,
    build,
    commit,
    current_policy,
    elder_record,
    load,
    new_code,
    read_incident,
)
from devices.telemetry.readers import read_position
from locator.core import crs
from locator.core import keys as core_keys
from locator.core.auth import Principal, Role
from locator.core.clock import isoformat
from locator.core.errors import Conflict, Forbidden
from locator.core.logging import get_logger

log = get_logger(__name__)


MOVED_M = 10.0


def open_or_join(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    elder_id: int,
    trigger: str,
    at: tuple[float, float] | None,
    actor: str,
    channel: str,
    source: str = "",
    note: str = "",
    t0: float | None = None,
    seen_time: float | None = None,
    drill: dict[str, str] | None = None,
) -> tuple[int, bool]:
    """Open the elder's incident, or add this alarm to the open one; (id, opened).

    ``seen_time`` is when a missing report says she was last seen (see ``last_seen``).
    ``drill`` (its fields, alerts/incidents/drills.py) opens a drill beside any real one.
    """
    for _ in range(10):
        existing = drills.running(client, elder_id, drill=drill is not None)
        if (
            existing is not None
            and source
            and client.sismember(keys.incident_sources(elder_id, existing), source)
        ):
            return existing, False  # this very alarm is on it already (a redelivery)
        if existing is not None and _stood_down_at_home(client, existing):
            # She came home and everyone stood down; this is a new departure, and joining
            # the quiet incident would page nobody. Close that one, open a fresh ladder.
            _close_returned_home(client, cfg, existing, source=source)
            continue
        if existing is not None:
            join(
                client,
                cfg,
                incident_id=existing,
                trigger=trigger,
                at=at,
                actor=actor,
                channel=channel,
                source=source,
                note=note,
                seen_time=seen_time,
            )
            return existing, False
        now = cfg.clock.time()
        start = t0 if t0 is not None else now
        incident_id = int(client.incr(core_keys.sequence("incident")))
        policy = current_policy(client, cfg.policy)
        pos = read_position(client, elder_id=elder_id)
        home = elder_record(client, elder_id).home or (0.0, 0.0)
        seen = last_seen.opening(
            pos,
            at=at,
            reported=trigger == "missing",
            seen_time=seen_time,
            home=home,
            now=start,
        )
        origin = (seen.lat, seen.lon)
        pair = client.get(keys.pair(elder_id))
        paired: list[int] = json.loads(pair)["volunteer_ids"] if pair else []
        code = new_code(client)
        fields: dict[str, Any] = {
            "id": incident_id,
            "code": code,
            "elder_id": elder_id,
            "status": "open",
            "trigger": trigger,
            "t0": start,
            "respond_deadline": start + policy.respond_s,
            "onsite_deadline": start + policy.onsite_s,
            "policy": json.dumps(policy.to_json()),
            "note": note,
            **seen.fields(),
            # The centre volunteers were last paged around (a sighting far from it pages again).
            "paged_lat": origin[0],
            "paged_lon": origin[1],
            "step": "t0",
            "opened_by": actor,
            **(drill or {}),
        }
        change = Change(fields=fields, ladder="next")
        for vid in paired:
            page(change, vid, kind="paired", step="t0", template="alert", now=now)
        for vid, dist in nearby(
            client,
            cfg,
            origin=origin,
            exclude=set(paired),
            radius_m=policy.nearby_radius_m,
            count=policy.nearby_count,
            now=now,
        ):
            page(change, vid, kind="nearby", step="t0", template="alert", now=now, distance=dist)
        change.notices.append(Notice("guardians", "family_alert", step="t0"))
        change.timeline.append(
            {
                "type": "opened",
                "trigger": trigger,
                "note": note,
                "at_position": {"lat": origin[0], "lon": origin[1]},
                "seen_at": seen.doc()["time"],
                "seen_source": seen.source,
            }
        )
        change.timeline.append(
            {"type": "notified", "step": "t0", "volunteers": sorted(change.responders)}
        )
        plan = Plan(elder_id, incident_id, drill=drill is not None)
        plan.body.update(source=source, code=code, close=False)
        str_fields = {k: str(v) for k, v in fields.items()}
        build(
            client,
            cfg,
            plan,
            fields=str_fields,
            previous={},
            change=change,
            actor=actor,
            channel=channel,
            now=now,
        )
        plan.body["feed"][-1]["type"] = "incident"
        verdict, _ = commit(client, plan, version="", token="", now=now)
        if verdict == "ok":
            log.info(
                "incident_opened",
                incident_id=incident_id,
                elder_id=elder_id,
                trigger=trigger,
                paged=sorted(change.responders),
                drill=drill is not None,
            )
            return incident_id, True
        if verdict == "seen":
            return incident_id, False
        # "exists": another alarm opened it between our read and commit; join that one.
    raise Conflict("could not open the incident; try again")


def join(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    incident_id: int,
    trigger: str,
    at: tuple[float, float] | None,
    actor: str,
    channel: str,
    source: str = "",
    note: str = "",
    seen_time: float | None = None,
) -> str:
    """A further alarm for an open incident: it goes on the timeline, nobody is paged again."""

    def decide(snap: Snapshot) -> Change:
        entry: dict[str, Any] = {"type": "alarm", "trigger": trigger}
        if at is not None:
            entry["at_position"] = {"lat": at[0], "lon": at[1]}
        if seen_time is not None:
            entry["seen_at"] = isoformat(datetime.fromtimestamp(seen_time, tz=UTC))
        if note:
            entry["note"] = note
        return Change(timeline=[entry])

    verdict, _ = mutate(
        client, cfg, incident_id, decide, actor=actor, channel=channel, source=source
    )
    return verdict


def _volunteer(caller: Principal) -> int:
    vid = caller.volunteer_id()
    if vid is None:
        raise Forbidden("only the volunteers who were alerted answer an incident")
    return vid


def answer(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    caller: Principal,
    incident_id: int,
    action: str,
    channel: str = "api",
    outcome: str | None = None,
    note: str = "",
) -> Snapshot:
    """A volunteer's ack, decline, withdraw, arrive or found."""
    vid = _volunteer(caller)
    snap = load(client, incident_id)
    if vid not in snap.responders:
        raise Forbidden(f"incident {incident_id} was not sent to volunteer {vid}")
    now = cfg.clock.time()
    actions: dict[str, Callable[[View], Change]] = {
        "ack": lambda v: _accept_at(client, v, vid=vid, now=now),
        "decline": lambda v: escalation.decline(v, vid=vid),
        "withdraw": lambda v: escalation.withdraw(v, vid=vid),
        "arrive": lambda v: escalation.arrive(v, vid=vid, now=now, how="pressed"),
        "found": lambda v: _found(v, vid=vid, now=now, outcome=outcome or "found_safe", note=note),
    }
    mutate(
        client,
        cfg,
        incident_id,
        guarded(actions[action]),
        actor=f"volunteer:{vid}",
        channel=channel,
    )
    return load(client, incident_id)


def _accept_at(client: redis.Redis, view: View, *, vid: int, now: float) -> Change:
    change = escalation.accept(view, vid=vid, now=now)
    loc = client.get(keys.volunteer_location(vid))
    if loc and vid in change.responders:
        shared = json.loads(loc)
        change.responders[vid].update(accept_lat=shared["lat"], accept_lon=shared["lon"])
    return change


def _found(view: View, *, vid: int, now: float, outcome: str, note: str) -> Change:
    if view.responders.get(vid, {}).get("state") not in escalation.ENGAGED:
        raise InvalidTransition("only a volunteer who accepted can report the elder found")
    change = escalation.close(
        view, status="resolved", outcome=outcome, now=now, actor=f"volunteer:{vid}"
    )
    change.responders.pop(vid, None)
    change.notices = [n for n in change.notices if n.recipient != f"volunteer:{vid}"]
    change.timeline.insert(0, {"type": "found", "volunteer_id": vid, "note": note})
    return change


def close(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    caller: Principal,
    incident_id: int,
    status: str,
    outcome: str | None,
    note: str = "",
    channel: str = "api",
) -> Snapshot:
    """Resolve with an outcome (staff, the elder's guardian) or cancel (staff)."""
    snap = load(client, incident_id)
    if status == "cancelled":
        if not caller.is_staff:
            raise Forbidden("only a dispatcher cancels an incident")
    else:
        authorize(client, caller=caller, snap=snap)
        if caller.role is Role.VOLUNTEER:
            raise Forbidden("a volunteer reports `found`; resolving is for family and dispatch")
    now = cfg.clock.time()
    actor = actor_of(caller)

    def action(view: View) -> Change:
        change = escalation.close(view, status=status, outcome=outcome, now=now, actor=actor)
        if note:
            change.timeline[-1]["note"] = note
        return change

    mutate(client, cfg, incident_id, guarded(action), actor=actor, channel=channel)
    return load(client, incident_id)


def actor_of(caller: Principal) -> str:
    """Who did it, as the timeline names them."""
    return f"{caller.role.value}:{caller.subject}" if caller.subject else caller.role.value


def _stood_down_at_home(client: redis.Redis, incident_id: int) -> bool:
    snap = read_incident(client, incident_id=incident_id)
    if snap is None or snap.fields.get("suggested_outcome") != "returned_home":
        return False
    # A dispatcher may have paged people again since: then it is a live incident.
    live = {escalation.NOTIFIED, *escalation.ENGAGED}
    return not any(r.get("state") in live for r in snap.responders.values())


def _close_returned_home(
    client: redis.Redis, cfg: AlertsConfig, incident_id: int, *, source: str
) -> None:
    now = cfg.clock.time()

    def action(view: View) -> Change:
        if view.status not in escalation.ACTIVE:
            return Change()  # someone closed it meanwhile
        change = escalation.close(
            view, status="resolved", outcome="returned_home", now=now, actor="system"
        )
        change.timeline[-1]["note"] = "she left again: a new incident follows"
        return change

    mutate(
        client,
        cfg,
        incident_id,
        guarded(action),
        actor="system",
        channel="geofence",
        source=f"{source}:rearm" if source else "",
    )


def returned_home(client: redis.Redis, cfg: AlertsConfig, *, incident_id: int, source: str) -> str:
    """Back inside the home zone during an incident: everyone stands down."""
    verdict, _ = mutate(
        client,
        cfg,
        incident_id,
        lambda s: escalation.returned_home(s.view()),
        actor="system",
        channel="geofence",
        source=source,
    )
    return verdict


def volunteer_moved(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    volunteer_id: int,
    lat: float,
    lon: float,
    acc: float | None,
) -> list[int]:
    """A shared location may put an accepted responder on site; returns those incidents."""
    placed = []
    for raw in client.zrevrange(keys.volunteer_incidents(volunteer_id), 0, 20):
        incident_id = int(as_str(raw))
        if not client.zscore(keys.INCIDENTS_OPEN, incident_id):
            continue
        snap = load(client, incident_id)
        responder = snap.responders.get(volunteer_id, {})
        if responder.get("state") != escalation.ACCEPTED:
            continue
        if "accept_lat" in responder:
            moved = crs.haversine_m(responder["accept_lat"], responder["accept_lon"], lat, lon)
            if moved < MOVED_M:
                continue
        pos = read_position(client, elder_id=snap.elder_id)
        if pos is None:
            continue
        reach = snap.policy.onsite_distance_m + (acc or 0.0)
        if crs.haversine_m(pos.lat, pos.lon, lat, lon) > reach:
            continue
        now = cfg.clock.time()
        verdict, _ = mutate(
            client,
            cfg,
            incident_id,
            lambda s, now=now: escalation.arrive(  # type: ignore[misc]
                s.view(), vid=volunteer_id, now=now, how="location"
            ),
            actor=f"volunteer:{volunteer_id}",
            channel="location",
        )
        if verdict == "ok":
            placed.append(incident_id)
    return placed


def note(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    incident_id: int,
    actor: str,
    channel: str,
    entry: dict[str, Any],
) -> str:
    """Put something on the timeline (a call nobody answered, a dispatcher's note)."""
    verdict, _ = mutate(
        client, cfg, incident_id, lambda s: Change(timeline=[entry]), actor=actor, channel=channel
    )
    return verdict


def guardian_says_safe(
    client: redis.Redis, cfg: AlertsConfig, *, incident_id: int, guardian: int
) -> Snapshot:
    """A guardian answered "safe" by SMS: a note dispatch can see, then a false-alarm close."""
    now = cfg.clock.time()

    # The guardian by their place in her record (the console shows the name), never by
    # phone number: timelines and the feed are read far more widely than the record.
    def action(view: View) -> Change:
        change = escalation.close(
            view, status="resolved", outcome="false_alarm", now=now, actor="guardian"
        )
        change.timeline.insert(0, {"type": "note", "text": f"guardian {guardian} says safe (SMS)"})
        return change

    actor = f"guardian:{guardian}"
    mutate(client, cfg, incident_id, guarded(action), actor=actor, channel="sms")
    return load(client, incident_id)


def dispatcher_pages(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    caller: Principal,
    incident_id: int,
    more: int,
    team: bool,
) -> Snapshot:
    """The console's "notify more volunteers" and "call the team", now."""
    if not caller.is_staff:
        raise Forbidden("only dispatch pages more people")
    mutate(
        client,
        cfg,
        incident_id,
        guarded(lambda v: escalation.dispatcher_pages(v, more=more, team=team)),
        actor=actor_of(caller),
        channel="console",
    )
    return load(client, incident_id)
