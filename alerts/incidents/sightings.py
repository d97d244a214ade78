"""Sightings: dispatch corrects where and when she was last seen, and pages around it once.

A neighbour saw her at the bus stop at 14:10: the sighting goes on the timeline, becomes the
incident's Point Last Seen (a newer good bracelet fix still wins, see ``last_seen``) and the
nearest on-duty volunteers around it are paged through the ladder's own commit path, as
"notify more" does. Only once per real move: a sighting pages again only when it is more
than ``REPAGE_FROM_M`` from the place volunteers were last paged around (the opening place or
the last sighting that paged) and no sighting paged in the last ``REPAGE_EVERY_S``; an edit
of the same sighting, or a flurry of them, re-centres the rings without paging anyone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis

from alerts import escalation
from alerts.escalation import Change
from alerts.incidents import last_seen, paging, reporting, service, storage
from alerts.incidents.config import AlertsConfig
from alerts.incidents.storage import Snapshot
from devices.telemetry.positions import LastPosition
from devices.telemetry.readers import read_position
from locator.core import crs
from locator.core.auth import Principal
from locator.core.errors import Conflict, Forbidden

REPAGE_FROM_M = 500.0
REPAGE_EVERY_S = 600.0


def repage_reason(*, moved_m: float, since_last_s: float | None, fix_newer: bool) -> str:
    """Why a sighting pages nobody ("" when it pages): pure, the rule in one place."""
    if fix_newer:
        return "newer_fix"  # the bracelet says where she is: the rings follow it already
    if moved_m <= REPAGE_FROM_M:
        return "near_last_page"
    if since_last_s is not None and since_last_s < REPAGE_EVERY_S:
        return "paged_recently"
    return ""


def _decide(
    snap: Snapshot, pos: LastPosition | None, seen: last_seen.Origin, *, note: str, now: float
) -> Change:
    if snap.status not in escalation.ACTIVE:
        raise Conflict(f"cannot record a sighting: the incident is {snap.status}")
    f = snap.fields
    paged_lat = float(f.get("paged_lat") or f["origin_lat"])
    paged_lon = float(f.get("paged_lon") or f["origin_lon"])
    fix, _ = last_seen.current(pos, {})
    repaged_at = float(f["repaged_at"]) if f.get("repaged_at") else None
    reason = repage_reason(
        moved_m=crs.haversine_m(paged_lat, paged_lon, seen.lat, seen.lon),
        since_last_s=None if repaged_at is None else now - repaged_at,
        fix_newer=fix is not None and fix.time >= seen.time,
    )
    change = Change(fields=dict(seen.fields()))
    entry: dict[str, Any] = {
        "type": "sighting",
        "at_position": {"lat": seen.lat, "lon": seen.lon},
        "seen_at": seen.doc()["time"],
        "note": note,
        "repaged": not reason,
    }
    if reason:
        entry["reason"] = reason
    else:
        # The ladder's own "page the nearest": ``_people_for`` pages around this change's
        # origin, excluding everyone already on the incident.
        change.more_nearby = snap.policy.nearby_count
        change.fields.update(paged_lat=seen.lat, paged_lon=seen.lon, repaged_at=now)
        # Someone is out looking again: a later alarm joins rather than closes it.
        change.fields["suggested_outcome"] = ""
    change.timeline.append(entry)
    return change


def record(
    client: redis.Redis,
    cfg: AlertsConfig,
    *,
    caller: Principal,
    incident_id: int,
    lat: float,
    lon: float,
    seen_time: float,
    note: str = "",
) -> Snapshot:
    """Dispatch records a sighting: the new Point Last Seen; pages around it once (staff)."""
    if not caller.is_staff:
        raise Forbidden("sightings are recorded by dispatch: the family calls the dispatcher")
    snap = storage.load(client, incident_id)
    now = cfg.clock.time()
    when = last_seen.check_time(seen_time, now=now, field="time")
    home = storage.elder_record(client, snap.elder_id).home
    reporting.check_place(home, lat=lat, lon=lon, field=("at",))
    seen = last_seen.Origin(lat, lon, when, "sighting", "sighting")
    pos = read_position(client, elder_id=snap.elder_id)
    paging.mutate(
        client,
        cfg,
        incident_id,
        lambda s: _decide(s, pos, seen, note=note, now=now),
        actor=service.actor_of(caller),
        channel="console",
    )
    return storage.load(client, incident_id)


def to_epoch(moment: datetime, cfg: AlertsConfig) -> float:
    """An API time as epoch seconds; without an offset it is the service's local time."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=cfg.timezone)
    return moment.astimezone(UTC).timestamp()
