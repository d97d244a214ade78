"""Reads of ingested data: last position, tracks, device events, dead-lettered uplinks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from devices import keys
from devices.elders import service as elders
from devices.telemetry import tracks
from devices.telemetry.archive import TrackArchive
from devices.telemetry.schemas import (
    DeviceEventRead,
    Fix,
    PositionRead,
    RejectedRead,
    TrackCollection,
)
from locator.core import keys as core_keys
from locator.core import store
from locator.core.auth import Principal, Role
from locator.core.clock import Clock, ms_to_iso
from locator.core.errors import Forbidden, NotFound, Unprocessable
from locator.core.schemas import LatLon, Page

# A fix older than this is shown as stale: twice the 10-minute fast-reporting window is
# long enough that "where she is now" must not be read from it.
STALE_AFTER_S = 600


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _epoch_iso(value: str) -> str:
    return ms_to_iso(float(value) * 1000)


async def position(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, clock: Clock
) -> PositionRead:
    """Where an elder was last seen (never moved by a late, stale or rejected fix)."""
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=False)
    pos: dict[str, str] = await redis.hgetall(keys.last_position(elder_id))  # type: ignore[assignment]
    if not pos.get("tst"):
        raise NotFound(f"no position yet for elder {elder_id}")
    battery = pos.get("battery")
    return PositionRead(
        lat=float(pos["lat"]),
        lon=float(pos["lon"]),
        acc=_float(pos.get("acc")),
        src=pos.get("src") or "gps",
        tst=_epoch_iso(pos["tst"]),
        received_at=ms_to_iso(float(pos["received_ms"])),
        battery=int(battery) if battery else None,
        stale=clock.time() - float(pos["tst"]) > STALE_AFTER_S,
        device_id=pos.get("device_id", ""),
        speed_kmh=_float(pos.get("vel")),
        course=_float(pos.get("cog")),
        flags=[f for f in pos.get("flags", "").split(",") if f],
    )


async def track(
    redis: aioredis.Redis,
    *,
    caller: Principal,
    elder_id: int,
    since: datetime | None,
    until: datetime | None,
    clock: Clock,
    archive: TrackArchive | None,
) -> TrackCollection:
    """The elder's fixes between two fix times, oldest first, as GeoJSON points."""
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=False)
    # A time without an offset is UTC (comparing it with an aware one would be a 500).
    until = _utc(until) if until else clock.now()
    since = _utc(since) if since else until - timedelta(hours=24)
    if since > until:
        raise Unprocessable(["since"], "must not be after until", where="query")
    fixes = await tracks.read_track(
        redis,
        archive=archive,
        elder_id=elder_id,
        since=since.timestamp(),
        until=until.timestamp(),
        now=clock.time(),
    )
    return TrackCollection(features=[_feature(f) for f in fixes])


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _feature(fix: Fix) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": fix.entry_id,
        "geometry": {"type": "Point", "coordinates": [fix.lon, fix.lat]},
        "properties": {
            "device_id": fix.device_id,
            "tst": ms_to_iso(fix.tst * 1000),
            "received_at": ms_to_iso(fix.received_ms),
            "acc": fix.acc,
            "src": fix.src,
            "speed_kmh": fix.vel,
            "course": fix.cog,
            "battery": fix.batt,
            "alarm": fix.alarm,
            "flags": list(fix.flags),
        },
    }


async def device_events(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, cursor: str | None, limit: int
) -> Page[DeviceEventRead]:
    """Alarms, low battery and last-will events of an elder's devices, newest first."""
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=False)
    entries, next_cursor = await _newest_first(redis, keys.elder_events(elder_id), cursor, limit)
    items = []
    for entry_id, f in entries:
        at = LatLon(lat=float(f["lat"]), lon=float(f["lon"])) if f.get("lat") else None
        items.append(
            DeviceEventRead(
                id=entry_id,
                type=f["type"],
                device_id=f["device_id"],
                tst=_epoch_iso(f["tst"]) if f.get("tst") else None,
                at=at,
                acc=_float(f.get("acc")),
                received_at=ms_to_iso(float(f["received_ms"])),
                detail=f.get("detail", ""),
            )
        )
    return Page[DeviceEventRead](items=items, next=next_cursor)


async def _newest_first(
    redis: aioredis.Redis, stream: str, cursor: str | None, limit: int
) -> tuple[list[tuple[str, dict[str, str]]], str | None]:
    limit = max(1, min(limit, store.MAX_PAGE))
    end = f"({cursor}" if cursor else "+"
    try:
        entries: list[tuple[str, dict[str, str]]] = await redis.xrevrange(  # type: ignore[assignment]
            stream, end, "-", count=limit + 1
        )
    except aioredis.ResponseError:
        raise Unprocessable(
            ["cursor"], "must be the `next` value of a previous page", where="query"
        ) from None
    if len(entries) > limit:
        return entries[:limit], entries[limit - 1][0]
    return entries, None


async def rejected(
    redis: aioredis.Redis,
    *,
    caller: Principal,
    cursor: str | None,
    limit: int,
    reason: str | None,
    device_id: str | None,
) -> Page[RejectedRead]:
    """Dead-lettered uplinks, newest first; a guardian sees only their own elders' devices."""
    if caller.role is Role.VOLUNTEER:
        raise Forbidden("volunteers cannot read rejected uplinks")
    own: set[str] | None = None
    if caller.role is Role.GUARDIAN:
        own = set(store.texts(await redis.zrange(keys.owner_elders(caller.subject or ""), 0, -1)))
    items: list[RejectedRead] = []
    scan_cursor = cursor
    # Filters are applied while scanning newest first; stop after a bounded number of pages.
    for _ in range(20):
        entries, scan_cursor = await _newest_first(redis, core_keys.REJECTED, scan_cursor, limit)
        for entry_id, f in entries:
            if reason and f.get("reason") != reason:
                continue
            if device_id and f.get("device_id") != device_id:
                continue
            if own is not None and f.get("elder_id") not in own:
                continue
            items.append(_rejected(entry_id, f))
            if len(items) == limit:
                # The next page starts after the last item shown, not after what was scanned.
                return Page[RejectedRead](items=items, next=entry_id)
        if scan_cursor is None:
            break
    return Page[RejectedRead](items=items, next=scan_cursor)


def _rejected(entry_id: str, f: dict[str, str]) -> RejectedRead:
    return RejectedRead(
        id=entry_id,
        reason=f.get("reason", ""),
        detail=f.get("detail", ""),
        topic=f.get("topic", ""),
        payload=f.get("payload", ""),
        device_id=f.get("device_id") or None,
        elder_id=int(f["elder_id"]) if f.get("elder_id") else None,
        received_at=ms_to_iso(float(f.get("received_ms") or 0)),
    )


async def rejected_counts(redis: aioredis.Redis, *, caller: Principal) -> dict[str, int]:
    """Rejected uplinks by reason since the store was created (staff)."""
    if not caller.is_staff:
        raise Forbidden("only staff see the rejection totals")
    counts: dict[str, str] = await redis.hgetall(core_keys.REJECTED_COUNTS)  # type: ignore[assignment]
    return {reason: int(n) for reason, n in sorted(counts.items())}
