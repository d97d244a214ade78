"""Retention, swept by the ticker once a minute: each domain forgets what is past its time.

Tracks, her events and transitions go after ``TRACK_RETENTION_S`` (through an index of each
stream's oldest entry, never a SCAN), dead letters after the same (at most 10,000 kept);
closed incidents keep only their SLA figures after ``INCIDENT_RETENTION_S``; the live feed
keeps a week. The alarm-carrying streams (transitions, device events, outbox) are not
trimmed here: only what every consumer group has handled may go, and that is theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from alerts.incidents import erasure as incident_erasure
from devices.telemetry import erasure as telemetry_erasure
from locator.core.logging import get_logger
from locator.core.settings import Settings

log = get_logger(__name__)

JOB = "retention"
EVERY_S = 60.0


@dataclass(frozen=True)
class Retention:
    track_s: int
    incident_s: int
    feed_s: int = incident_erasure.FEED_WINDOW_S

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(track_s=settings.track_retention_s, incident_s=settings.incident_retention_s)


def sweep(client: redis.Redis, policy: Retention, *, now: float) -> dict[str, int]:
    """One pass; each step is bounded and idempotent, so a busy store catches up over passes."""
    done = {
        "stream_entries": telemetry_erasure.sweep(client, now=now, retention_s=policy.track_s),
        "rejected": telemetry_erasure.trim_rejected(client, now=now, window_s=policy.track_s),
        "incidents": incident_erasure.sweep_closed(client, now=now, retention_s=policy.incident_s),
        "feed": incident_erasure.trim_feed(client, now=now, window_s=policy.feed_s),
    }
    if any(done.values()):
        log.info("retention_swept", **done)
    return done
