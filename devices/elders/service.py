"""Elders (the wearers): registration, ownership by guardians, reads and updates."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import redis.asyncio as aioredis

from devices import keys
from devices.elders.records import ElderRecord, parse_elder
from devices.elders.schemas import ElderCreate, ElderRead, ElderUpdate
from locator.core import store
from locator.core.auth import Principal, Role
from locator.core.clock import Clock, isoformat
from locator.core.errors import Forbidden, NotFound, Unprocessable
from locator.core.redis import get_many_async
from locator.core.schemas import Page

_REQUIRED_ON_PATCH = ("name", "home", "guardians")
_CLEARABLE_TEXT = ("address", "description", "medical_notes")


class _MayRead(Protocol):
    def __call__(
        self, redis: aioredis.Redis, *, elder_id: int, volunteer_id: int
    ) -> Awaitable[bool]: ...


class _MayReadSync(Protocol):
    def __call__(self, client: redis.Redis, *, elder_id: int, volunteer_id: int) -> bool: ...


@dataclass(frozen=True)
class VolunteerCheck:
    """Whether a volunteer may read her record: alerts' answer (incidents, pairs)."""

    may_read: _MayRead
    may_read_sync: _MayReadSync


# Devices never asks about incidents itself: the shell registers alerts' check at start.
# Unregistered, no volunteer reads her (closed, not open).
_volunteer_check: VolunteerCheck | None = None


def register_volunteer_check(check: VolunteerCheck | None) -> None:
    """Hand devices the check a volunteer's read of her record goes through (shell, at start)."""
    global _volunteer_check
    _volunteer_check = check


def _live(doc: dict[str, Any] | None, elder_id: int) -> dict[str, Any]:
    """The document of an elder that exists and is not deleted, else 404."""
    if doc is None or doc.get("deleted_at"):
        raise NotFound(f"elder {elder_id} not found")
    return doc


# --- readers for the other domains: the one way they see her record -----------------------
def read_elder(client: redis.Redis, *, elder_id: int) -> ElderRecord | None:
    """Her record as stored, tombstone included; None if there is none."""
    return parse_elder(client.get(keys.elder(elder_id)), elder_id)


async def read_elder_async(redis: aioredis.Redis, *, elder_id: int) -> ElderRecord | None:
    """``read_elder`` for the async callers."""
    return parse_elder(await redis.get(keys.elder(elder_id)), elder_id)


def queue_read_elder(pipe: Any, *, elder_id: int) -> None:
    """Queue her record's read in a pipeline; ``parse_elder`` turns its reply into the record."""
    pipe.get(keys.elder(elder_id))


async def live_elder_ids(redis: aioredis.Redis) -> list[int]:
    """The ids of every live elder, ascending."""
    return [int(e) for e in store.texts(await redis.zrange(keys.ELDERS, 0, -1))]


def guardian_elders(client: redis.Redis, *, owner: str) -> list[int]:
    """The ids of the elders a guardian owns, ascending."""
    return [int(e) for e in store.texts(client.zrange(keys.owner_elders(owner), 0, -1))]


async def _load(redis: aioredis.Redis, elder_id: int) -> dict[str, Any]:
    return _live(await store.get_doc(redis, keys.elder(elder_id)), elder_id)


async def watch_live(pipe: Any, *, elder_id: int) -> None:
    """Watch her record in ``pipe`` (a racing delete fails the transaction); 404 unless live."""
    await pipe.watch(keys.elder(elder_id))
    await require_live(pipe, elder_id=elder_id)


async def require_live(pipe: Any, *, elder_id: int) -> None:
    """Inside a WATCH on the elder's key: 404 unless the elder exists and is not deleted."""
    raw = await pipe.get(keys.elder(elder_id))
    _live(json.loads(raw) if raw is not None else None, elder_id)


async def authorize(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, write: bool
) -> dict[str, Any]:
    """The elder's document if ``caller`` may read (or write) it; 404 or 403 otherwise."""
    return await _authorize_doc(redis, await _load(redis, elder_id), caller, write=write)


async def _authorize_doc(
    redis: aioredis.Redis, doc: dict[str, Any], caller: Principal, *, write: bool
) -> dict[str, Any]:
    elder_id = doc["id"]
    if caller.is_staff:
        return doc
    if caller.role is Role.GUARDIAN and doc.get("owner") == caller.subject:
        return doc
    vid = caller.volunteer_id()
    check = _volunteer_check
    if vid is None or write or check is None:
        raise Forbidden(f"not allowed to {'change' if write else 'read'} elder {elder_id}")
    if await check.may_read(redis, elder_id=elder_id, volunteer_id=vid):
        return doc
    raise Forbidden(f"not allowed to {'change' if write else 'read'} elder {elder_id}")


def authorize_sync(
    client: redis.Redis, *, caller: Principal, elder_id: int, write: bool
) -> dict[str, Any]:
    """``authorize`` for the synchronous alerts services (same rules)."""
    raw = client.get(keys.elder(elder_id))
    doc = _live(json.loads(raw) if raw is not None else None, elder_id)
    if caller.is_staff or (caller.role is Role.GUARDIAN and doc.get("owner") == caller.subject):
        return doc
    vid = caller.volunteer_id()
    check = _volunteer_check
    if vid is None or write or check is None:
        raise Forbidden(f"not allowed to {'change' if write else 'read'} elder {elder_id}")
    if check.may_read_sync(client, elder_id=elder_id, volunteer_id=vid):
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
    # Her record first, then the indexes (other slots): a crash between leaves a record no
    # list shows, under an id never reused; the caller got no answer and registers again.
    await redis.set(keys.elder(elder_id), store.dump(doc))
    await store.run_after(redis, doc, _index)
    return _read(doc, None)


def _index(pipe: Any, doc: dict[str, Any]) -> None:
    elder_id = int(doc["id"])
    pipe.zadd(keys.ELDERS, {str(elder_id): elder_id})
    if doc.get("owner"):
        pipe.zadd(keys.owner_elders(doc["owner"]), {str(elder_id): elder_id})


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
    devices = store.maybe_texts(await get_many_async(redis, [keys.elder_device(i) for i in ids]))
    by_id = dict(zip(ids, devices, strict=True))
    items = [_read(d, by_id.get(d["id"])) for d in docs if not d.get("deleted_at")]
    return Page[ElderRead](items=items, next=next_cursor)


async def update(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, body: ElderUpdate, clock: Clock
) -> ElderRead:
    """Change some fields of an elder (absent fields stay as they are)."""
    await authorize(redis, caller=caller, elder_id=elder_id, write=True)
    changes = store.patch_changes(body, required=_REQUIRED_ON_PATCH)
    for optional_text in _CLEARABLE_TEXT:
        if optional_text in changes and changes[optional_text] is None:
            changes[optional_text] = ""

    def apply(current: dict[str, Any] | None) -> dict[str, Any]:
        live = _live(current, elder_id)
        return {**live, **changes, "updated_at": isoformat(clock.now())}

    def drop_upload(pipe: Any, doc: dict[str, Any]) -> None:
        if "photo_url" in changes:  # a link elsewhere, or none: the uploaded face goes
            pipe.delete(keys.elder_photo(elder_id))

    doc = await store.update_doc(redis, keys.elder(elder_id), apply, extra=drop_upload)
    return _read(doc, store.text(await redis.get(keys.elder_device(elder_id))))


async def mark_deleted(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int, clock: Clock
) -> None:
    """Take an elder out of every index; the document stays as a tombstone for history.

    Idempotent: deleting a deleted elder again is allowed (to finish an interrupted delete).
    """
    existing = await store.get_doc(redis, keys.elder(elder_id))
    if existing is None:
        raise NotFound(f"elder {elder_id} not found")
    await _authorize_doc(redis, existing, caller, write=True)

    def tombstone(current: dict[str, Any] | None) -> dict[str, Any]:
        if current is None:
            raise NotFound(f"elder {elder_id} not found")
        return {"deleted_at": isoformat(clock.now()), **current}

    def drop_photo(pipe: Any, doc: dict[str, Any]) -> None:
        pipe.delete(keys.elder_photo(elder_id))  # a face is not history

    def unindex(pipe: Any, doc: dict[str, Any]) -> None:
        pipe.zrem(keys.ELDERS, str(elder_id))
        if doc.get("owner"):
            pipe.zrem(keys.owner_elders(doc["owner"]), str(elder_id))

    # The tombstone first (every read and write of her then answers 404), the indexes after:
    # lists skip a tombstone they still name, and deleting again finishes the job.
    await store.update_doc(redis, keys.elder(elder_id), tombstone, extra=drop_photo, after=unindex)


# What a phone camera or a scanned print makes; anything else is refused, not converted.
PHOTO_TYPES = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/webp": (b"RIFF",),
}
# The page shrinks a camera picture to ~1600 px JPEG (a few hundred kB) before sending.
MAX_PHOTO_BYTES = 1024 * 1024


PHOTO_TOO_BIG = f"a photo is at most {MAX_PHOTO_BYTES // (1024 * 1024)} MB"


def _photo_problem(content_type: str, data: bytes) -> str | None:
    kind = content_type.split(";")[0].strip().lower()
    if kind not in PHOTO_TYPES:
        return f"a photo is JPEG, PNG or WebP, not {kind or 'unnamed data'}"
    if not data:
        return "the photo is empty"
    if len(data) > MAX_PHOTO_BYTES:
        return PHOTO_TOO_BIG
    if not data.startswith(PHOTO_TYPES[kind]) or (kind == "image/webp" and data[8:12] != b"WEBP"):
        return f"the data is not a {kind} image"
    return None


async def set_photo(
    redis: aioredis.Redis,
    *,
    caller: Principal,
    elder_id: int,
    content_type: str,
    data: bytes,
    clock: Clock,
) -> ElderRead:
    """Store an uploaded photo; the elder's ``photo_url`` then points at it."""
    await authorize(redis, caller=caller, elder_id=elder_id, write=True)
    problem = _photo_problem(content_type, data)
    if problem:
        raise Unprocessable(["photo"], problem)
    sha = hashlib.sha256(data).hexdigest()[:12]
    # A new URL per picture: caches (and the volunteer page) never show the old face.
    url = f"/api/v1/elders/{elder_id}/photo?v={sha}"

    def apply(current: dict[str, Any] | None) -> dict[str, Any]:
        return {**_live(current, elder_id), "photo_url": url, "updated_at": isoformat(clock.now())}

    def store_picture(pipe: Any, doc: dict[str, Any]) -> None:
        # In the same transaction as the link: never a photo without its elder, nor a
        # link to another upload's picture.
        pipe.delete(keys.elder_photo(elder_id))
        pipe.hset(
            keys.elder_photo(elder_id),
            mapping={
                "type": content_type.split(";")[0].strip().lower(),
                "data": base64.b64encode(data).decode(),
                "sha": sha,
            },
        )

    doc = await store.update_doc(redis, keys.elder(elder_id), apply, extra=store_picture)
    return _read(doc, store.text(await redis.get(keys.elder_device(elder_id))))


async def get_photo(
    redis: aioredis.Redis, *, caller: Principal, elder_id: int
) -> tuple[str, bytes]:
    """The uploaded photo as (content type, bytes), for whoever may read the elder."""
    await authorize(redis, caller=caller, elder_id=elder_id, write=False)
    stored: dict[str, str] = await redis.hgetall(keys.elder_photo(elder_id))  # type: ignore[assignment]
    if not stored:
        raise NotFound(f"elder {elder_id} has no uploaded photo")
    return stored["type"], base64.b64decode(stored["data"])


async def erase_record(redis: aioredis.Redis, *, elder_id: int) -> None:
    """Delete her record and photo for good: the last step of erasing her (nothing names her)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.elder(elder_id), keys.elder_photo(elder_id))
        await pipe.execute()
    # Out of the index after (another slot): an entry naming no record is skipped by lists.
    await redis.zrem(keys.ELDERS, str(elder_id))
