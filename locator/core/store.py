"""JSON documents in Redis with integer ids and an id-ordered index (the registry's shape)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import WatchError

from locator.core import keys
from locator.core.errors import Conflict, Unprocessable
from locator.core.redis import get_many_async

MAX_PAGE = 200


def text(value: object) -> str | None:
    """A reply of a decode_responses client as str (redis-py types it as bytes | str)."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def texts(values: object) -> list[str]:
    """Members of a set, sorted set or list reply (never contain null)."""
    return [str(text(v)) for v in values or []]  # type: ignore[attr-defined]


def maybe_texts(values: object) -> list[str | None]:
    """An MGET-style reply, where a missing key stays None (not the string "None")."""
    return [text(v) for v in values or []]  # type: ignore[attr-defined]


async def update_doc(
    redis: aioredis.Redis,
    key: str,
    mutate: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    also_watch: Sequence[str] = (),
    extra: Callable[[Any, dict[str, Any]], None] | None = None,
    after: Callable[[Any, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Read-modify-write of one document under WATCH, retried on a concurrent change.

    ``mutate`` gets the current document (or raises, e.g. NotFound for a tombstone) and
    returns the new one; ``extra`` may queue more commands in the same transaction, on keys
    of the document's hash slot only (``also_watch`` too). ``after`` queues the steps in
    other slots (indexes), run once the document is written, in a plain pipeline: a crash
    between leaves the document changed and an index behind, which readers tolerate
    (they skip an entry whose document is gone) and the same call again repairs.
    """
    watched = [key, *also_watch]
    for _ in range(20):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(*watched)
                raw = await pipe.get(key)
                current = json.loads(raw) if raw is not None else None
                doc = mutate(current)  # type: ignore[arg-type]
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(key, dump(doc))
                if extra is not None:
                    extra(pipe, doc)
                await pipe.execute()
            except WatchError:
                continue
            if after is not None:
                await run_after(redis, doc, after)
            return doc
    raise Conflict("the record kept changing meanwhile; try again")


async def run_after(
    redis: aioredis.Redis, doc: dict[str, Any], steps: Callable[[Any, dict[str, Any]], None]
) -> None:
    """Queue ``steps`` in a non-transactional pipeline (split per node on a cluster) and run it."""
    async with redis.pipeline(transaction=False) as pipe:
        steps(pipe, doc)
        await pipe.execute()


async def next_id(redis: aioredis.Redis, kind: str) -> int:
    """A new id for ``kind`` (1, 2, 3, ...), never reused."""
    return int(await redis.incr(keys.sequence(kind)))


def dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


async def get_doc(redis: aioredis.Redis, key: str) -> dict[str, Any] | None:
    raw = await redis.get(key)
    if raw is None:
        return None
    doc: dict[str, Any] = json.loads(raw)
    return doc


async def get_docs(redis: aioredis.Redis, doc_keys: Sequence[str]) -> list[dict[str, Any]]:
    """The documents that exist among ``doc_keys``, in order."""
    if not doc_keys:
        return []
    raws = await get_many_async(redis, list(doc_keys))
    return [json.loads(raw) for raw in raws if raw is not None]


def parse_cursor(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    if not cursor.isdigit():
        raise Unprocessable(
            ["cursor"], "must be the `next` value of a previous page", where="query"
        )
    return int(cursor)


async def page_ids(
    redis: aioredis.Redis, index: str, *, cursor: str | None, limit: int
) -> tuple[list[int], str | None]:
    """Ids after ``cursor`` in an id-scored sorted set, and the cursor of the next page."""
    after = parse_cursor(cursor)
    limit = max(1, min(limit, MAX_PAGE))
    raw = await redis.zrangebyscore(index, f"({after}", "+inf", start=0, num=limit + 1)
    ids = [int(member) for member in texts(raw)]
    if len(ids) > limit:
        ids = ids[:limit]
        return ids, str(ids[-1])
    return ids, None


async def page_docs(
    redis: aioredis.Redis,
    index: str,
    doc_key: Callable[[int], str],
    *,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of documents from an id-scored index, and the cursor of the next page."""
    ids, next_cursor = await page_ids(redis, index, cursor=cursor, limit=limit)
    return await get_docs(redis, [doc_key(i) for i in ids]), next_cursor


def patch_changes(body: BaseModel, *, required: Sequence[str]) -> dict[str, Any]:
    """The fields a PATCH body sets; a required field may change but never become null."""
    changes = body.model_dump(mode="json", exclude_unset=True, exclude={"crs"})
    for field in required:
        if field in changes and changes[field] is None:
            raise Unprocessable([field], "may be changed but not removed")
    return changes
