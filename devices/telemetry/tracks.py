"""Her track across both stores: the one reader behind the track endpoint, the console's
replay, the export and the hand-off page.

Redis holds the hot window (``TRACK_HOT_S``, or all of ``TRACK_RETENTION_S`` without an
archive); the archive holds what the mover copied out of it. A fix being moved is briefly in
both: it is the same stream entry id in each, so it is returned once.
"""

from __future__ import annotations

from datetime import timedelta

import anyio
import redis.asyncio as aioredis

from devices import keys
from devices.ingest.codecs import FUTURE_TOLERANCE_S
from devices.telemetry.archive import TrackArchive
from devices.telemetry.schemas import Fix
from locator.core import store

MAX_TRACK_POINTS = 10_000
# Bracelets upload fixes they buffered while out of coverage; look this far back in arrival
# order for fixes whose own time falls in the window asked for.
LATE_ARRIVAL_SLACK = timedelta(days=1)


def reaches_archive(archive: TrackArchive | None, *, since: float, now: float) -> bool:
    """Whether fixes of this window can be archived: an archived fix arrived before the hot
    window, and its fix time is at most the codecs' future tolerance after its arrival."""
    return archive is not None and since <= now - archive.hot_s + FUTURE_TOLERANCE_S


async def read_track(
    redis: aioredis.Redis,
    *,
    archive: TrackArchive | None,
    elder_id: int,
    since: float,
    until: float,
    now: float,
    limit: int = MAX_TRACK_POINTS,
) -> list[Fix]:
    """Her fixes with fix time in [since, until] from both stores, oldest first, each once;
    when there are more than ``limit``, the latest ``limit``. Not authorised: callers are."""
    found: dict[tuple[str, str], Fix] = {}
    if archive is not None and reaches_archive(archive, since=since, now=now):
        cold = await anyio.to_thread.run_sync(
            lambda: archive.read(elder_id=elder_id, since=since, until=until, limit=limit)
        )
        found.update(((f.device_id, f.entry_id), f) for f in cold)
    devices = store.texts(await redis.smembers(keys.elder_track_devices(elder_id)))
    # Stream ids are milliseconds since 1970: an earlier `since` reads from the start.
    start = str(max(0, int((since - LATE_ARRIVAL_SLACK.total_seconds()) * 1000)))
    for device_id in sorted(devices):
        # Newest arrivals first, so a window with more fixes than the cap keeps its latest.
        entries: list[tuple[str, dict[str, str]]] = await redis.xrevrange(  # type: ignore[assignment]
            keys.track(elder_id, device_id), "+", start, count=limit
        )
        for entry_id, fields in entries:
            if since <= float(fields["tst"]) <= until:
                found[(device_id, entry_id)] = Fix.from_stream(device_id, entry_id, fields)
    fixes = sorted(found.values(), key=lambda f: (f.tst, f.entry_id))
    return fixes[-limit:]
