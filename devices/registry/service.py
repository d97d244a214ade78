"""The device registry: which bracelet is worn by which elder (one active device each)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import WatchError

from devices import keys
from devices.elders import service as elders
from devices.registry import gateway, stock
from devices.registry.schemas import GATEWAY_IDS, DeviceCreate, DeviceRead, GatewayRead
from locator.core import store
from locator.core.auth import Principal, Role
from locator.core.clock import Clock, isoformat, ms_to_iso
from locator.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from locator.core.redis import get_many_async
from locator.core.schemas import Page


async def _read(redis: aioredis.Redis, doc: dict[str, Any]) -> DeviceRead:
    state: dict[str, str] = await redis.hgetall(  # type: ignore[assignment]
        keys.device_state(doc["elder_id"], doc["device_id"])
    )
    battery = state.get("battery")
    last_seen_ms = state.get("last_seen_ms")
    return DeviceRead.model_validate(
        {
            **doc,
            "last_seen": ms_to_iso(int(last_seen_ms)) if last_seen_ms else None,
            "battery": int(battery) if battery not in (None, "") else None,
            "online": state.get("online") == "1",
            "gateway": await _gateway(redis, doc) if doc["protocol"] in GATEWAY_IDS else None,
        }
    )


async def _gateway(redis: aioredis.Redis, doc: dict[str, Any]) -> GatewayRead:
    found = await gateway.summary(redis, device_id=doc["device_id"])
    for name, value in found.items():
        if name.endswith("_at") and value is not None:
            found[name] = ms_to_iso(round(value * 1000))
    return GatewayRead.model_validate(found)


async def register(
    redis: aioredis.Redis, *, caller: Principal, body: DeviceCreate, clock: Clock
) -> DeviceRead:
    """Bind a device to an elder (a guardian with its claim code); 409 if anything is taken."""
    await elders.authorize(redis, caller=caller, elder_id=body.elder_id, write=True)
    if not caller.is_staff:
        body = await _claimed(redis, body)
    doc = body.model_dump(mode="json", exclude={"claim_code"})
    doc["created_at"] = isoformat(clock.now())
    device_key = keys.device(body.device_id)
    external_key = (
        keys.device_external(body.protocol, body.external_id) if body.external_id else None
    )
    if await redis.exists(device_key):
        raise Conflict(f"device {body.device_id} is already registered")
    if external_key and await redis.exists(external_key):
        raise Conflict(f"external_id {body.external_id} is already registered")
    # Ordered steps over three slots (hers, the bracelet's, the external id's), each one
    # atomic: 1. her binding, under a WATCH of her record (a delete racing it wins: 404);
    # 2. the bracelet's record, SET NX (a concurrent registration of it loses: 409, step 1
    # undone); 3. the external id, SET NX likewise; 4. the indexes. A crash after step 1
    # leaves her bound to a bracelet with no record (nothing reads it: the ingest finds no
    # record, lists skip it); the same registration again completes it, deleting her clears
    # it. The bracelet's record is the commit point: from it on, unbinding undoes it all.
    await _bind(redis, elder_id=body.elder_id, device_id=body.device_id)
    if not await redis.set(device_key, store.dump(doc), nx=True):
        await _unbind_elder_slot(redis, elder_id=body.elder_id, device_id=body.device_id)
        raise Conflict(f"device {body.device_id} is already registered")
    if external_key and not await _claim(redis, external_key, body.device_id):
        await unbind(redis, device_id=body.device_id, external=False)
        raise Conflict(f"external_id {body.external_id} is already registered")
    # Her delete may have passed between step 1 and the record (it found no record to
    # unbind): seen here, and the bracelet goes again, so none stays on a tombstone.
    current = await elders.read_elder_async(redis, elder_id=body.elder_id)
    if current is None or current.deleted:
        await unbind(redis, device_id=body.device_id)
        raise NotFound(f"elder {body.elder_id} not found")
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(keys.DEVICES, {body.device_id: 0})
        pipe.zrem(keys.DEVICE_STOCK, body.device_id)
        pipe.incr(keys.DEVICES_VERSION)
        await pipe.execute()
    return await _read(redis, doc)


async def _claim(redis: aioredis.Redis, key: str, device_id: str) -> bool:
    """Take ``key`` for the bracelet unless another holds it (held by it already: a re-run)."""
    if await redis.set(key, device_id, nx=True):
        return True
    return store.text(await redis.get(key)) == device_id


async def _bind(redis: aioredis.Redis, *, elder_id: int, device_id: str) -> None:
    """Step 1 of a registration: her binding (her slot), 404 unless she is live, 409 if bound."""
    binding_key = keys.elder_device(elder_id)
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await elders.watch_live(pipe, elder_id=elder_id)
            await pipe.watch(binding_key)
            bound = store.text(await pipe.get(binding_key))
            if bound and bound != device_id:  # the same: a re-run of an interrupted one
                raise Conflict(f"elder {elder_id} already wears device {bound}; delete it first")
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.set(binding_key, device_id)
            pipe.sadd(keys.elder_track_devices(elder_id), device_id)
            await pipe.execute()
        except WatchError:
            raise Conflict("the device or elder changed meanwhile; try again") from None


async def _unbind_elder_slot(redis: aioredis.Redis, *, elder_id: int, device_id: str) -> None:
    """Her binding (if it still names this bracelet) and its state, in one transaction."""
    binding_key = keys.elder_device(elder_id)
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(binding_key)
            bound = store.text(await pipe.get(binding_key))
            pipe.multi()  # type: ignore[no-untyped-call]
            if bound == device_id:
                pipe.delete(binding_key)
            pipe.delete(keys.device_state(elder_id, device_id))
            await pipe.execute()
        except WatchError:
            pass  # rebound meanwhile to another bracelet: that binding is not ours to clear


async def _claimed(redis: aioredis.Redis, body: DeviceCreate) -> DeviceCreate:
    """A guardian's binding, checked against the stocked bracelet's claim code."""
    if not body.claim_code:
        raise Forbidden("type the claim code printed on the bracelet's box (claim_code)")
    protocol = await stock.check_claim(redis, device_id=body.device_id, code=body.claim_code)
    fields = stock.reconcile(
        body.model_dump(mode="json"),
        stocked_protocol=protocol,
        explicit="protocol" in body.model_fields_set,
    )
    try:
        return DeviceCreate.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        raise Unprocessable(list(first["loc"]) or ["protocol"], message) from None


async def _load(redis: aioredis.Redis, device_id: str) -> dict[str, Any]:
    doc = await store.get_doc(redis, keys.device(device_id))
    if doc is None:
        raise NotFound(f"device {device_id} not found")
    return doc


async def get(redis: aioredis.Redis, *, caller: Principal, device_id: str) -> DeviceRead:
    """One device with its last-seen state."""
    doc = await _load(redis, device_id)
    await elders.authorize(redis, caller=caller, elder_id=doc["elder_id"], write=False)
    return await _read(redis, doc)


async def list_page(
    redis: aioredis.Redis, *, caller: Principal, cursor: str | None, limit: int
) -> Page[DeviceRead]:
    """Devices the caller may see: all for staff, their elders' for a guardian."""
    if caller.is_staff:
        start = f"({cursor}" if cursor else "-"
        limit = max(1, min(limit, store.MAX_PAGE))
        ids = store.texts(await redis.zrangebylex(keys.DEVICES, start, "+", start=0, num=limit + 1))
        next_cursor = None
        if len(ids) > limit:
            ids = ids[:limit]
            next_cursor = ids[-1]
        docs = await store.get_docs(redis, [keys.device(i) for i in ids])
        return Page[DeviceRead](items=[await _read(redis, d) for d in docs], next=next_cursor)
    if caller.role is Role.GUARDIAN and caller.subject:
        elder_ids = store.texts(await redis.zrange(keys.owner_elders(caller.subject), 0, -1))
        bound = store.maybe_texts(
            await get_many_async(redis, [keys.elder_device(int(e)) for e in elder_ids])
        )
        docs = await store.get_docs(redis, [keys.device(d) for d in bound if d is not None])
        return Page[DeviceRead](items=[await _read(redis, d) for d in docs], next=None)
    raise Forbidden("volunteers cannot list devices")


async def unbind(redis: aioredis.Redis, *, device_id: str, external: bool = True) -> None:
    """Remove a device and its binding (the track stays until retention trims it).

    Her slot first (binding, state): the ingest's binding check then refuses the bracelet's
    fixes. Then its record (the commit point of a registration), then the indexes. A crash
    between leaves the record, so the same delete again finds it and finishes.
    ``external``: also its external id (not when another registration holds that id).
    """
    doc = await store.get_doc(redis, keys.device(device_id))
    if doc is None:
        return
    await _unbind_elder_slot(redis, elder_id=int(doc["elder_id"]), device_id=device_id)
    stocked = await redis.exists(keys.device_stock(device_id))
    if external and doc.get("external_id"):
        external_key = keys.device_external(doc["protocol"], doc["external_id"])
        if store.text(await redis.get(external_key)) == device_id:
            await redis.delete(external_key)
    await redis.delete(keys.device(device_id))
    async with redis.pipeline(transaction=False) as pipe:
        if stocked:
            # Back on the shelf with the code on its box: the next family claims it with that.
            pipe.zadd(keys.DEVICE_STOCK, {device_id: 0})
        pipe.zrem(keys.DEVICES, device_id)
        pipe.incr(keys.DEVICES_VERSION)
        await pipe.execute()


async def delete(redis: aioredis.Redis, *, caller: Principal, device_id: str) -> int:
    """Unregister a device the caller may change; the id of the elder who wore it."""
    doc = await _load(redis, device_id)
    await elders.authorize(redis, caller=caller, elder_id=doc["elder_id"], write=True)
    await unbind(redis, device_id=device_id)
    return int(doc["elder_id"])


async def unbind_elder(redis: aioredis.Redis, *, elder_id: int) -> None:
    """Remove whatever device an elder wears (used when the elder is deleted)."""
    device_id = store.text(await redis.get(keys.elder_device(elder_id)))
    if device_id:
        await unbind(redis, device_id=device_id)
        # A binding left by an interrupted registration has no record to unbind from.
        await _unbind_elder_slot(redis, elder_id=elder_id, device_id=device_id)
