"""Elders (the wearers): registration, ownership by guardians, reads and updates."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from devices.elders.schemas import ElderCreate, ElderRead, ElderUpdate
from locator.core import keys, store
from locator.core.auth import Principal, Role
from locator.core.clock import Clock, isoformat
from locator.core.errors import Forbidden, NotFound
from locator.core.schemas import Page

_REQUIRED_ON_PATCH = ("name", "home", "guardians")


async def _load(redis: aioredis.Redis, elder_id: int) -> dict[str, Any]:
    doc = await store.get_doc(redis, keys.elder(elder_id))
    if doc is None or doc.get("deleted_at"):
        raise NotFound(f"elder {elder_id} not found")
    return doc


async def authorize(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, write: bool
) -> dict[str, Any]:
    """The elder's document if ``caller`` may read (or write) it; 404 or 403 otherwise."""
    doc = await _load(redis, elder_id)
    if caller.is_staff:
        return doc
    if caller.role is Role.GUARDIAN and doc.get("owner") == caller.subject:
        return doc
    if (
        caller.role is Role.VOLUNTEER
        and not write
        and await redis.sismember(keys.elder_readers(elder_id), caller.subject or "")
    ):
        return doc
    raise Forbidden(f"not allowed to {'change' if write else 'read'} elder {elder_id}")


def _read(doc: dict[str, Any], device_id: str | None) -> ElderRead:
    return ElderRead.model_validate({**doc, "device_id": device_id})


async def create(
    redis: aioredis.Redis, *, caller: Principal, body: ElderCreate, clock: Clock
) -> ElderRead:
    """Register an elder; a guardian becomes its owner."""
    if caller.role is Role.VOLUNTEER:
        raise Forbidden("volunteers cannot register elders")
    owner = body.owner
    if caller.role is Role.GUARDIAN:
        if owner not in (None, caller.subject):
            raise Forbidden("a guardian registers elders for themselves only")
        owner = caller.subject
    elder_id = await store.next_id(redis, "elder")
    now = isoformat(clock.now())
    doc = body.model_dump(mode="json", exclude={"crs"})
    doc.update(id=elder_id, owner=owner, created_at=now, updated_at=now)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.elder(elder_id), store.dump(doc))
        pipe.zadd(keys.ELDERS, {str(elder_id): elder_id})
        if owner:
            pipe.zadd(keys.owner_elders(owner), {str(elder_id): elder_id})
        await pipe.execute()
    return _read(doc, None)


async def get(redis: aioredis.Redis, *, caller: Principal, elder_id: int) -> ElderRead:
    """One elder, with its bound device id."""
    doc = await authorize(redis, caller=caller, elder_id=elder_id, write=False)
    return _read(doc, store.text(await redis.get(keys.elder_device(elder_id))))


async def list_page(
    redis: aioredis.Redis, *, caller: Principal, cursor: str | None, limit: int
) -> Page[ElderRead]:
    """Elders the caller may see: all for staff, their own for a guardian."""
    if caller.is_staff:
        index = keys.ELDERS
    elif caller.role is Role.GUARDIAN and caller.subject:
        index = keys.owner_elders(caller.subject)
    else:
        raise Forbidden("volunteers read an elder only through an incident they were sent")
    docs, next_cursor = await store.page_docs(redis, index, keys.elder, cursor=cursor, limit=limit)
    ids = [d["id"] for d in docs]
    devices = store.texts(await redis.mget([keys.elder_device(i) for i in ids])) if ids else []
    by_id = dict(zip(ids, devices, strict=True))
    items = [_read(d, by_id.get(d["id"])) for d in docs if not d.get("deleted_at")]
    return Page[ElderRead](items=items, next=next_cursor)


async def update(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, body: ElderUpdate, clock: Clock
) -> ElderRead:
    """Change some fields of an elder (absent fields stay as they are)."""
    doc = await authorize(redis, caller=caller, elder_id=elder_id, write=True)
    changes = store.patch_changes(body, required=_REQUIRED_ON_PATCH)
    doc.update(changes, updated_at=isoformat(clock.now()))
    await redis.set(keys.elder(elder_id), store.dump(doc))
    return _read(doc, store.text(await redis.get(keys.elder_device(elder_id))))


async def mark_deleted(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, clock: Clock
) -> None:
    """Take an elder out of every index; the document stays as a tombstone for history."""
    doc = await authorize(redis, caller=caller, elder_id=elder_id, write=True)
    doc["deleted_at"] = isoformat(clock.now())
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.elder(elder_id), store.dump(doc))
        pipe.zrem(keys.ELDERS, str(elder_id))
        if doc.get("owner"):
            pipe.zrem(keys.owner_elders(doc["owner"]), str(elder_id))
        await pipe.execute()
