"""Forgetting ingested data: an erased elder's fixes and events, and whatever is past retention.

The ingest writes; this module is the devices domain's only eraser of what it wrote:
positions, tracks, device state and events, and dead letters.
"""

from __future__ import annotations

from typing import Any

import redis

from devices import keys
from devices.telemetry.archive import TrackArchive
from locator.core import keys as core_keys
from locator.core import shards, streams, timers
from locator.core.scripts import Script

# Dead letters carry the payload a bracelet sent (coordinates included): kept as long as
# tracks, and never more than this many (the ingest caps the stream at ~10,000 too).
REJECTED_MAX = 10_000
SWEEP_BATCH = 200


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def erase_elder(client: redis.Redis, *, elder_id: int, archive: TrackArchive | None) -> list[str]:
    """Delete her position, tracks (archived ones too), device state, events and dead
    letters; her device ids."""
    devices = sorted(_s(d) for d in client.smembers(keys.elder_track_devices(elder_id)))
    bound = client.get(keys.elder_device(elder_id))
    if bound and _s(bound) not in devices:
        devices.append(_s(bound))
    per_device = [
        k
        for d in devices
        for k in (
            keys.track(elder_id, d),
            keys.device_state(elder_id, d),
            keys.fix_dedupe(elder_id, d),
        )
    ]
    own = [
        keys.last_position(elder_id),
        keys.elder_events(elder_id),
        keys.elder_track_devices(elder_id),
        keys.follow_ups(elder_id),
        keys.fast_mode(elder_id),
    ]
    client.delete(*own, *per_device, core_keys.relay(elder_id))
    # Her shard's index apart (another slot on a cluster); an entry left by a crash here
    # names a stream that no longer exists, which the sweep drops.
    index = core_keys.retention_streams(shards.shard_of(elder_id))
    client.zrem(index, keys.elder_events(elder_id), *(keys.track(elder_id, d) for d in devices))
    # After her Redis tracks: a copy still in flight then finds them gone and rolls back.
    if archive is not None:
        archive.erase_elder(elder_id=elder_id)
    for d in devices:
        for kind in ("offline", "fastmode"):
            timers.cancel(client, timers.job_id(kind, elder_id, d))
    elder = str(elder_id)
    events = keys.device_events(shards.shard_of(elder_id))
    streams.purge(client, events, lambda f: f.get("elder_id") == elder)
    mine = set(devices)
    streams.purge(
        client,
        core_keys.REJECTED,
        lambda f: f.get("elder_id") == elder or f.get("device_id") in mine,
    )
    return devices


def sweep(client: redis.Redis, *, now: float, retention_s: int, limit: int = SWEEP_BATCH) -> int:
    """Trim per-elder streams whose oldest entry is past retention (index, no SCAN).

    Entries go by their ``received_ms`` (the service clock at arrival), oldest first; a
    stream left empty is deleted. Returns how many entries went.
    """
    cutoff = now - retention_s
    removed = 0
    for shard in shards.every():
        index = core_keys.retention_streams(shard)
        due: Any = client.zrangebyscore(index, "-inf", cutoff, start=0, num=limit)
        for stream in (_s(k) for k in due):
            removed += _trim_one(client, stream, cutoff_ms=cutoff * 1000)
    return removed


def _trim_one(client: redis.Redis, stream: str, *, cutoff_ms: float) -> int:
    removed = 0
    while True:
        entries: Any = client.xrange(stream, "-", "+", count=SWEEP_BATCH)
        old = [e for e, f in entries if float(f.get("received_ms") or 0) < cutoff_ms]
        removed += streams.delete_entries(client, stream, [_s(e) for e in old])
        if len(old) < len(entries) or len(entries) < SWEEP_BATCH:
            break
    reindex(client, stream)
    return removed


def reindex(client: redis.Redis, stream: str) -> None:
    """Move a trimmed stream's index entry on to its oldest entry, or drop both if empty."""
    index = core_keys.retention_streams_of(stream)
    oldest: Any = client.xrange(stream, "-", "+", count=1)
    if oldest:
        score = float(oldest[0][1].get("received_ms") or 0) / 1000
        client.zadd(index, {stream: score}, xx=True)
        return
    # Nothing left: the key goes (checked in a script on her slot, so a fix stored meanwhile
    # is not deleted with it), then its index entry (the index is another slot). A fix
    # stored between the two found no stream and relayed a fresh index entry, which this
    # ZREM may have removed: the stream is looked at again and re-entered if it is back.
    if _DROP_IF_EMPTY(client, keys=[stream]):
        client.zrem(index, stream)
        again: Any = client.xrange(stream, "-", "+", count=1)
        if again:
            score = float(again[0][1].get("received_ms") or 0) / 1000
            client.zadd(index, {stream: score}, nx=True)


_DROP_IF_EMPTY = Script(
    """
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
""",
    name="drop_if_empty",
)


def trim_rejected(client: redis.Redis, *, now: float, window_s: int) -> int:
    """Dead letters keep a window: the last ``window_s`` seconds, at most REJECTED_MAX."""
    min_id = f"{int((now - window_s) * 1000)}-0"
    pipe = client.pipeline(transaction=False)
    pipe.xtrim(core_keys.REJECTED, minid=min_id)
    pipe.xtrim(core_keys.REJECTED, maxlen=REJECTED_MAX)
    by_time, by_count = pipe.execute()
    return int(by_time) + int(by_count)
