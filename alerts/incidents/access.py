"""What a volunteer still sees of an incident once it is over: how it ended, never where.

A volunteer is sent an incident to find someone; once it closes she has no reason to know
where that person is or was (PIPL: whereabouts are sensitive personal information).
"""

from __future__ import annotations

import json
from typing import Any

from alerts import escalation
from alerts.incidents.schemas import IncidentRead
from locator.core.auth import Principal, Role
from locator.core.errors import Forbidden

_COORDINATES = frozenset({"lat", "lon", "latitude", "longitude", "coordinates", "geometry"})


def over_for(caller: Principal, status: str) -> bool:
    """True when ``caller`` is a volunteer and the incident no longer runs."""
    return caller.role is Role.VOLUNTEER and status not in escalation.ACTIVE


def require_running(caller: Principal, *, status: str, incident_id: int) -> None:
    """403 for a volunteer asking where to look once the incident is closed."""
    if over_for(caller, status):
        raise Forbidden(f"incident {incident_id} is closed: its positions are not yours to see")


def _has_coordinates(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k in _COORDINATES or _has_coordinates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_coordinates(v) for v in value)
    return False


def _without_coordinates(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in _COORDINATES and not _has_coordinates(v)}


def redact(incident: IncidentRead, caller: Principal) -> IncidentRead:
    """The incident as a volunteer may see it: unchanged while it runs, its outcome after."""
    if not over_for(caller, incident.status):
        return incident
    return incident.model_copy(
        update={
            "origin": None,
            "note": "",  # a family's report says where she was last seen
            "timeline": [_without_coordinates(e) for e in incident.timeline],
        }
    )


def feed_event_allowed(*, incident_open: bool, data: str | None) -> bool:
    """A volunteer's feed: her incident's events while it runs, then only its closing one."""
    if incident_open:
        return True
    try:
        event = json.loads(data or "{}")
    except ValueError:
        return False
    status = event.get("status")
    return status in ("resolved", "cancelled") and status in (event.get("change") or [])
