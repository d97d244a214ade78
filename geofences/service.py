"""Zone storage per elder: deletion, and where she stands now for the alerts stage."""

from __future__ import annotations

import json
from typing import Any

import redis
import redis.asyncio as aioredis

from devices.elders.service import read_elder
from geofences import keys
from geofences.geometry import LocalFrame, project_geometry
from locator.core import keys as core_keys
from locator.core import shards, store, streams


async def delete_for_elder(redis: aioredis.Redis, *, elder_id: int) -> None:
    """Drop an elder's zones, zone state, pause window and her own transitions stream."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(
            keys.zones(elder_id),
            keys.zone_state(elder_id),
            keys.pause(elder_id),
            keys.elder_transitions(elder_id),
        )
        await pipe.execute()
    # Her shard's index, apart: a transaction (and a cluster slot) holds her keys only.
    await redis.zrem(
        core_keys.retention_streams_of(keys.elder_transitions(elder_id)),
        keys.elder_transitions(elder_id),
    )


def purge_transitions(client: redis.Redis, *, elder_id: int) -> int:
    """Erase her entries from her shard's transitions stream (acknowledged in every group)."""
    elder = str(elder_id)
    stream = keys.transitions(shards.shard_of(elder_id))
    return streams.purge(client, stream, lambda f: f.get("elder_id") == elder)


def safe_zone_sides(client: redis.Redis, *, elder_id: int) -> dict[str, str]:
    """Each safe zone's tracked side (inside, outside, unknown) as the engine last stored it."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.zones(elder_id))
    pipe.hgetall(keys.zone_state(elder_id))
    zones_raw, states_raw = pipe.execute()
    sides: dict[str, str] = {}
    for zone_id, raw in zones_raw.items():
        doc = json.loads(raw)
        if doc["properties"]["kind"] != "safe":
            continue
        state = states_raw.get(zone_id)
        sides[_s(zone_id)] = json.loads(state)["t"] if state else "unknown"
    return sides


def is_inside_safe_zone(client: redis.Redis, *, elder_id: int) -> bool:
    """True when the engine has her inside at least one safe zone."""
    return "inside" in safe_zone_sides(client, elder_id=elder_id).values()


def home_zone_ids(client: redis.Redis, *, elder_id: int) -> set[str]:
    """Safe zones that contain the elder's home; every safe zone if none does."""
    elder = read_elder(client, elder_id=elder_id)
    if elder is None or elder.home is None:
        return set()
    frame = LocalFrame(*elder.home)
    safe: set[str] = set()
    homes: set[str] = set()
    for zone_id, raw in client.hgetall(keys.zones(elder_id)).items():
        doc = json.loads(raw)
        props = doc["properties"]
        if props["kind"] != "safe":
            continue
        safe.add(_s(zone_id))
        shape = project_geometry(doc["geometry"], frame, props.get("radius_m"))
        if shape.signed_distance_one(0.0, 0.0) <= 0:
            homes.add(_s(zone_id))
    return homes or safe


def queue_store_zones(pipe: Any, *, elder_id: int, zones: dict[str, dict[str, Any]]) -> None:
    """Queue storing zones already valid in WGS-84 (the benches' generated worlds); the
    version moves so a running zone stage reloads."""
    for zone_id, zone in zones.items():
        pipe.hset(keys.zones(elder_id), zone_id, store.dump(zone))
    pipe.incr(keys.ZONES_VERSION)


def shard_transitions(client: redis.Redis) -> list[tuple[str, dict[str, str]]]:
    """Every transition on every shard's stream, oldest first per shard (the replay's count)."""
    out: list[tuple[str, dict[str, str]]] = []
    for shard in shards.every():
        entries: Any = client.xrange(keys.transitions(shard))
        out.extend(entries)
    return out


def queue_read_zones(pipe: Any, *, elder_id: int) -> None:
    """Queue a read of her zones in a pipeline; ``parse_zones`` turns its reply into them."""
    pipe.hgetall(keys.zones(elder_id))


def parse_zones(reply: Any) -> list[dict[str, Any]]:
    """Her zones as stored (WGS-84 GeoJSON documents) from ``queue_read_zones``'s reply."""
    return [json.loads(z) for z in (reply or {}).values()]


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
