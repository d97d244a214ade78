"""Shell routes: tokens, elder deletion (spans domains) and the CSV import."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import APIRouter, Body, Query, Response, status
from pydantic import BaseModel, Field

from alerts.incidents.config import config_from
from alerts.responders import service as responders
from devices import importer
from locator import flows
from locator.core import auth, store
from locator.core.auth import Principal, Role, issue_token, revoke_token
from locator.core.clock import isoformat
from locator.core.deps import CallerDep, ClockDep, ContextDep, RedisDep
from locator.core.errors import Forbidden, NotFound, Unprocessable
from locator.core.schemas import Page, Strict

router = APIRouter()


MAX_TOKEN_TTL_S = 10 * 365 * 86400


class TokenCreate(Strict):
    role: Role
    subject: Annotated[str | None, Field(max_length=64, pattern=r"^[A-Za-z0-9_.:+-]+$")] = None
    ttl_s: Annotated[
        int | None,
        Field(ge=60, le=MAX_TOKEN_TTL_S, description="lifetime (default HOMEWARD_TOKEN_TTL_S)"),
    ] = None


class TokenRead(BaseModel):
    """A token's public facts: no secret."""

    id: int
    role: Role
    subject: str | None
    created_at: str
    expires_at: str


class TokenCreated(BaseModel):
    """A new token: the secret ``token`` is shown here once, never again."""

    id: int
    token: str
    role: Role
    subject: str | None
    expires_at: str


def _iso(epoch: float) -> str:
    return isoformat(datetime.fromtimestamp(epoch, tz=UTC))


def _may_mint(caller: Principal, role: Role) -> bool:
    if caller.role is Role.ADMIN:
        return True
    # Dispatchers onboard families and volunteers, never other staff.
    return caller.role is Role.DISPATCHER and role in (Role.GUARDIAN, Role.VOLUNTEER)


async def _volunteer_exists(redis: aioredis.Redis, volunteer_id: int) -> bool:
    return await responders.volunteer_exists(redis, volunteer_id=volunteer_id)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, tags=["tokens"])
async def mint_token(body: TokenCreate, caller: CallerDep, ctx: ContextDep) -> TokenCreated:
    """Create a bearer token that expires (shown once; only its hash is stored)."""
    if not _may_mint(caller, body.role):
        raise Forbidden(f"role {caller.role} may not create {body.role} tokens")
    default = ctx.settings.token_ttl_s
    if caller.role is not Role.ADMIN and (body.ttl_s or default) > default:
        # Only an admin outlasts the configured lifetime (e.g. an integration's token).
        raise Forbidden(f"a dispatcher's tokens live at most {default} s")
    token, info = await issue_token(
        ctx.redis,
        role=body.role,
        subject=body.subject,
        created_at=ctx.clock.time(),
        ttl_s=body.ttl_s or default,
        volunteer_exists=functools.partial(_volunteer_exists, ctx.redis),
    )
    return TokenCreated(
        id=info.id,
        token=token,
        role=info.role,
        subject=info.subject,
        expires_at=_iso(info.expires_at),
    )


@router.get("/tokens", tags=["tokens"])
async def list_tokens(
    caller: CallerDep,
    ctx: ContextDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[TokenRead]:
    """Live tokens by id (admin): who holds what until when, never the secrets."""
    caller.require(Role.ADMIN)
    items, next_cursor = await auth.list_tokens(
        ctx.redis, cursor=store.parse_cursor(cursor), limit=limit, now=ctx.clock.time()
    )
    return Page[TokenRead](
        items=[
            TokenRead(
                id=i.id,
                role=i.role,
                subject=i.subject,
                created_at=_iso(i.created_at),
                expires_at=_iso(i.expires_at),
            )
            for i in items
        ],
        next=None if next_cursor is None else str(next_cursor),
    )


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["tokens"])
async def revoke_by_id(token_id: int, redis: RedisDep, caller: CallerDep) -> Response:
    """Revoke a token by id (admin): its next request is a 401, its web sessions end now."""
    caller.require(Role.ADMIN)
    if not await auth.revoke_token_id(redis, token_id):
        raise NotFound(f"no live token {token_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class TokenRevoke(Strict):
    token: Annotated[str, Field(min_length=8, max_length=200)]


@router.post("/tokens/revoke", status_code=status.HTTP_204_NO_CONTENT, tags=["tokens"])
async def revoke(body: TokenRevoke, redis: RedisDep, caller: CallerDep) -> Response:
    """Revoke a token by its secret (admin), e.g. a lost phone's; 404 if it was not live."""
    caller.require(Role.ADMIN)
    if not await revoke_token(redis, body.token):
        raise NotFound("no such token")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/elders/{elder_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["elders"])
async def delete_elder(elder_id: int, caller: CallerDep, ctx: ContextDep) -> Response:
    """Erase an elder's personal data everywhere; only anonymous SLA figures remain."""
    if ctx.sync_redis is None:
        raise RuntimeError("the app context has no synchronous Redis client")
    await flows.delete_elder(
        ctx.redis,
        caller=caller,
        elder_id=elder_id,
        clock=ctx.clock,
        sync_redis=ctx.sync_redis,
        alerts=config_from(ctx.settings, clock=ctx.clock, mqtt_url=ctx.mqtt_url),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/import/elders", tags=["elders"])
async def import_elders(
    redis: RedisDep,
    caller: CallerDep,
    clock: ClockDep,
    csv_text: Annotated[str, Body(media_type="text/csv", description="CSV with a header row")],
) -> importer.ImportReport:
    """Bulk-register elders and devices from CSV (admin); the answer reports every row."""
    if not csv_text.strip():
        raise Unprocessable(["csv"], "the CSV body is empty")
    return await importer.import_csv(redis, caller=caller, text=csv_text, clock=clock)
