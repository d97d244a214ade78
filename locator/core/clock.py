"""The only caller of "now": tests drive time through a ManualClock instead of sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def time(self) -> float:
        """Current time as epoch seconds."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 23, 8, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def time(self) -> float:
        return self._now.timestamp()

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def set(self, moment: datetime) -> None:
        self._now = moment


def isoformat(moment: datetime) -> str:
    """ISO-8601 UTC with a Z suffix, the format of every time in the HTTP contract."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ms_to_iso(epoch_ms: float) -> str:
    """Epoch milliseconds as ISO-8601 UTC."""
    return isoformat(datetime.fromtimestamp(epoch_ms / 1000, UTC))


def parse_iso(text: str) -> datetime:
    """ISO-8601 to an aware UTC datetime; a naive time is taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
