"""The throttle's token arithmetic against its plain min/max statement, on any arrival order."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.ingest.throttle import Throttle

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class _Bucket:
    tokens: float
    at: float
    alarm_at: float = float("-inf")


class ReferenceThrottle:
    """Token buckets as first written: refill by max/min, then take a token."""

    def __init__(self, rate_per_s: float, burst: int, alarm_every_s: float) -> None:
        self.rate_per_s, self.burst, self.alarm_every_s = rate_per_s, burst, alarm_every_s
        self.buckets: dict[str, _Bucket] = {}

    def allow(self, route: str, now: float, *, alarm: bool = False) -> bool:
        bucket = self.buckets.setdefault(route, _Bucket(tokens=float(self.burst), at=now))
        elapsed = max(0.0, now - bucket.at)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate_per_s)
        bucket.at = max(bucket.at, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        if alarm and now - bucket.alarm_at >= self.alarm_every_s:
            bucket.alarm_at = now
            return True
        return False


ARRIVALS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        # Mostly forward in small steps, sometimes a step back (clock skew between brokers).
        st.one_of(st.floats(0, 3, allow_nan=False), st.floats(-5, 0, allow_nan=False)),
        st.booleans(),
    ),
    max_size=80,
)


@FUZZ
@given(
    ARRIVALS,
    st.sampled_from([0.5, 1.0, 3.0]),
    st.sampled_from([1, 3, 10]),
)
def test_allow_agrees_with_the_min_max_reference(
    arrivals: list[tuple[str, float, bool]], rate: float, burst: int
) -> None:
    throttle = Throttle(rate_per_s=rate, burst=burst, alarm_every_s=10.0)
    reference = ReferenceThrottle(rate, burst, 10.0)
    now = 1000.0
    for route, step, alarm in arrivals:
        now += step
        assert throttle.allow(route, now, alarm=alarm) == reference.allow(route, now, alarm=alarm)
    for route, bucket in reference.buckets.items():
        mine = throttle._buckets[route]
        assert (mine.tokens, mine.at, mine.alarm_at) == (bucket.tokens, bucket.at, bucket.alarm_at)
