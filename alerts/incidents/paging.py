"""Whom a decision pages (nearest volunteers, teams, dispatchers) and the ladder's steps.

``mutate`` is the one read → decide → page → commit loop every change goes through; a
conflict reads again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis

from alerts import escalation, keys
from alerts.escalation import Candidate, Change, InvalidTransition, Notice, View
from alerts.incidents import last_seen, storage
from alerts.incidents.config import AlertsConfig
from alerts.incidents.storage import Plan, Snapshot, as_str, build, commit, load
from locator.core import timers
from locator.core.errors import Conflict
from locator.core.logging import get_logger

log = get_logger(__name__)


# Shared volunteer locations older than this do not say where someone is any more.
LOCATION_FRESH_S = 12 * 3600


def _candidates(
    client: redis.Redis, *, lat: float, lon: float, radius_m: float, now: float
) -> list[Candidate]:
    found: Any = client.geosearch(
        keys.VOLUNTEER_GEO,
        longitude=lon,
        latitude=lat,
        radius=radius_m,
        unit="m",
        sort="ASC",
        withdist=True,
        count=200,
    )
    if not found:
        return []
    ids = [int(as_str(member)) for member, _ in found]
    pipe = client.pipeline(transaction=False)
    for vid in ids:
        pipe.get(keys.volunteer(vid))
        pipe.get(keys.volunteer_location(vid))
    raws = pipe.execute()
    out = []
    for index, (member, dist) in enumerate(found):
        doc_raw, loc_raw = raws[2 * index], raws[2 * index + 1]
        if not doc_raw:
            continue
        doc = json.loads(doc_raw)
        fresh = True
        if loc_raw:
            at = json.loads(loc_raw).get("at")
            fresh = at is None or now - datetime.fromisoformat(at).timestamp() <= LOCATION_FRESH_S
        out.append(
            Candidate(
                int(as_str(member)),
                float(dist),
                bool(doc.get("on_duty")) and fresh,
                doc.get("quiet_hours"),
            )
        )
    return out


def _local_time(cfg: AlertsConfig, now: float) -> Any:
    return datetime.fromtimestamp(now, tz=cfg.timezone).time()


def nearby(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    origin: tuple[float, float],
    exclude: set[int],
    radius_m: float,
    count: int,
    now: float,
) -> list[tuple[int, float]]:
    """The nearest usable volunteers within the radius, with their distances."""
    candidates = _candidates(client, lat=origin[0], lon=origin[1], radius_m=radius_m, now=now)
    picked = escalation.pick_nearest(
        candidates, exclude=exclude, count=count, local=_local_time(cfg, now), radius_m=radius_m
    )
    distance = {c.volunteer_id: c.distance_m for c in candidates}
    return [(vid, distance[vid]) for vid in picked]


def _on_duty_teams(client: redis.Redis) -> list[dict[str, Any]]:
    ids = [int(as_str(i)) for i in client.zrange(keys.TEAMS, 0, -1)]
    raws = client.mget([keys.team(i) for i in ids]) if ids else []
    return [t for t in (json.loads(r) for r in raws if r) if t.get("on_duty")]


def _on_call_dispatchers(client: redis.Redis) -> list[int]:
    ids = [int(as_str(i)) for i in client.zrange(keys.DISPATCHERS, 0, -1)]
    raws = client.mget([keys.dispatcher(i) for i in ids]) if ids else []
    return [d["id"] for d in (json.loads(r) for r in raws if r) if d.get("on_call")]


def page(
    change: Change,
    vid: int,
    *,
    kind: str,
    step: str,
    template: str,
    now: float,
    distance: float | None = None,
) -> None:
    """Page one volunteer: a notified responder and the notice to them."""
    change.responders[vid] = {
        "state": escalation.NOTIFIED,
        "kind": kind,
        "step": step,
        "notified_at": now,
        "distance_m": distance,
    }
    change.notices.append(Notice(f"volunteer:{vid}", template, step=step))


def _page_nearby(
    change: Change,
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    origin: tuple[float, float],
    exclude: set[int],
    now: float,
    radius_m: float,
    count: int,
    kind: str,
    step: str,
    template: str,
) -> None:
    """Page the ``count`` nearest usable volunteers within ``radius_m`` not yet involved."""
    for vid, dist in nearby(
        client, cfg, origin=origin, exclude=exclude, radius_m=radius_m, count=count, now=now
    ):
        page(change, vid, kind=kind, step=step, template=template, now=now, distance=dist)


def people_for(
    client: redis.Redis, cfg: AlertsConfig, snap: Snapshot, change: Change, *, now: float
) -> Change:
    """The people a decision pages beyond what the pure machine knows (GEO, teams, roster)."""
    extra = Change()
    policy = snap.policy
    known = set(snap.responders) | set(change.responders)
    step = change.fields.get("step")
    # Around the Point Last Seen as it is now: a sighting in this very change, else the
    # incident's origin, unless a newer good fix says more.
    fields = {**snap.fields, **{k: str(v) for k, v in change.fields.items()}}
    origin = last_seen.centre(client, snap.elder_id, fields)
    if change.more_nearby:
        _page_nearby(
            extra,
            client,
            cfg,
            origin=origin,
            exclude=known,
            now=now,
            radius_m=policy.nearby_radius_m,
            count=change.more_nearby,
            kind="nearby",
            step="nearby",
            template="alert",
        )
        if not extra.responders:
            extra.timeline.append(
                {"type": "no_more_volunteers", "radius_m": policy.nearby_radius_m}
            )
    if step == "voice":
        for vid, responder in snap.responders.items():
            if responder["state"] == escalation.NOTIFIED:
                extra.notices.append(
                    Notice(f"volunteer:{vid}", "voice_call", step="voice", channel="voice")
                )
    elif step == "respond" or change.page_team:
        label = "respond" if step == "respond" else "team_called"
        for team in _on_duty_teams(client):
            for member in team["members"]:
                vid = member["volunteer_id"]
                if vid in known or vid in extra.responders:
                    continue
                page(extra, vid, kind="team", step=label, template="team_call", now=now)
        for did in _on_call_dispatchers(client):
            extra.notices.append(Notice(f"dispatcher:{did}", "dispatcher_call", step=label))
    elif step == "onsite":
        _page_nearby(
            extra,
            client,
            cfg,
            origin=origin,
            exclude=known,
            now=now,
            radius_m=policy.wide_radius_m,
            count=policy.wide_count,
            kind="wide",
            step="onsite",
            template="wide_call",
        )
        for team in _on_duty_teams(client):
            for member in team["members"]:
                if member["role"] == "lead":
                    vid = member["volunteer_id"]
                    if vid not in known and vid not in extra.responders:
                        page(extra, vid, kind="lead", step="onsite", template="lead_call", now=now)
                    else:
                        extra.notices.append(Notice(f"volunteer:{vid}", "lead_call", step="onsite"))
    if extra.responders:
        extra.timeline.append(
            {"type": "notified", "step": step or "nearby", "volunteers": sorted(extra.responders)}
        )
    return extra


def mutate(
    client: redis.Redis,
    cfg: AlertsConfig,
    incident_id: int,
    decide: Callable[[Snapshot], Change],
    *,
    actor: str,
    channel: str,
    token: str = "",
    source: str = "",
) -> tuple[str, Snapshot]:
    """Read, decide, commit if unchanged; again on a conflict. Returns (verdict, snapshot)."""
    for _ in range(20):
        snap = load(client, incident_id)
        if token and snap.fields.get("step_token") != token:
            return "stale", snap
        change = decide(snap)
        if is_empty(change):
            return "unchanged", snap
        now = cfg.clock.time()
        extra = people_for(client, cfg, snap, change, now=now)
        change.responders.update(extra.responders)
        change.notices.extend(extra.notices)
        change.timeline.extend(extra.timeline)
        plan = Plan(snap.elder_id, incident_id, drill=snap.drill)
        plan.body["source"] = source
        plan.body["code"] = snap.fields.get("code", "")
        plan.body["close"] = change.status in ("resolved", "cancelled")
        if plan.body["close"]:
            # Retention strips closed incidents of names, places and texts after a while.
            at = plan.key_index(keys.INCIDENTS_CLOSED)
            plan.body["index"].append([at, "zadd", now, str(incident_id)])
        build(
            client,
            cfg,
            plan,
            fields=snap.fields,
            previous=snap.responders,
            change=change,
            actor=actor,
            channel=channel,
            now=now,
        )
        verdict, _ = commit(client, plan, version=snap.version, token=token, now=now)
        if verdict != "conflict":
            return verdict, snap
    raise Conflict("the incident kept changing meanwhile; try again")


def is_empty(change: Change) -> bool:
    """Whether a decision changes nothing at all."""
    return not (
        change.status
        or change.fields
        or change.responders
        or change.timeline
        or change.notices
        or change.more_nearby
        or change.page_team
        or change.ladder != "keep"
    )


def guarded(
    action: Callable[[View], Change],
) -> Callable[[Snapshot], Change]:
    """A decision whose invalid transition becomes a 409 Conflict."""

    def decide(snap: Snapshot) -> Change:
        try:
            return action(snap.view())
        except InvalidTransition as exc:
            raise Conflict(str(exc)) from None

    return decide


def run_step(client: redis.Redis, cfg: AlertsConfig, job: timers.Job) -> str:
    """A ladder step is due: page its people and schedule the next one, unless superseded."""
    elder, incident = job.args
    step = str(job.payload.get("step", ""))
    snap = storage.read_incident(client, incident_id=int(incident))
    if snap is None:
        return "gone"
    if snap.fields.get("step_token") != job.token:
        return "stale"
    if snap.status not in escalation.ACTIVE:
        return "closed"
    verdict, _ = mutate(
        client,
        cfg,
        int(incident),
        lambda s: escalation.run_step(s.view(), step=step),
        actor="system",
        channel="timer",
        token=job.token,
    )
    if verdict == "ok":
        log.info("sla_step", incident_id=int(incident), elder_id=int(elder), step=step)
        return step
    return verdict
