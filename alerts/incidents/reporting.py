"""Guards on the manual "missing" report: a sane place, and not a way to page a town.

Each report pages real volunteers by SMS and voice, so a guardian's reports are counted
(before any work is done) and a place far from her home is refused rather than paging the
volunteers near it.
"""

from __future__ import annotations

import redis

from alerts import keys
from geofences.zones.service import MAX_FROM_HOME_M
from locator.core import crs
from locator.core.auth import Principal, Role
from locator.core.errors import TooManyRequests, Unprocessable
from locator.core.scripts import Script

REPORTS_PER_WINDOW = 5
WINDOW_S = 3600

# Drop reports older than the window, refuse when the window is full (answering when its
# oldest report leaves it), else count this one. One script: two reports at once cannot
# both take the last place.
_COUNT = Script(
    """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, oldest[2]}
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, ARGV[1]}
""",
    name="missing_reports_count",
)


def count_report(client: redis.Redis, *, caller: Principal, now: float, report_id: str) -> None:
    """429 with Retry-After once a guardian made ``REPORTS_PER_WINDOW`` reports in an hour."""
    if caller.role is not Role.GUARDIAN or not caller.subject:
        return  # dispatch works many incidents at once
    allowed, since = _COUNT(
        client,
        keys=[keys.missing_reports(caller.subject)],
        args=[repr(now), WINDOW_S, REPORTS_PER_WINDOW, report_id],
    )
    if not int(allowed):
        wait = int(float(since) + WINDOW_S - now) + 1
        raise TooManyRequests(
            f"at most {REPORTS_PER_WINDOW} missing reports an hour; try again in {wait} s "
            "or call the dispatcher",
            retry_after_s=wait,
        )


def check_place(
    home: tuple[float, float] | None,
    *,
    lat: float,
    lon: float,
    field: tuple[str, ...] = ("last_seen_at",),
) -> None:
    """422 on ``field`` when the place is further from her home than a zone may be."""
    if home is None:
        return
    metres = crs.haversine_m(home[0], home[1], lat, lon)
    if metres > MAX_FROM_HOME_M:
        raise Unprocessable(
            list(field),
            f"{metres / 1000:.1f} km from her home (at most {MAX_FROM_HOME_M / 1000:.0f} km): "
            "check the place, or call the dispatcher",
        )
