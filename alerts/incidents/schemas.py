"""Bodies and answers of the incident API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, ValidationInfo, field_validator

from locator.core.schemas import CrsName, LatLon, Strict

OutcomeName = Literal[
    "found_safe", "returned_home", "found_injured", "handed_to_police", "false_alarm", "other"
]
Note = Annotated[str, Field(max_length=1000)]


class MissingReport(Strict):
    """A guardian or dispatcher reports the elder missing."""

    elder_id: int = Field(gt=0)
    note: Note = ""
    last_seen_at: LatLon | None = None
    # When she was last seen (ISO-8601; without an offset: the service's time zone).
    last_seen_time: datetime | None = None
    crs: CrsName = "wgs84"
    # Staff only: a drill (alerts/incidents/drills.py), now or at ``start_at``.
    drill: bool = False
    announced: bool = True
    start_at: AwareDatetime | None = None

    @field_validator("announced", "start_at")
    @classmethod
    def _drill_only(cls, value: object, info: ValidationInfo) -> object:
        # Silently opening a real incident for what was meant as a later drill pages for real.
        if not info.data.get("drill") and value not in (True, None):
            raise ValueError('only for a drill ("drill": true)')
        return value


class SightingBody(Strict):
    """Someone saw her: where and when (a neighbour at the bus stop at 14:10)."""

    at: LatLon
    time: datetime
    note: Note = ""
    crs: CrsName = "wgs84"


class DrillScheduled(BaseModel):
    """A drill set for later: the ticker opens it at ``start_at``."""

    drill: bool = True
    elder_id: int
    start_at: str
    announced: bool
    job: str


class ResolveBody(Strict):
    outcome: OutcomeName
    note: Note = ""


class FoundBody(Strict):
    outcome: OutcomeName = "found_safe"
    note: Note = ""


class CancelBody(Strict):
    note: Note = ""


class ResponderRead(BaseModel):
    volunteer_id: int
    name: str | None = None
    kind: str
    state: str
    notified_at: str | None = None
    accepted_at: str | None = None
    arrived_at: str | None = None
    distance_m: float | None = None


class IncidentRead(BaseModel):
    id: int
    code: str
    elder_id: int
    elder_name: str | None = None
    status: Literal["open", "acknowledged", "on_site", "resolved", "cancelled"]
    trigger: str
    t0: str
    respond_deadline: str
    onsite_deadline: str
    acknowledged_at: str | None = None
    on_site_at: str | None = None
    resolved_at: str | None = None
    outcome: str | None = None
    suggested_outcome: str | None = None
    respond_breached: bool = False
    onsite_breached: bool = False
    next_step: str | None = None
    next_step_at: str | None = None
    origin: dict[str, float] | None = None
    note: str = ""
    policy: dict[str, Any]
    drill: bool = False  # a drill (演练): reported apart, never joined by a real alarm
    drill_announced: bool | None = None  # drills only: the family was told beforehand
    responders: list[ResponderRead]
    timeline: list[dict[str, Any]]


class NotificationRead(BaseModel):
    id: str
    incident_id: int | None
    elder_id: int
    step: str
    recipient: str
    channel: str
    template: str
    text: str
    status: str
    error: str
    tries: int
    created_at: str
    sent_at: str | None
    fallback_of: str | None


class TicketRead(BaseModel):
    ticket: str
    expires_in: int
    url: str
