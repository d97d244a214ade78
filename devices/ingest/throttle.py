"""Per-device flood control for the ingest: a token bucket per uplink route (pure).

A broken or hostile bracelet (50 "late" fixes a second, or thousands) must not fill Redis
nor delay everyone else's fixes. Each route (one device's topic) may send a burst of
``burst`` messages and ``rate_per_s`` a second after that, whatever its reporting interval:
a bracelet flushing fixes it buffered while out of coverage fits the burst, a flood does
not. An alarm (SOS, fall, removed) still passes an empty bucket once every
``alarm_every_s``, so a flooding bracelet worn by someone in trouble is not silenced.

The state lives in the ingest process (no Redis round trip per fix); each ingest process
throttles what it receives. Drops are aggregated: the caller writes one counter increment
per device and batch, and one sampled dead letter per device every ``sample_every_s``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

# No bracelet reports faster than once a second for long (fast mode is 15 s; OwnTracks'
# move mode a few seconds), and a flood stored at this rate still adds one track entry a
# second. The burst covers a backlog of buffered fixes after a reconnect, delivered twice.
RATE_PER_S = 1.0
BURST = 300
ALARM_EVERY_S = 10.0
SAMPLE_EVERY_S = 10.0
MAX_TRACKED = 100_000  # routes with state; idle full buckets are forgotten beyond this


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    alarm_at: float = float("-inf")
    sampled_at: float = float("-inf")
    dropped_since_sample: int = 0


class Throttle:
    """Token buckets by route; ``allow`` says whether one message may go on."""

    def __init__(
        self,
        *,
        rate_per_s: float = RATE_PER_S,
        burst: int = BURST,
        alarm_every_s: float = ALARM_EVERY_S,
        sample_every_s: float = SAMPLE_EVERY_S,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.alarm_every_s = alarm_every_s
        self.sample_every_s = sample_every_s
        self.max_tracked = max_tracked
        self._buckets: dict[Hashable, _Bucket] = {}

    def allow(self, route: Hashable, now: float, *, alarm: bool = False) -> bool:
        """Take a token for one message of ``route`` at ``now``; False: drop it."""
        bucket = self._buckets.get(route)
        if bucket is None:
            if len(self._buckets) >= self.max_tracked:
                self._forget_idle(now)
            bucket = self._buckets[route] = _Bucket(tokens=float(self.burst), at=now)
        # Refill for the time since the last message, capped at the burst; a clock step
        # back refills nothing. Written out, not with min/max: this runs for every message.
        tokens = bucket.tokens
        if now > bucket.at:
            tokens += (now - bucket.at) * self.rate_per_s
            if tokens > self.burst:
                tokens = float(self.burst)
            bucket.at = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return True
        bucket.tokens = tokens
        if alarm and now - bucket.alarm_at >= self.alarm_every_s:
            bucket.alarm_at = now
            return True
        return False

    def dropped(self, route: Hashable, count: int, now: float) -> int | None:
        """Record ``count`` drops; returns the drops to report in a sample now, else None."""
        bucket = self._buckets[route]
        bucket.dropped_since_sample += count
        if now - bucket.sampled_at < self.sample_every_s:
            return None
        bucket.sampled_at = now
        total, bucket.dropped_since_sample = bucket.dropped_since_sample, 0
        return total

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them changes nothing they would allow."""
        full_after = self.burst / self.rate_per_s
        idle = [r for r, b in self._buckets.items() if now - b.at >= full_after]
        for route in idle:
            del self._buckets[route]
        if len(self._buckets) >= self.max_tracked:
            # Everyone is busy (a spray of fresh topics): forget the oldest half.
            ordered = sorted(self._buckets, key=lambda r: self._buckets[r].at)
            for route in ordered[: len(ordered) // 2]:
                del self._buckets[route]
