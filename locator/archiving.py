"""The ticker's ``archive`` job (each minute, only with ``HOMEWARD_ARCHIVE_URL``): fixes older
than the hot window move to PostgreSQL, and archived days past ``TRACK_RETENTION_S`` go."""

from __future__ import annotations

import redis

from devices.telemetry import mover
from devices.telemetry.archive import TrackArchive
from locator.core.logging import get_logger

log = get_logger(__name__)

JOB = "archive"
EVERY_S = 60.0


def run(
    client: redis.Redis, archive: TrackArchive, *, now: float, retention_s: int
) -> dict[str, int]:
    """One pass of the mover, then the archive's retention; both idempotent."""
    done = {
        "fixes_moved": mover.move(client, archive, now=now, retention_s=retention_s),
        "days_dropped": archive.drop_before(cutoff=now - retention_s),
    }
    if any(done.values()):
        log.info("tracks_archived", **done)
    return done
