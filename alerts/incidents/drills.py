"""Drills: what sets a drill apart from a real incident, and who learns of it.

A drill is an ordinary incident record (the real ladder, real messages, real answers) with
``drill = "1"``. It hangs on the elder's drill pointer (``keys.open_drill``), never on her
open-incident pointer, so a real exit or SOS during a drill opens a real incident at once
instead of joining the drill. Every text it sends starts with the drill marker
(``messages.DRILL_PREFIX``), and its feed entries say ``"drill": true``.

Announced (the default): the family is told beforehand (one drill-marked notice when the
drill is set up), sees it among her incidents, and, with ``DRILL_NOTIFY_FAMILY``, also gets
the ladder's family messages, drill-marked. Unannounced: only staff know; the family gets
nothing and does not see it (volunteers' texts still say 演练: a drill never pages anyone
with an unmarked alarm).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from alerts import keys
from alerts.escalation import Notice
from locator.core.errors import Conflict


def fields(*, announced: bool, scheduled_for: float | None) -> dict[str, str]:
    """The fields that make an incident a drill."""
    out = {"drill": "1", "drill_announced": "1" if announced else ""}
    if scheduled_for is not None:
        out["drill_scheduled_for"] = repr(scheduled_for)
    return out


def is_drill(fields: dict[str, str]) -> bool:
    return fields.get("drill") == "1"


def family_sees(fields: dict[str, str]) -> bool:
    """An unannounced drill is staff's secret; anything else the family may see."""
    return not is_drill(fields) or fields.get("drill_announced") == "1"


def feed_marks(fields: dict[str, str]) -> dict[str, bool]:
    """What a feed entry says of a drill: that it is one, and whether the family may know."""
    if not is_drill(fields):
        return {}
    return {"drill": True, "drill_announced": fields.get("drill_announced") == "1"}


def family_hears(feed_data: str | None) -> bool:
    """Whether a feed entry (its ``data`` JSON) may reach the family's live stream."""
    data = json.loads(feed_data or "{}")
    return not data.get("drill") or bool(data.get("drill_announced"))


def family_filter(
    notices: list[Notice], *, fields: dict[str, str], notify_family: bool
) -> list[Notice]:
    """A drill's notices without the family's, unless announced and the setting asks."""
    if notify_family and family_sees(fields):
        return notices
    return [n for n in notices if n.recipient != "guardians"]


def running(client: redis.Redis, elder_id: int, *, drill: bool) -> int | None:
    """The open incident a new alarm would join (real), or 409 if a drill runs already."""
    raw = client.get(keys.open_drill(elder_id) if drill else keys.open_incident(elder_id))
    found = int(raw) if raw else None
    if found is not None and drill:
        raise Conflict(f"a drill is already running for elder {elder_id} (incident {found})")
    return found


def drill_id(client: redis.Redis, elder_id: int) -> int | None:
    """Her running drill, if any."""
    raw = client.get(keys.open_drill(elder_id))
    return int(raw) if raw else None


def keep(client: redis.Redis, ids: list[int], *, drill: bool | None, family: bool) -> list[int]:
    """``ids`` filtered: drills only / real only (``drill``), and what the family may see."""
    if not ids or (drill is None and not family):
        return ids
    elders: list[Any] = client.hmget(keys.INCIDENT_ELDER, [str(i) for i in ids])
    known = [(i, int(str(e))) for i, e in zip(ids, elders, strict=True) if e is not None]
    pipe = client.pipeline(transaction=False)
    for incident_id, elder_id in known:
        pipe.hmget(keys.incident(elder_id, incident_id), "drill", "drill_announced")
    out = []
    for (incident_id, _), (flag, announced) in zip(known, pipe.execute(), strict=True):
        marks = {"drill": flag or "", "drill_announced": announced or ""}
        if drill is not None and is_drill(marks) != drill:
            continue
        if family and not family_sees(marks):
            continue
        out.append(incident_id)
    return out
