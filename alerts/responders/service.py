"""Responders: volunteers (with shared locations), rescue teams, elder pairs, dispatchers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from alerts import keys
from alerts.responders.schemas import (
    DispatcherCreate,
    DispatcherRead,
    DispatcherUpdate,
    LocationReport,
    PairBody,
    PairedVolunteer,
    PairRead,
    SharedLocation,
    TeamCreate,
    TeamMemberRead,
    TeamRead,
    TeamUpdate,
    VolunteerCreate,
    VolunteerRead,
    VolunteerUpdate,
)
from devices.elders import service as elders
from locator.core import store
from locator.core.auth import Principal, Role
from locator.core.clock import Clock, isoformat
from locator.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from locator.core.redis import get_many_async
from locator.core.schemas import Page

_VOLUNTEER_SELF_FIELDS = frozenset({"on_duty", "quiet_hours"})


def _require_staff(caller: Principal) -> None:
    if not caller.is_staff:
        raise Forbidden(f"role {caller.role} may not do this")


async def _save_with_unique_phone(
    redis: aioredis.Redis,
    *,
    doc_key: str,
    change: Callable[[dict[str, Any] | None], dict[str, Any]],
    index_key: str,
    phones_key: str,
    kind: str,
) -> dict[str, Any]:
    """Create or change a document whose phone must be unique; 409 names the phone's holder.

    The document and the phone index are watched together, so neither a concurrent edit
    of the same person nor another person taking the number is lost; all three keys share
    one hash tag ({vol} or {disp}), so this is one transaction on a cluster too.
    """
    for _ in range(20):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(doc_key, phones_key)
                raw = await pipe.get(doc_key)
                current = json.loads(raw) if raw is not None else None
                doc = change(current)
                phone = doc["phone"]
                holder = store.text(await pipe.hget(phones_key, phone))
                if holder is not None and int(holder) != doc["id"]:
                    raise Conflict(f"phone {phone} already belongs to {kind} {holder}")
                pipe.multi()  # type: ignore[no-untyped-call]
                if current is not None and current["phone"] != phone:
                    pipe.hdel(phones_key, current["phone"])
                pipe.hset(phones_key, phone, doc["id"])
                pipe.set(doc_key, store.dump(doc))
                pipe.zadd(index_key, {str(doc["id"]): doc["id"]})
                await pipe.execute()
                return doc
            except WatchError:
                continue
    raise Conflict(f"that {kind} kept changing meanwhile; try again")


def _patched(
    changes: dict[str, Any], clock: Clock, missing: str
) -> Callable[[dict[str, Any] | None], dict[str, Any]]:
    def apply(current: dict[str, Any] | None) -> dict[str, Any]:
        if current is None:
            raise NotFound(missing)
        return {**current, **changes, "updated_at": isoformat(clock.now())}

    return apply


def _created(doc: dict[str, Any]) -> Callable[[dict[str, Any] | None], dict[str, Any]]:
    return lambda current: doc


# --- volunteers ------------------------------------------------------------------------
async def _load_volunteer(redis: aioredis.Redis, volunteer_id: int) -> dict[str, Any]:
    doc = await store.get_doc(redis, keys.volunteer(volunteer_id))
    if doc is None:
        raise NotFound(f"volunteer {volunteer_id} not found")
    return doc


async def volunteer_exists(redis: aioredis.Redis, *, volunteer_id: int) -> bool:
    """Whether a volunteer with this id exists (a volunteer token's subject)."""
    return bool(await redis.exists(keys.volunteer(volunteer_id)))


async def volunteers_on_map(redis: aioredis.Redis) -> list[dict[str, Any]]:
    """Every volunteer who shares a location: id, name, duty, where and when (the console)."""
    vids = [int(i) for i in store.texts(await redis.zrange(keys.VOLUNTEERS, 0, -1))]
    if not vids:
        return []
    docs = await get_many_async(redis, [keys.volunteer(v) for v in vids])
    locs = await get_many_async(redis, [keys.volunteer_location(v) for v in vids])
    out = []
    for doc_raw, loc_raw in zip(docs, locs, strict=True):
        if doc_raw and loc_raw:
            doc, loc = json.loads(doc_raw), json.loads(loc_raw)
            out.append(
                {
                    "id": doc["id"],
                    "name": doc["name"],
                    "on_duty": doc["on_duty"],
                    "lat": loc["lat"],
                    "lon": loc["lon"],
                    "at": loc.get("at"),
                }
            )
    return out


async def _volunteer_read(redis: aioredis.Redis, doc: dict[str, Any]) -> VolunteerRead:
    location = await store.get_doc(redis, keys.volunteer_location(doc["id"]))
    return VolunteerRead.model_validate(
        {**doc, "location": SharedLocation.model_validate(location) if location else None}
    )


def _authorize_volunteer(caller: Principal, volunteer_id: int) -> None:
    if caller.is_staff or caller.volunteer_id() == volunteer_id:
        return
    raise Forbidden(f"not allowed to see volunteer {volunteer_id}")


async def create_volunteer(
    redis: aioredis.Redis, *, caller: Principal, body: VolunteerCreate, clock: Clock
) -> VolunteerRead:
    """Register a volunteer; the phone must be unique."""
    _require_staff(caller)
    if await redis.hexists(keys.VOLUNTEER_PHONES, body.phone):
        holder = store.text(await redis.hget(keys.VOLUNTEER_PHONES, body.phone))
        raise Conflict(f"phone {body.phone} already belongs to volunteer {holder}")
    now = isoformat(clock.now())
    doc = body.model_dump(mode="json")
    doc.update(id=await store.next_id(redis, "volunteer"), created_at=now, updated_at=now)
    await _save_with_unique_phone(
        redis,
        doc_key=keys.volunteer(doc["id"]),
        change=_created(doc),
        index_key=keys.VOLUNTEERS,
        phones_key=keys.VOLUNTEER_PHONES,
        kind="volunteer",
    )
    return await _volunteer_read(redis, doc)


async def get_volunteer(
    redis: aioredis.Redis, *, caller: Principal, volunteer_id: int
) -> VolunteerRead:
    """One volunteer: staff, or the volunteer themself."""
    _authorize_volunteer(caller, volunteer_id)
    return await _volunteer_read(redis, await _load_volunteer(redis, volunteer_id))


async def list_volunteers(
    redis: aioredis.Redis, *, caller: Principal, cursor: str | None, limit: int
) -> Page[VolunteerRead]:
    """Every volunteer (staff only)."""
    _require_staff(caller)
    docs, next_cursor = await store.page_docs(
        redis, keys.VOLUNTEERS, keys.volunteer, cursor=cursor, limit=limit
    )
    return Page[VolunteerRead](
        items=[await _volunteer_read(redis, d) for d in docs], next=next_cursor
    )


async def update_volunteer(
    redis: aioredis.Redis,
    *,
    caller: Principal,
    volunteer_id: int,
    body: VolunteerUpdate,
    clock: Clock,
) -> VolunteerRead:
    """Change a volunteer; a volunteer may change only their own duty and quiet hours."""
    _authorize_volunteer(caller, volunteer_id)
    changes = store.patch_changes(body, required=("name", "phone", "on_duty"))
    if not caller.is_staff and set(changes) - _VOLUNTEER_SELF_FIELDS:
        extra = sorted(set(changes) - _VOLUNTEER_SELF_FIELDS)
        raise Forbidden(f"a volunteer may change only on_duty and quiet_hours, not {extra}")
    doc = await _save_with_unique_phone(
        redis,
        doc_key=keys.volunteer(volunteer_id),
        change=_patched(changes, clock, f"volunteer {volunteer_id} not found"),
        index_key=keys.VOLUNTEERS,
        phones_key=keys.VOLUNTEER_PHONES,
        kind="volunteer",
    )
    return await _volunteer_read(redis, doc)


async def share_location(
    redis: aioredis.Redis,
    *,
    caller: Principal,
    volunteer_id: int,
    body: LocationReport,
    clock: Clock,
) -> SharedLocation:
    """Record where a volunteer is now (GEO set for nearest-volunteer dispatch)."""
    _authorize_volunteer(caller, volunteer_id)
    await _load_volunteer(redis, volunteer_id)
    point = body.to_wgs84(body.crs)
    location = SharedLocation(lat=point.lat, lon=point.lon, acc=body.acc, at=isoformat(clock.now()))
    # Two slots, two steps: what they see (the location) first, then the GEO set dispatch
    # searches. A crash between pages them around their previous place until they share
    # again; sharing again writes both.
    await redis.set(keys.volunteer_location(volunteer_id), location.model_dump_json())
    await redis.geoadd(keys.VOLUNTEER_GEO, (point.lon, point.lat, str(volunteer_id)))
    return location


async def _require_volunteers(
    redis: aioredis.Redis, volunteer_ids: list[int], loc: list[str | int]
) -> dict[int, dict[str, Any]]:
    docs = await store.get_docs(redis, [keys.volunteer(i) for i in volunteer_ids])
    found = {d["id"]: d for d in docs}
    for index, volunteer_id in enumerate(volunteer_ids):
        if volunteer_id not in found:
            raise Unprocessable([*loc, index], f"volunteer {volunteer_id} does not exist")
    return found


# --- pairs -----------------------------------------------------------------------------
async def set_pair(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, body: PairBody
) -> PairRead:
    """Pair an elder with one or two volunteers (replacing any previous pair)."""
    _require_staff(caller)
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=True)
    await _require_volunteers(redis, body.volunteer_ids, ["volunteer_ids"])
    async with redis.pipeline(transaction=True) as pipe:
        try:
            # Watched: a delete of the elder racing this must not leave a pair behind.
            await pipe.watch(keys.pair(elder_id))
            await elders.watch_live(pipe, elder_id=elder_id)
            raw = await pipe.get(keys.pair(elder_id))
            previous: list[int] = json.loads(raw)["volunteer_ids"] if raw else []
            pipe.multi()  # type: ignore[no-untyped-call]
            for old in previous:
                if old not in body.volunteer_ids:  # her elder no more (reads check it too)
                    pipe.srem(keys.elder_readers(elder_id), str(old))
            pipe.set(keys.pair(elder_id), store.dump({"volunteer_ids": body.volunteer_ids}))
            await pipe.execute()
        except WatchError:
            raise Conflict("the elder or pair changed meanwhile; try again") from None
    await _reindex_pair(redis, elder_id=elder_id, previous=previous, now=body.volunteer_ids)
    return await get_pair(redis, caller=caller, elder_id=elder_id)


async def _reindex_pair(
    redis: aioredis.Redis, *, elder_id: int, previous: list[int], now: list[int]
) -> None:
    """Each volunteer's reverse index of pairs (their own slots), after her pair changed.

    A read needs both her pair side (readers) and theirs, so a crash before this step
    grants no one anything new, and a dropped volunteer already lost her with her slot's
    transaction; setting the pair again repairs the index.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for old in previous:
            if old not in now:
                pipe.srem(keys.volunteer_pairs(old), str(elder_id))
        for new in now:
            pipe.sadd(keys.volunteer_pairs(new), str(elder_id))
        await pipe.execute()


async def get_pair(redis: aioredis.Redis, *, caller: Principal, elder_id: int) -> PairRead:
    """An elder's paired volunteers; a guardian sees their names only."""
    if caller.role is Role.VOLUNTEER:
        raise Forbidden("volunteers cannot read pairs")
    await elders.authorize(redis, caller=caller, elder_id=elder_id, write=False)
    pair = await store.get_doc(redis, keys.pair(elder_id))
    ids: list[int] = (pair or {}).get("volunteer_ids", [])
    docs = await store.get_docs(redis, [keys.volunteer(i) for i in ids])
    if caller.is_staff:
        people = [PairedVolunteer(id=d["id"], name=d["name"], phone=d["phone"]) for d in docs]
        return PairRead(elder_id=elder_id, volunteer_ids=ids, volunteers=people)
    names = [PairedVolunteer(name=d["name"]) for d in docs]
    return PairRead(elder_id=elder_id, volunteer_ids=None, volunteers=names)


async def remove_pair(redis: aioredis.Redis, *, elder_id: int) -> None:
    """Forget an elder's pair (used when the elder is deleted)."""
    previous = await store.get_doc(redis, keys.pair(elder_id))
    # Her pair first, then their reverse index: a crash between leaves index entries that
    # grant nothing (a read checks her side too); removing again (her erasure) is a no-op.
    await redis.delete(keys.pair(elder_id))
    volunteer_ids: list[int] = (previous or {}).get("volunteer_ids", [])
    await _reindex_pair(redis, elder_id=elder_id, previous=volunteer_ids, now=[])


# --- teams -----------------------------------------------------------------------------
async def _team_read(redis: aioredis.Redis, doc: dict[str, Any]) -> TeamRead:
    member_ids = [m["volunteer_id"] for m in doc["members"]]
    names = {
        d["id"]: d["name"]
        for d in await store.get_docs(redis, [keys.volunteer(i) for i in member_ids])
    }
    members = [
        TeamMemberRead(
            volunteer_id=m["volunteer_id"], role=m["role"], name=names.get(m["volunteer_id"])
        )
        for m in doc["members"]
    ]
    return TeamRead.model_validate({**doc, "members": members})


async def create_team(
    redis: aioredis.Redis, *, caller: Principal, body: TeamCreate, clock: Clock
) -> TeamRead:
    """Create a rescue team of existing volunteers."""
    _require_staff(caller)
    await _require_volunteers(redis, [m.volunteer_id for m in body.members], ["members"])
    now = isoformat(clock.now())
    doc = body.model_dump(mode="json")
    doc.update(id=await store.next_id(redis, "team"), created_at=now, updated_at=now)
    # The record, then the index: a crash between leaves a team no list shows (its id is
    # never reused); the caller got no answer and creates it again.
    await redis.set(keys.team(doc["id"]), store.dump(doc))
    await redis.zadd(keys.TEAMS, {str(doc["id"]): doc["id"]})
    return await _team_read(redis, doc)


async def _load_team(redis: aioredis.Redis, team_id: int) -> dict[str, Any]:
    doc = await store.get_doc(redis, keys.team(team_id))
    if doc is None:
        raise NotFound(f"team {team_id} not found")
    return doc


async def get_team(redis: aioredis.Redis, *, caller: Principal, team_id: int) -> TeamRead:
    """One team with member names."""
    _require_staff(caller)
    return await _team_read(redis, await _load_team(redis, team_id))


async def list_teams(
    redis: aioredis.Redis, *, caller: Principal, cursor: str | None, limit: int
) -> Page[TeamRead]:
    """Every team (staff only)."""
    _require_staff(caller)
    docs, next_cursor = await store.page_docs(
        redis, keys.TEAMS, keys.team, cursor=cursor, limit=limit
    )
    return Page[TeamRead](items=[await _team_read(redis, d) for d in docs], next=next_cursor)


async def update_team(
    redis: aioredis.Redis, *, caller: Principal, team_id: int, body: TeamUpdate, clock: Clock
) -> TeamRead:
    """Rename a team, replace its members or change its duty."""
    _require_staff(caller)
    changes = store.patch_changes(body, required=("name", "members", "on_duty"))
    if body.members is not None:
        await _require_volunteers(redis, [m.volunteer_id for m in body.members], ["members"])
        # Whole members, defaults included: a member sent without "role" is still a member.
        changes["members"] = [m.model_dump(mode="json") for m in body.members]
    apply = _patched(changes, clock, f"team {team_id} not found")
    doc = await store.update_doc(redis, keys.team(team_id), apply)
    return await _team_read(redis, doc)


# --- dispatchers -----------------------------------------------------------------------
async def create_dispatcher(
    redis: aioredis.Redis, *, caller: Principal, body: DispatcherCreate, clock: Clock
) -> DispatcherRead:
    """Add a dispatcher to the on-call roster."""
    _require_staff(caller)
    now = isoformat(clock.now())
    doc = body.model_dump(mode="json")
    if await redis.hexists(keys.DISPATCHER_PHONES, body.phone):
        holder = store.text(await redis.hget(keys.DISPATCHER_PHONES, body.phone))
        raise Conflict(f"phone {body.phone} already belongs to dispatcher {holder}")
    doc.update(id=await store.next_id(redis, "dispatcher"), created_at=now, updated_at=now)
    await _save_with_unique_phone(
        redis,
        doc_key=keys.dispatcher(doc["id"]),
        change=_created(doc),
        index_key=keys.DISPATCHERS,
        phones_key=keys.DISPATCHER_PHONES,
        kind="dispatcher",
    )
    return DispatcherRead.model_validate(doc)


async def list_dispatchers(
    redis: aioredis.Redis, *, caller: Principal, cursor: str | None, limit: int
) -> Page[DispatcherRead]:
    """The dispatcher roster (staff only)."""
    _require_staff(caller)
    docs, next_cursor = await store.page_docs(
        redis, keys.DISPATCHERS, keys.dispatcher, cursor=cursor, limit=limit
    )
    return Page[DispatcherRead](
        items=[DispatcherRead.model_validate(d) for d in docs], next=next_cursor
    )


async def update_dispatcher(
    redis: aioredis.Redis,
    *,
    caller: Principal,
    dispatcher_id: int,
    body: DispatcherUpdate,
    clock: Clock,
) -> DispatcherRead:
    """Change a dispatcher's name, phone or on-call flag."""
    _require_staff(caller)
    changes = store.patch_changes(body, required=("name", "phone", "on_call"))
    doc = await _save_with_unique_phone(
        redis,
        doc_key=keys.dispatcher(dispatcher_id),
        change=_patched(changes, clock, f"dispatcher {dispatcher_id} not found"),
        index_key=keys.DISPATCHERS,
        phones_key=keys.DISPATCHER_PHONES,
        kind="dispatcher",
    )
    return DispatcherRead.model_validate(doc)
