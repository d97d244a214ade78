"""SLA reports: one row per incident from its own record and timeline, and the aggregates.

Respond = first volunteer or team-member accept − t0; on site = first responder on scene −
t0; both against the incident's own policy snapshot (180 s and 600 s by default). An
incident with no accept is a respond breach once it is closed or its deadline has passed;
an open one still inside its window is pending and counts in no percentage. Cancelled
incidents (raised in error) are listed but left out of compliance and percentiles.
Percentiles are nearest-rank.

Drills (alerts/incidents/drills.py) are reported apart: a report holds real incidents only,
or (``drill=True``) drills only. Per volunteer and per team (its members' figures summed):
alerted, answered (accepted or declined), and how long each took from their own page to
accept and to be on site (p50/p90): the figures a drill is run to find.
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime
from typing import Any

import redis

from alerts import keys
from alerts.incidents import storage
from devices.elders.service import guardian_elders, read_elder
from locator.core.auth import Principal, Role
from locator.core.clock import isoformat, parse_iso
from locator.core.redis import get_many

COLUMNS = (
    "incident_id",
    "code",
    "elder_id",
    "elder_name",
    "trigger",
    "status",
    "outcome",
    "t0",
    "first_notified_at",
    "first_accept_at",
    "first_accept_by",
    "first_accept_name",
    "first_accept_channel",
    "first_on_site_at",
    "resolved_at",
    "respond_s",
    "onsite_s",
    "respond_breached",
    "onsite_breached",
    "team",
    "drill",
)


def _iso(value: float | None) -> str | None:
    return None if value is None else isoformat(datetime.fromtimestamp(value, tz=UTC))


def _f(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def nearest_rank(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _sla_state(
    elapsed: float | None, limit: float, *, closed_at: float | None, now: float, t0: float
) -> str:
    """met | breached | pending | n/a (closed before its deadline: nothing left to keep)."""
    if elapsed is not None:
        return "met" if elapsed <= limit else "breached"
    if closed_at is not None:
        return "breached" if closed_at > t0 + limit else "n/a"
    return "breached" if now > t0 + limit else "pending"


def row(
    client: redis.Redis, incident_id: int, *, now: float, teams: dict[int, str]
) -> dict[str, Any]:
    """One incident's report row, read from its record, timeline and attempts."""
    snap = storage.load(client, incident_id)
    elder_id, f = snap.elder_id, snap.fields
    timeline = storage.read_timeline(client, elder_id=elder_id, incident_id=incident_id)
    attempts = [str(a) for a in client.zrange(keys.incident_attempts(elder_id, incident_id), 0, -1)]
    sent = []
    for attempt in attempts:
        at = client.hget(keys.attempt(attempt), "sent_at")
        if at:
            sent.append(float(str(at)))
    elder = read_elder(client, elder_id=elder_id)
    policy = json.loads(f["policy"])
    t0 = float(f["t0"])
    first_accept = next((e for e in timeline if e["type"] == "accepted"), None)
    acknowledged = _f(f.get("acknowledged_at"))
    on_site = _f(f.get("on_site_at"))
    closed_at = _f(f.get("resolved_at")) if f["status"] in ("resolved", "cancelled") else None
    if closed_at is None and f["status"] in ("resolved", "cancelled"):
        closed_at = now  # an old record without its closing time
    # Back home before anyone accepted: the search ended there, whenever the incident closed
    # (unless a dispatcher paged people again after it: then the clock ran on).
    home = None
    for entry in timeline:
        if entry["type"] == "returned_home":
            home = entry
        elif entry["type"] == "dispatcher_paged" and home is not None:
            home = None
    if home is not None and acknowledged is None:
        home_at = parse_iso(str(home["at"])).timestamp()
        closed_at = home_at if closed_at is None else min(closed_at, home_at)
    respond_sla, onsite_sla = (
        _sla_state(None if done is None else done - t0, limit, closed_at=closed_at, now=now, t0=t0)
        for done, limit in ((acknowledged, policy["respond_s"]), (on_site, policy["onsite_s"]))
    )
    respond_s = None if acknowledged is None else round(acknowledged - t0, 1)
    onsite_s = None if on_site is None else round(on_site - t0, 1)
    acceptor = int(f["acknowledged_by"]) if f.get("acknowledged_by") else None
    names = {}
    if acceptor is not None:
        doc = client.get(keys.volunteer(acceptor))
        names[acceptor] = json.loads(str(doc))["name"] if doc else None
    return {
        "incident_id": incident_id,
        "code": f["code"],
        "elder_id": elder_id,
        "elder_name": elder.name if elder else None,
        "trigger": f["trigger"],
        "status": f["status"],
        "outcome": f.get("outcome") or None,
        "t0": _iso(t0),
        "first_notified_at": _iso(min(sent)) if sent else None,
        "first_accept_at": _iso(acknowledged),
        "first_accept_by": acceptor,
        "first_accept_name": names.get(acceptor) if acceptor is not None else None,
        "first_accept_channel": first_accept.get("channel") if first_accept else None,
        "first_on_site_at": _iso(on_site),
        "resolved_at": _iso(_f(f.get("resolved_at"))),
        "respond_s": respond_s,
        "onsite_s": onsite_s,
        "respond_sla": respond_sla,
        "onsite_sla": onsite_sla,
        "respond_breached": respond_sla == "breached",
        "onsite_breached": onsite_sla == "breached",
        "team": teams.get(acceptor) if acceptor is not None else None,
        "drill": f.get("drill") == "1",
        "_t0": t0,
        "_timeline": timeline,
        "_responders": {
            int(k): json.loads(v)
            for k, v in client.hgetall(keys.incident_responders(elder_id, incident_id)).items()
        },
    }


def _group(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counted = [r for r in rows if r["status"] != "cancelled"]
    respond = [r["respond_s"] for r in counted if r["respond_s"] is not None]
    onsite = [r["onsite_s"] for r in counted if r["onsite_s"] is not None]

    def compliance(key: str) -> float | None:
        decided = [r for r in counted if r[key] in ("met", "breached")]
        if not decided:
            return None
        met = sum(1 for r in decided if r[key] == "met")
        return round(100.0 * met / len(decided), 1)

    return {
        "incidents": len(rows),
        "counted": len(counted),
        "respond_p50_s": nearest_rank(respond, 0.5),
        "respond_p90_s": nearest_rank(respond, 0.9),
        "onsite_p50_s": nearest_rank(onsite, 0.5),
        "onsite_p90_s": nearest_rank(onsite, 0.9),
        "respond_compliance_pct": compliance("respond_sla"),
        "onsite_compliance_pct": compliance("onsite_sla"),
    }


def _own_times(responder: dict[str, Any]) -> tuple[float | None, float | None]:
    """(accept, on site) seconds from this responder's own page; None when not done."""
    paged = _f(_str(responder.get("notified_at")))
    accepted = _f(_str(responder.get("accepted_at")))
    arrived = _f(_str(responder.get("arrived_at")))
    if paged is None:
        return None, None
    return (
        None if accepted is None else round(accepted - paged, 1),
        None if arrived is None else round(arrived - paged, 1),
    )


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _people(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Alerted, answered and own-page times over some volunteers' rows."""
    accept = [t for s in stats for t in s["_accept"]]
    onsite = [t for s in stats for t in s["_onsite"]]
    return {
        "alerted": sum(s["alerted"] for s in stats),
        "answered": sum(s["accepts"] + s["declines"] for s in stats),
        "accept_p50_s": nearest_rank(accept, 0.5),
        "accept_p90_s": nearest_rank(accept, 0.9),
        "on_site_p50_s": nearest_rank(onsite, 0.5),
        "on_site_p90_s": nearest_rank(onsite, 0.9),
    }


def summarize(
    rows: list[dict[str, Any]], names: dict[int, str], teams: dict[int, str] | None = None
) -> dict[str, Any]:
    """Aggregates overall, by trigger, by team of the first acceptor, and by volunteer."""
    by_trigger: dict[str, list[dict[str, Any]]] = {}
    by_team: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_trigger.setdefault(r["trigger"], []).append(r)
        by_team.setdefault(r["team"] or "no team", []).append(r)
    volunteers: dict[int, dict[str, Any]] = {}
    for r in rows:
        answered: dict[int, str] = {}
        for entry in r["_timeline"]:
            if entry["type"] in ("accepted", "declined") and entry.get("volunteer_id"):
                answered.setdefault(int(entry["volunteer_id"]), entry["type"])
        for vid in r["_responders"]:
            stats = volunteers.setdefault(
                vid,
                {
                    "volunteer_id": vid,
                    "name": names.get(vid),
                    "alerted": 0,
                    "accepts": 0,
                    "declines": 0,
                    "no_answers": 0,
                    "stood_down": 0,
                    "awaiting": 0,
                    "_accept": [],
                    "_onsite": [],
                },
            )
            stats["alerted"] += 1
            to_accept, to_site = _own_times(r["_responders"][vid])
            if to_accept is not None:
                stats["_accept"].append(to_accept)
            if to_site is not None:
                stats["_onsite"].append(to_site)
            first = answered.get(vid)
            if first == "accepted":
                stats["accepts"] += 1
            elif first == "declined":
                stats["declines"] += 1
            elif (
                r["_responders"][vid].get("state") == "stood_down"
                and r["respond_sla"] != "breached"
            ):
                stats["stood_down"] += 1  # covered, home or closed before they answered
            elif r["respond_sla"] == "pending":
                stats["awaiting"] += 1
            else:
                stats["no_answers"] += 1  # silent while the 3 minutes ran out
    team_of = teams or {}
    members: dict[str, list[dict[str, Any]]] = {}
    for vid, stats in volunteers.items():
        if vid in team_of:
            members.setdefault(team_of[vid], []).append(stats)
    team_rows = {k: _group(v) for k, v in by_team.items()}
    for name, stats_list in members.items():
        team_rows.setdefault(name, _group([])).update(_people(stats_list))
    by_volunteer = []
    for vid in sorted(volunteers):
        stats = volunteers[vid]
        public = {k: v for k, v in stats.items() if not k.startswith("_")}
        by_volunteer.append({**public, **_people([stats])})
    return {
        "overall": _group(rows),
        "by_trigger": {k: _group(v) for k, v in sorted(by_trigger.items())},
        "by_team": dict(sorted(team_rows.items())),
        "by_volunteer": by_volunteer,
    }


def _team_names(client: redis.Redis) -> dict[int, str]:
    """volunteer id -> the first team that lists them."""
    out: dict[int, str] = {}
    ids = [str(i) for i in client.zrange(keys.TEAMS, 0, -1)]
    for raw in get_many(client, [keys.team(int(i)) for i in ids]) if ids else []:
        if raw:
            team = json.loads(str(raw))
            for member in team["members"]:
                out.setdefault(int(member["volunteer_id"]), team["name"])
    return out


def sla_report(
    client: redis.Redis,
    *,
    caller: Principal,
    since: float | None,
    until: float | None,
    now: float,
    drill: bool = False,
) -> dict[str, Any]:
    """Rows for incidents (or drills) with t0 in [since, until) the caller may see."""
    ids = [int(str(i)) for i in client.zrange(keys.INCIDENTS, 0, -1)]
    # Two round trips pick the window (elder of each, then t0 of each); full rows are read
    # only for the incidents in it, not for every incident ever.
    elders: list[Any] = client.hmget(keys.INCIDENT_ELDER, [str(i) for i in ids]) if ids else []
    known = [(i, int(str(e))) for i, e in zip(ids, elders, strict=True) if e is not None]
    if caller.role is Role.GUARDIAN:
        own = set(guardian_elders(client, owner=caller.subject or ""))
        known = [(i, e) for i, e in known if e in own]
    pipe = client.pipeline(transaction=False)
    for incident_id, elder_id in known:
        pipe.hmget(keys.incident(elder_id, incident_id), "t0", "drill", "drill_announced")
    starts = pipe.execute() if known else []
    teams = _team_names(client)
    family = caller.role is Role.GUARDIAN
    rows = []
    for (incident_id, _), (t0_raw, is_drill, announced) in zip(known, starts, strict=True):
        if (is_drill == "1") != drill or (family and is_drill == "1" and announced != "1"):
            continue  # drills apart; an unannounced drill is staff's alone
        t0 = float(t0_raw) if t0_raw is not None else None
        if t0 is None or (since is not None and t0 < since) or (until is not None and t0 >= until):
            continue
        rows.append(row(client, incident_id, now=now, teams=teams))
    vids = sorted({v for r in rows for v in r["_responders"]})
    names = {}
    for vid, raw in zip(
        vids, client.mget([keys.volunteer(v) for v in vids]) if vids else [], strict=True
    ):
        if raw:
            names[vid] = json.loads(str(raw))["name"]
    summary = summarize(rows, names, teams)
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    return {"from": _iso(since), "to": _iso(until), "drill": drill, "rows": public, **summary}


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return out.getvalue()
