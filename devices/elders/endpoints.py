"""HTTP routes of /api/v1/elders (DELETE lives in the shell: it spans domains)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from devices.elders import access_log, service
from devices.elders.access_log import AccessEntry, AccessLogDep
from devices.elders.schemas import ElderCreate, ElderRead, ElderUpdate
from locator.core.deps import CallerDep, ClockDep, RedisDep
from locator.core.errors import Unprocessable
from locator.core.schemas import Page

router = APIRouter(prefix="/elders", tags=["elders"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_elder(
    body: ElderCreate, redis: RedisDep, caller: CallerDep, clock: ClockDep, log: AccessLogDep
) -> ElderRead:
    elder = await service.create(redis, caller=caller, body=body, clock=clock)
    await log.record(elder_id=elder.id, action="record.create")
    return elder


@router.get("")
async def list_elders(
    redis: RedisDep,
    caller: CallerDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[ElderRead]:
    return await service.list_page(redis, caller=caller, cursor=cursor, limit=limit)


@router.get("/{elder_id}")
async def get_elder(
    elder_id: int, redis: RedisDep, caller: CallerDep, log: AccessLogDep
) -> ElderRead:
    elder = await service.get(redis, caller=caller, elder_id=elder_id)
    await log.record(elder_id=elder_id, action="record.read")
    return elder


@router.patch("/{elder_id}")
async def update_elder(
    elder_id: int,
    body: ElderUpdate,
    redis: RedisDep,
    caller: CallerDep,
    clock: ClockDep,
    log: AccessLogDep,
) -> ElderRead:
    elder = await service.update(redis, caller=caller, elder_id=elder_id, body=body, clock=clock)
    # Which fields, never their values: the log outlives what it describes.
    fields = ",".join(sorted(body.model_fields_set - {"crs"}))
    await log.record(elder_id=elder_id, action="record.change", detail=fields)
    return elder


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to be too big (never all read into memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Unprocessable(["photo"], service.PHOTO_TOO_BIG)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Unprocessable(["photo"], service.PHOTO_TOO_BIG)
        chunks.append(chunk)
    return b"".join(chunks)


@router.put("/{elder_id}/photo")
async def upload_photo(
    elder_id: int,
    request: Request,
    redis: RedisDep,
    caller: CallerDep,
    clock: ClockDep,
    log: AccessLogDep,
) -> ElderRead:
    """The raw image as the body (``Content-Type: image/jpeg``, ``image/png``, ``image/webp``,
    at most 1 MB); the elder's ``photo_url`` then serves it."""
    await service.authorize(redis, caller=caller, elder_id=elder_id, write=True)
    body = await _read_capped(request, service.MAX_PHOTO_BYTES)
    elder = await service.set_photo(
        redis,
        caller=caller,
        elder_id=elder_id,
        content_type=request.headers.get("content-type", ""),
        data=body,
        clock=clock,
    )
    await log.record(elder_id=elder_id, action="photo.change")
    return elder


@router.get("/{elder_id}/photo", response_class=Response)
async def get_photo(
    elder_id: int, redis: RedisDep, caller: CallerDep, log: AccessLogDep
) -> Response:
    """The uploaded photo (family, staff, and volunteers sent to one of her incidents)."""
    kind, data = await service.get_photo(redis, caller=caller, elder_id=elder_id)
    await log.record(elder_id=elder_id, action="photo.read")
    return Response(data, media_type=kind, headers={"Cache-Control": "private, max-age=86400"})


@router.get("/{elder_id}/access-log")
async def get_access_log(
    elder_id: int,
    redis: RedisDep,
    caller: CallerDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[AccessEntry]:
    """Who read or changed her data, newest first (her guardian, staff); never coordinates."""
    return await access_log.page(
        redis, caller=caller, elder_id=elder_id, cursor=cursor, limit=limit
    )
