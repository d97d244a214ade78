"""Incidents: one per elder, the dispatch ladder's steps, responders' answers, reads.

Every change is read → decided (``alerts.escalation``, pure) → committed by one script
(``commit.lua``) only if the incident's version is still the one read; a conflict reads
again. These functions are synchronous: the alerts worker and the ticker call them
directly, the HTTP routes through a worker thread.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis

from alerts import escalation, links
from alerts.escalation import Candidate, Change, InvalidTransition, Notice, Policy, View
from alerts.incidents import access, drills, last_seen
from alerts.incidents.schemas import IncidentRead, ResponderRead
from alerts.notify import messages
from alerts.notify.channels import chain_for, configured, extras_for
from alerts.notify.messages import render
from alerts.notify.outbox import attempt_id
from locator.core import crs, keys, timers
from locator.core.auth import Principal, Role
from locator.core.clock import Clock, isoformat
from locator.core.errors import Conflict, Forbidden, NotFound
from locator.core.logging import get_logger
from locator.core.settings import Settings

log = get_logger(__name__)

_COMMIT = (Path(__file__).with_name("commit.lua")).read_text()
_FIXED_KEYS = 17
# Shared volunteer locations older than this do not say where someone is any more.
LOCATION_FRESH_S = 12 * 3600
MOVED_M = 10.0


@dataclass(frozen=True)
class AlertsConfig:
    """What the alerts stage needs besides Redis: time, language and configured channels."""

    clock: Clock
    timezone: ZoneInfo
    locale: str
    channels: frozenset[str]
    policy: Policy = field(default_factory=Policy)
    public_url: str | None = None  # links in messages
    settings: Settings | None = None  # provider credentials, for the channels' construction
    drill_notify_family: bool = False  # HOMEWARD_DRILL_NOTIFY_FAMILY (alerts/incidents/drills.py)


@dataclass
class Snapshot:
    elder_id: int
    incident_id: int
    fields: dict[str, str]
    responders: dict[int, dict[str, Any]]

    @property
    def status(self) -> str:
        return self.fields["status"]

    @property
    def version(self) -> str:
        return self.fields["version"]

    @property
    def policy(self) -> Policy:
        return Policy.from_json(json.loads(self.fields["policy"]))

    @property
    def t0(self) -> float:
        return float(self.fields["t0"])

    @property
    def drill(self) -> bool:
        return self.fields.get("drill") == "1"

    def view(self) -> View:
        return View(
            status=self.status,
            responders=self.responders,
            acknowledged_at=_float(self.fields.get("acknowledged_at")),
            on_site_at=_float(self.fields.get("on_site_at")),
            step=self.fields.get("step"),
            respond_deadline=_float(self.fields.get("respond_deadline")),
            onsite_deadline=_float(self.fields.get("onsite_deadline")),
        )


def config_from(settings: Settings, *, clock: Clock, mqtt_url: str | None) -> AlertsConfig:
    """The alerts stage's configuration for a process, from its settings."""
    return AlertsConfig(
        clock=clock,
        timezone=settings.zone,
        locale=settings.locale,
        channels=configured(
            mqtt_url=mqtt_url,
            twilio=bool(
                settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
            ),
            webpush=bool(settings.vapid_private_key),
        ),
        public_url=settings.public_url,
        settings=settings,
        drill_notify_family=settings.drill_notify_family,
        policy=Policy(
            respond_s=settings.respond_sla_s,
            onsite_s=settings.onsite_sla_s,
            voice_after_s=settings.voice_after_s,
        ),
    )


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


# --- reading -----------------------------------------------------------------------------
def elder_of(client: redis.Redis, incident_id: int) -> int:
    """The elder an incident belongs to (locates its hash tag); 404 if unknown."""
    elder = client.hget(keys.INCIDENT_ELDER, str(incident_id))
    if elder is None:
        raise NotFound(f"incident {incident_id} not found")
    return int(elder)


def load(client: redis.Redis, incident_id: int) -> Snapshot:
    """The incident's fields and responders as they are now."""
    elder_id = elder_of(client, incident_id)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.incident(elder_id, incident_id))
    pipe.hgetall(keys.incident_responders(elder_id, incident_id))
    fields, responders = pipe.execute()
    if not fields:
        raise NotFound(f"incident {incident_id} not found")
    return Snapshot(
        elder_id, incident_id, fields, {int(k): json.loads(v) for k, v in responders.items()}
    )


def open_incident_id(client: redis.Redis, elder_id: int) -> int | None:
    raw = client.get(keys.open_incident(elder_id))
    return int(raw) if raw else None


# --- committing --------------------------------------------------------------------------
class _Plan:
    """Builds the commit script's plan and its extra keys."""

    def __init__(self, snap_elder: int, incident_id: int, *, drill: bool = False) -> None:
        self.elder_id = snap_elder
        self.incident_id = incident_id
        self.drill = drill
        self.extra_keys: list[str] = []
        self.body: dict[str, Any] = {
            "incident_id": incident_id,
            "elder_id": snap_elder,
            "fields": {},
            "responders": {},
            "timeline": [],
            "index": [],
            "attempts": [],
            "feed": [],
            "ladder": {"op": "keep"},
        }

    def key_index(self, key: str) -> int:
        if key not in self.extra_keys:
            self.extra_keys.append(key)
        return self.extra_keys.index(key) + 1

    def keys(self) -> list[str]:
        e, i = self.elder_id, self.incident_id
        fixed = [
            keys.incident(e, i),
            keys.incident_timeline(e, i),
            keys.incident_responders(e, i),
            keys.incident_attempts(e, i),
            keys.job_timers(sla_job(e, i)),
            keys.timer(sla_job(e, i)),
            keys.OUTBOX,
            keys.FEED,
            keys.ATTEMPTS,
            keys.open_drill(e) if self.drill else keys.open_incident(e),
            keys.INCIDENTS_OPEN,
            keys.INCIDENT_CODES,
            keys.incident_sources(e, i),
            keys.sequence("attempt"),
            keys.INCIDENTS,
            keys.INCIDENT_ELDER,
            keys.elder_incidents(e),
        ]
        assert len(fixed) == _FIXED_KEYS
        return fixed + self.extra_keys


def sla_job(elder_id: int, incident_id: int) -> str:
    return timers.job_id("sla", elder_id, incident_id)


def _commit(
    client: redis.Redis, plan: _Plan, *, version: str, token: str, now: float
) -> tuple[str, str]:
    reply = client.eval(
        _COMMIT,
        len(plan.keys()),
        *plan.keys(),
        version,
        token,
        json.dumps(plan.body, ensure_ascii=False),
        repr(now),
    )
    verdict, detail = (_s(x) for x in reply)
    return verdict, detail


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _elder_doc(client: redis.Redis, elder_id: int) -> dict[str, Any]:
    raw = client.get(keys.elder(elder_id))
    doc = json.loads(raw) if raw else None
    if doc is None or doc.get("deleted_at"):
        # Gone or being erased: messages name her by number and reach no family phone.
        return {"id": elder_id, "name": f"#{elder_id}", "guardians": []}
    return doc  # type: ignore[no-any-return]


def _expand(
    client: redis.Redis, recipient: str, elder: dict[str, Any]
) -> list[tuple[str, str | None]]:
    """A notice's recipient as (recipient id, phone) pairs."""
    if recipient == "guardians":
        return [(f"guardian:{i}", g.get("phone")) for i, g in enumerate(elder.get("guardians", []))]
    kind, _, ident = recipient.partition(":")
    key = keys.volunteer(int(ident)) if kind == "volunteer" else keys.dispatcher(int(ident))
    raw = client.get(key)
    return [(recipient, json.loads(raw).get("phone") if raw else None)]


def place_hint(elder: dict[str, Any], fields: dict[str, str], locale: str) -> str:
    """Where to look, in a few characters: distance and direction from home."""
    home = elder.get("home")
    if not home or not fields.get("origin_lat"):
        return ""
    lat, lon = float(fields["origin_lat"]), float(fields["origin_lon"])
    metres = crs.haversine_m(home["lat"], home["lon"], lat, lon)
    bearing = (
        math.degrees(
            math.atan2((lon - home["lon"]) * math.cos(math.radians(lat)), lat - home["lat"])
        )
        % 360
    )
    return messages.place(metres, bearing, locale)


LINKED_TEMPLATES = frozenset({"alert", "team_call", "wide_call", "lead_call"})


def _build(
    client: redis.Redis,
    cfg: AlertsConfig,
    plan: _Plan,
    *,
    fields: dict[str, str],
    previous: dict[int, dict[str, Any]],
    change: Change,
    actor: str,
    channel: str,
    now: float,
) -> None:
    """Turn a decision into the commit plan: fields, responders, timeline, attempts, ladder."""
    body = plan.body
    status = change.status or fields.get("status", "open")
    if change.status:
        body["fields"]["status"] = change.status
    for name, value in change.fields.items():
        body["fields"][name] = "1" if value is True else ("" if value is None else str(value))
    for vid, update in change.responders.items():
        merged = {**previous.get(vid, {}), **update}
        body["responders"][str(vid)] = json.dumps(merged)
        plan.body["index"].append(
            [
                plan.key_index(keys.volunteer_incidents(vid)),
                "zadd",
                plan.incident_id,
                str(plan.incident_id),
            ]
        )
        plan.body["index"].append(
            [plan.key_index(keys.elder_readers(plan.elder_id)), "sadd", str(vid)]
        )
    if change.status in ("resolved", "cancelled"):
        # Closed: volunteers sent to it no longer read her record or photo (her paired
        # volunteers keep reading it: they are hers, not the incident's).
        pair = client.get(keys.pair(plan.elder_id))
        paired = set(json.loads(pair)["volunteer_ids"]) if pair else set()
        for vid in sorted((set(previous) | set(change.responders)) - paired):
            plan.body["index"].append(
                [plan.key_index(keys.elder_readers(plan.elder_id)), "srem", str(vid)]
            )
    stamp = isoformat(datetime.fromtimestamp(now, tz=cfg.timezone))
    for entry in change.timeline:
        body["timeline"].append(
            json.dumps(
                {"at": stamp, "actor": actor, "channel": channel, **entry}, ensure_ascii=False
            )
        )
    drill = fields.get("drill") == "1"
    if drill:
        change.notices = drills.family_filter(
            change.notices, fields=fields, notify_family=cfg.drill_notify_family
        )
    if change.notices:
        elder = _elder_doc(client, plan.elder_id)
        code = fields.get("code", "")
        t0 = float(fields.get("t0", now))
        values = {
            "name": elder.get("name", ""),
            "code": code,
            "minutes": max(0, round((now - t0) / 60)),
            "trigger": messages.trigger_name(fields.get("trigger", ""), cfg.locale),
            # A sighting moves the place in this very change: the message names the new one.
            "place": place_hint(
                elder, {**fields, **{k: str(v) for k, v in change.fields.items()}}, cfg.locale
            ),
        }
        key = links.secret(client)
        available = set(cfg.channels)
        for notice in change.notices:
            for recipient, phone in _expand(client, notice.recipient, elder):
                label = notice.step or notice.template
                text_values = dict(values)
                kind, _, ident = recipient.partition(":")
                if kind == "volunteer" and notice.template in LINKED_TEMPLATES:
                    token = links.sign(
                        key,
                        incident_id=plan.incident_id,
                        volunteer_id=int(ident),
                        expires=t0 + links.LINK_TTL_S,
                    )
                    text_values["link"] = links.url(
                        cfg.public_url, incident_id=plan.incident_id, token=token
                    )
                chain = chain_for(recipient, available, start=notice.channel)
                extras = [] if notice.channel else extras_for(recipient, available)
                if "webpush" in extras and not client.exists(keys.push_subscriptions(int(ident))):
                    extras.remove("webpush")  # nobody subscribed: not even an attempt
                for channel, extra in [
                    *[(c, False) for c in chain[:1]],
                    *[(c, True) for c in extras],
                ]:
                    aid = attempt_id(
                        elder_id=plan.elder_id,
                        scope=f"i{plan.incident_id}",
                        step=label,
                        recipient=recipient,
                        channel=channel,
                    )
                    data = {
                        "incident_id": plan.incident_id,
                        "code": code,
                        "elder_id": plan.elder_id,
                        "elder_name": elder.get("name", ""),
                        **({"drill": True} if drill else {}),
                    }
                    text = render(notice.template, cfg.locale, text_values, drill=drill)
                    if "link" in text_values:
                        # Rendered with the link so an SMS is shortened to fit with it; stored
                        # without: the SMS channel signs it again (alerts/links.py).
                        data["link_expires"] = int(t0 + links.LINK_TTL_S)
                        text = text.replace(text_values["link"], links.placeholder(cfg.locale))
                    body["attempts"].append(
                        {
                            "k": plan.key_index(keys.attempt(aid)),
                            "id": aid,
                            "fields": {
                                "elder_id": plan.elder_id,
                                "incident_id": plan.incident_id,
                                "scope": f"i{plan.incident_id}",
                                "step": label,
                                "recipient": recipient,
                                "phone": phone or "",
                                "channel": channel,
                                "extra": "1" if extra else "",
                                "template": notice.template,
                                "text": text,
                                "data": json.dumps(data, ensure_ascii=False),
                                "locale": cfg.locale,
                            },
                        }
                    )
    if change.ladder == "stop":
        body["ladder"] = {"op": "stop", "job": sla_job(plan.elder_id, plan.incident_id)}
    elif change.ladder == "next":
        policy = Policy.from_json(json.loads(fields["policy"]))
        after = change.fields.get("step") or fields.get("step")
        step = escalation.next_step(policy, status=status, after=after)
        if step is None:
            body["ladder"] = {"op": "stop", "job": sla_job(plan.elder_id, plan.incident_id)}
        else:
            name, offset = step
            body["ladder"] = {
                "op": "schedule",
                "job": sla_job(plan.elder_id, plan.incident_id),
                "step": name,
                "due": max(float(fields["t0"]) + offset, now),
                "token": secrets.token_hex(8),
            }
    body["feed"].append(
        {
            "type": "incident",
            "data": json.dumps(
                {
                    "status": status,
                    "change": [e.get("type") for e in change.timeline],
                    "actor": actor,
                    "at": stamp,
                    **drills.feed_marks(fields),
                },
                ensure_ascii=False,
            ),
        }
    )


def _mutate(
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
        if _is_empty(change):
            return "unchanged", snap
        now = cfg.clock.time()
        extra = _people_for(client, cfg, snap, change, now=now)
        change.responders.update(extra.responders)
        change.notices.extend(extra.notices)
        change.timeline.extend(extra.timeline)
        plan = _Plan(snap.elder_id, incident_id, drill=snap.drill)
        plan.body["source"] = source
        plan.body["code"] = snap.fields.get("code", "")
        plan.body["close"] = change.status in ("resolved", "cancelled")
        if plan.body["close"]:
            # Retention strips closed incidents of names, places and texts after a while.
            at = plan.key_index(keys.INCIDENTS_CLOSED)
            plan.body["index"].append([at, "zadd", now, str(incident_id)])
        _build(
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
        verdict, _ = _commit(client, plan, version=snap.version, token=token, now=now)
        if verdict != "conflict":
            return verdict, snap
    raise Conflict("the incident kept changing meanwhile; try again")


def _is_empty(change: Change) -> bool:
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


# --- choosing people ---------------------------------------------------------------------
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
    ids = [int(_s(member)) for member, _ in found]
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
                int(_s(member)),
                float(dist),
                bool(doc.get("on_duty")) and fresh,
                doc.get("quiet_hours"),
            )
        )
    return out


def _local_time(cfg: AlertsConfig, now: float) -> Any:
    return datetime.fromtimestamp(now, tz=cfg.timezone).time()


def _nearby(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    origin: tuple[float, float],
    exclude: set[int],
    radius_m: float,
    count: int,
    now: float,
) -> list[tuple[int, float]]:
    candidates = _candidates(client, lat=origin[0], lon=origin[1], radius_m=radius_m, now=now)
    picked = escalation.pick_nearest(
        candidates, exclude=exclude, count=count, local=_local_time(cfg, now), radius_m=radius_m
    )
    distance = {c.volunteer_id: c.distance_m for c in candidates}
    return [(vid, distance[vid]) for vid in picked]


def _on_duty_teams(client: redis.Redis) -> list[dict[str, Any]]:
    ids = [int(_s(i)) for i in client.zrange(keys.TEAMS, 0, -1)]
    raws = client.mget([keys.team(i) for i in ids]) if ids else []
    return [t for t in (json.loads(r) for r in raws if r) if t.get("on_duty")]


def _on_call_dispatchers(client: redis.Redis) -> list[int]:
    ids = [int(_s(i)) for i in client.zrange(keys.DISPATCHERS, 0, -1)]
    raws = client.mget([keys.dispatcher(i) for i in ids]) if ids else []
    return [d["id"] for d in (json.loads(r) for r in raws if r) if d.get("on_call")]


def _page(
    change: Change,
    vid: int,
    *,
    kind: str,
    step: str,
    template: str,
    now: float,
    distance: float | None = None,
) -> None:
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
    for vid, dist in _nearby(
        client, cfg, origin=origin, exclude=exclude, radius_m=radius_m, count=count, now=now
    ):
        _page(change, vid, kind=kind, step=step, template=template, now=now, distance=dist)


def _people_for(
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
                _page(extra, vid, kind="team", step=label, template="team_call", now=now)
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
                        _page(extra, vid, kind="lead", step="onsite", template="lead_call", now=now)
                    else:
                        extra.notices.append(Notice(f"volunteer:{vid}", "lead_call", step="onsite"))
    if extra.responders:
        extra.timeline.append(
            {"type": "notified", "step": step or "nearby", "volunteers": sorted(extra.responders)}
        )
    return extra


# --- opening -----------------------------------------------------------------------------
def current_policy(client: redis.Redis, default: Policy) -> Policy:
    """The policy a new incident snapshots: the stored one, else the settings' numbers."""
    raw = client.get(keys.POLICY)
    if not raw:
        return default
    return Policy.from_json({**default.to_json(), **json.loads(raw)})


def _new_code(client: redis.Redis) -> str:
    for _ in range(50):
        code = f"{secrets.randbelow(9000) + 1000}"
        if not client.hexists(keys.INCIDENT_CODES, code):
            return code
    return secrets.token_hex(3)


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
        incident_id = int(client.incr(keys.sequence("incident")))
        policy = current_policy(client, cfg.policy)
        pos: dict[str, str] = client.hgetall(keys.last_position(elder_id))  # type: ignore[assignment]
        home = _elder_doc(client, elder_id).get("home") or {"lat": 0.0, "lon": 0.0}
        seen = last_seen.opening(
            pos,
            at=at,
            reported=trigger == "missing",
            seen_time=seen_time,
            home=(float(home["lat"]), float(home["lon"])),
            now=start,
        )
        origin = (seen.lat, seen.lon)
        pair = client.get(keys.pair(elder_id))
        paired: list[int] = json.loads(pair)["volunteer_ids"] if pair else []
        code = _new_code(client)
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
            _page(change, vid, kind="paired", step="t0", template="alert", now=now)
        for vid, dist in _nearby(
            client,
            cfg,
            origin=origin,
            exclude=set(paired),
            radius_m=policy.nearby_radius_m,
            count=policy.nearby_count,
            now=now,
        ):
            _page(change, vid, kind="nearby", step="t0", template="alert", now=now, distance=dist)
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
        plan = _Plan(elder_id, incident_id, drill=drill is not None)
        plan.body.update(source=source, code=code, close=False)
        str_fields = {k: str(v) for k, v in fields.items()}
        _build(
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
        verdict, _ = _commit(client, plan, version="", token="", now=now)
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

    verdict, _ = _mutate(
        client, cfg, incident_id, decide, actor=actor, channel=channel, source=source
    )
    return verdict


# --- the ladder's steps (the ticker's ``sla`` jobs) ----------------------------------------
def run_step(client: redis.Redis, cfg: AlertsConfig, job: timers.Job) -> str:
    """A ladder step is due: page its people and schedule the next one, unless superseded."""
    elder, incident = job.args
    step = str(job.payload.get("step", ""))
    try:
        snap = load(client, int(incident))
    except NotFound:
        return "gone"
    if snap.fields.get("step_token") != job.token:
        return "stale"
    if snap.status not in escalation.ACTIVE:
        return "closed"
    verdict, _ = _mutate(
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


# --- answers and closing -------------------------------------------------------------------
def _volunteer(caller: Principal) -> int:
    vid = caller.volunteer_id()
    if vid is None:
        raise Forbidden("only the volunteers who were alerted answer an incident")
    return vid


def _decide(
    action: Callable[[View], Change],
) -> Callable[[Snapshot], Change]:
    def decide(snap: Snapshot) -> Change:
        try:
            return action(snap.view())
        except InvalidTransition as exc:
            raise Conflict(str(exc)) from None

    return decide


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
    _mutate(
        client,
        cfg,
        incident_id,
        _decide(actions[action]),
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

    _mutate(client, cfg, incident_id, _decide(action), actor=actor, channel=channel)
    return load(client, incident_id)


def actor_of(caller: Principal) -> str:
    return f"{caller.role.value}:{caller.subject}" if caller.subject else caller.role.value


def _stood_down_at_home(client: redis.Redis, incident_id: int) -> bool:
    try:
        snap = load(client, incident_id)
    except NotFound:
        return False
    if snap.fields.get("suggested_outcome") != "returned_home":
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

    _mutate(
        client,
        cfg,
        incident_id,
        _decide(action),
        actor="system",
        channel="geofence",
        source=f"{source}:rearm" if source else "",
    )


def returned_home(client: redis.Redis, cfg: AlertsConfig, *, incident_id: int, source: str) -> str:
    """Back inside the home zone during an incident: everyone stands down."""
    verdict, _ = _mutate(
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
        incident_id = int(_s(raw))
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
        pos = client.hmget(keys.last_position(snap.elder_id), "lat", "lon")
        if not pos[0]:
            continue
        reach = snap.policy.onsite_distance_m + (acc or 0.0)
        elder_lat, elder_lon = float(str(pos[0])), float(str(pos[1]))
        if crs.haversine_m(elder_lat, elder_lon, lat, lon) > reach:
            continue
        now = cfg.clock.time()
        verdict, _ = _mutate(
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


# --- reads -------------------------------------------------------------------------------
def authorize(client: redis.Redis, *, caller: Principal, snap: Snapshot) -> None:
    """Staff see all; a guardian their own elders'; a volunteer what was sent to them."""
    if caller.is_staff:
        return
    if caller.role is Role.GUARDIAN:
        owner = _elder_doc(client, snap.elder_id).get("owner")
        if owner == caller.subject and drills.family_sees(snap.fields):
            return
    elif caller.role is Role.VOLUNTEER and caller.volunteer_id() in snap.responders:
        return
    raise Forbidden(f"not allowed to see incident {snap.incident_id}")


def _iso(value: str | None, tz: tzinfo) -> str | None:
    if value in (None, ""):
        return None
    return isoformat(datetime.fromtimestamp(float(value), tz=tz))


def read(client: redis.Redis, snap: Snapshot, *, caller: Principal) -> IncidentRead:
    """The incident as the API shows it (a guardian sees responders without distances)."""
    f = snap.fields
    elder = _elder_doc(client, snap.elder_id)
    timeline = [
        json.loads(e)
        for e in client.lrange(keys.incident_timeline(snap.elder_id, snap.incident_id), 0, -1)
    ]
    names = {}
    if snap.responders:
        docs = client.mget([keys.volunteer(v) for v in snap.responders])
        names = {json.loads(d)["id"]: json.loads(d)["name"] for d in docs if d}
    responders = [
        ResponderRead(
            volunteer_id=vid,
            name=names.get(vid),
            kind=r.get("kind", ""),
            state=r["state"],
            notified_at=_iso(_str(r.get("notified_at")), UTC),
            accepted_at=_iso(_str(r.get("accepted_at")), UTC),
            arrived_at=_iso(_str(r.get("arrived_at")), UTC),
            distance_m=r.get("distance_m") if caller.is_staff else None,
        )
        for vid, r in sorted(snap.responders.items())
    ]
    origin = None
    if f.get("origin_lat"):
        origin = {"lat": float(f["origin_lat"]), "lon": float(f["origin_lon"])}
    incident = IncidentRead(
        id=snap.incident_id,
        code=f["code"],
        elder_id=snap.elder_id,
        elder_name=elder.get("name"),
        status=f["status"],
        trigger=f["trigger"],
        t0=str(_iso(f["t0"], UTC)),
        respond_deadline=str(_iso(f["respond_deadline"], UTC)),
        onsite_deadline=str(_iso(f["onsite_deadline"], UTC)),
        acknowledged_at=_iso(f.get("acknowledged_at"), UTC),
        on_site_at=_iso(f.get("on_site_at"), UTC),
        resolved_at=_iso(f.get("resolved_at"), UTC),
        outcome=f.get("outcome") or None,
        suggested_outcome=f.get("suggested_outcome") or None,
        respond_breached=f.get("respond_breached") == "1",
        onsite_breached=f.get("onsite_breached") == "1",
        next_step=f.get("next_step") or None,
        next_step_at=_iso(f.get("next_due"), UTC),
        origin=origin,
        note=f.get("note", ""),
        policy=json.loads(f["policy"]),
        drill=snap.drill,
        drill_announced=f.get("drill_announced") == "1" if snap.drill else None,
        responders=responders,
        timeline=timeline,
    )
    return access.redact(incident, caller)


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def list_ids(
    client: redis.Redis,
    *,
    caller: Principal,
    status: str,
    cursor: str | None,
    limit: int,
    elder_id: int | None = None,
    drill: bool | None = None,
) -> tuple[list[int], str | None]:
    """Incident ids the caller may see, newest first, one page (one elder's, if asked)."""
    if elder_id is not None:
        if caller.role is Role.VOLUNTEER:
            raise Forbidden("volunteers list their own alerts")
        from devices.elders.service import authorize_sync

        authorize_sync(client, caller=caller, elder_id=elder_id, write=False)
        ids = [int(_s(i)) for i in client.zrevrange(keys.elder_incidents(elder_id), 0, -1)]
    elif caller.is_staff:
        index = keys.INCIDENTS_OPEN if status == "open" else keys.INCIDENTS
        ids = [int(_s(i)) for i in client.zrevrange(index, 0, -1)]
    elif caller.role is Role.VOLUNTEER:
        ids = [
            int(_s(i))
            for i in client.zrevrange(keys.volunteer_incidents(caller.volunteer_id() or 0), 0, -1)
        ]
    else:
        elders = [int(_s(e)) for e in client.zrange(keys.owner_elders(caller.subject or ""), 0, -1)]
        ids = sorted(
            {int(_s(i)) for e in elders for i in client.zrange(keys.elder_incidents(e), 0, -1)},
            reverse=True,
        )
    if status != "all":
        open_ids = {int(_s(i)) for i in client.zrange(keys.INCIDENTS_OPEN, 0, -1)}
        ids = [i for i in ids if (i in open_ids) == (status == "open")]
    ids = drills.keep(client, ids, drill=drill, family=caller.role is Role.GUARDIAN)
    after = int(cursor) if cursor and cursor.isdigit() else None
    if after is not None:
        ids = [i for i in ids if i < after]
    page = ids[:limit]
    return page, (str(page[-1]) if len(ids) > limit else None)


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
    verdict, _ = _mutate(
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
    _mutate(client, cfg, incident_id, _decide(action), actor=actor, channel="sms")
    return load(client, incident_id)


def voice_script(client: redis.Redis, cfg: AlertsConfig, *, incident_id: int) -> str:
    """The spoken alert of the voice step."""
    snap = load(client, incident_id)
    elder = _elder_doc(client, snap.elder_id)
    return render(
        "voice_script",
        cfg.locale,
        {
            "name": elder.get("name", ""),
            "minutes": max(0, round((cfg.clock.time() - snap.t0) / 60)),
            "trigger": messages.trigger_name(snap.fields.get("trigger", ""), cfg.locale),
            "place": place_hint(elder, snap.fields, cfg.locale),
        },
        drill=snap.drill,
    )


def search_area(client: redis.Redis, cfg: AlertsConfig, *, snap: Snapshot) -> dict[str, Any]:
    """Where to look now: the live fix while the bracelet reports, else rings (``last_seen``)."""
    return last_seen.search_area(
        client,
        now=cfg.clock.time(),
        elder_id=snap.elder_id,
        incident_id=snap.incident_id,
        fields=snap.fields,
    )


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
    _mutate(
        client,
        cfg,
        incident_id,
        _decide(lambda v: escalation.dispatcher_pages(v, more=more, team=team)),
        actor=actor_of(caller),
        channel="console",
    )
    return load(client, incident_id)
