"""Reading incidents: who may see one, the API's answer, lists, the voice text, the search area."""

from __future__ import annotations

import json
from datetime import UTC, datetime, tzinfo
from typing import Any

import redis

from alerts import keys
from alerts.incidents import access, compose, drills, last_seen
from alerts.incidents.config import AlertsConfig
from alerts.incidents.schemas import IncidentRead, ResponderRead
from alerts.incidents.storage import Snapshot, as_str, elder_record, load, read_timeline
from devices.elders.service import guardian_elders
from locator.core.auth import Principal, Role
from locator.core.clock import isoformat
from locator.core.errors import Forbidden


def authorize(client: redis.Redis, *, caller: Principal, snap: Snapshot) -> None:
    """Staff see all; a guardian their own elders'; a volunteer what was sent to them."""
    if caller.is_staff:
        return
    if caller.role is Role.GUARDIAN:
        owner = elder_record(client, snap.elder_id).owner
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
    elder = elder_record(client, snap.elder_id)
    timeline = read_timeline(client, elder_id=snap.elder_id, incident_id=snap.incident_id)
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
        elder_name=elder.name,
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
        ids = [int(as_str(i)) for i in client.zrevrange(keys.elder_incidents(elder_id), 0, -1)]
    elif caller.is_staff:
        index = keys.INCIDENTS_OPEN if status == "open" else keys.INCIDENTS
        ids = [int(as_str(i)) for i in client.zrevrange(index, 0, -1)]
    elif caller.role is Role.VOLUNTEER:
        ids = [
            int(as_str(i))
            for i in client.zrevrange(keys.volunteer_incidents(caller.volunteer_id() or 0), 0, -1)
        ]
    else:
        elders = guardian_elders(client, owner=caller.subject or "")
        ids = sorted(
            {int(as_str(i)) for e in elders for i in client.zrange(keys.elder_incidents(e), 0, -1)},
            reverse=True,
        )
    if status != "all":
        open_ids = {int(as_str(i)) for i in client.zrange(keys.INCIDENTS_OPEN, 0, -1)}
        ids = [i for i in ids if (i in open_ids) == (status == "open")]
    ids = drills.keep(client, ids, drill=drill, family=caller.role is Role.GUARDIAN)
    after = int(cursor) if cursor and cursor.isdigit() else None
    if after is not None:
        ids = [i for i in ids if i < after]
    page = ids[:limit]
    return page, (str(page[-1]) if len(ids) > limit else None)


def voice_script(client: redis.Redis, cfg: AlertsConfig, *, incident_id: int) -> str:
    """The spoken alert of the voice step."""
    snap = load(client, incident_id)
    return compose.voice_text(cfg, elder=elder_record(client, snap.elder_id), fields=snap.fields)


def search_area(client: redis.Redis, cfg: AlertsConfig, *, snap: Snapshot) -> dict[str, Any]:
    """Where to look now: the live fix while the bracelet reports, else rings (``last_seen``)."""
    return last_seen.search_area(
        client,
        now=cfg.clock.time(),
        elder_id=snap.elder_id,
        incident_id=snap.incident_id,
        fields=snap.fields,
    )


def sla_states(client: redis.Redis, *, now: float) -> dict[str, int]:
    """Open incidents by SLA state at ``now`` (the watchdog's figures); drills counted apart."""
    states = {
        "awaiting_response": 0,
        "respond_breached": 0,
        "awaiting_on_site": 0,
        "on_site_breached": 0,
        "on_site": 0,
        "drill": 0,  # drills apart: a drill's breach is a finding, not an alarm
    }
    for raw in client.zrange(keys.INCIDENTS_OPEN, 0, -1):
        incident_id = str(raw)
        elder = client.hget(keys.INCIDENT_ELDER, incident_id)
        if elder is None:
            continue
        f: Any = client.hmget(
            keys.incident(int(str(elder)), int(incident_id)),
            "status",
            "respond_deadline",
            "onsite_deadline",
            "acknowledged_at",
            "drill",
        )
        if f[4] == "1":
            states["drill"] += 1
            continue
        status = f[0]
        if status == "open" and f[3]:
            status = "acknowledged"  # accepted in time, then withdrawn: the on-site clock runs
        if status == "open":
            late = now > float(f[1] or 0)
            states["respond_breached" if late else "awaiting_response"] += 1
        elif status == "acknowledged":
            late = now > float(f[2] or 0)
            states["on_site_breached" if late else "awaiting_on_site"] += 1
        elif status == "on_site":
            states["on_site"] += 1
    return states
