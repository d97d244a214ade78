"""Weekly schedules of zones (pure): when a zone is switched on, in local time."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def is_active(schedule: list[dict[str, Any]] | None, moment: datetime) -> bool:
    """True if ``moment`` (aware, in the service's time zone) falls in any window.

    A window is ``{"days": [1..7] (ISO weekday of the start), "start": "HH:MM",
    "end": "HH:MM"}``; an end at or before the start runs past midnight into the next day.
    No schedule means always on.
    """
    if not schedule:
        return True
    weekday, now = moment.isoweekday(), moment.time()
    yesterday = 7 if weekday == 1 else weekday - 1
    for window in schedule:
        start, end = _hhmm(window["start"]), _hhmm(window["end"])
        days = set(window.get("days") or range(1, 8))
        if start < end:
            if weekday in days and start <= now < end:
                return True
        else:  # crosses midnight
            if weekday in days and now >= start:
                return True
            if yesterday in days and now < end:
                return True
    return False
