"""FastAPI dependencies every domain router uses: the Redis client, clock, settings, caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import redis as redis_sync
import redis.asyncio as aioredis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from locator.core import login_limit
from locator.core.auth import (
    CSRF_HEADER,
    SESSION_COOKIE,
    Principal,
    end_session,
    resolve_session,
    resolve_token,
)
from locator.core.clock import Clock
from locator.core.errors import Forbidden, Unauthorized
from locator.core.mqtt import Publisher
from locator.core.settings import Settings


@dataclass
class AppContext:
    """What a running HTTP app holds: set once by the shell at startup."""

    settings: Settings
    redis: aioredis.Redis
    clock: Clock
    mqtt_url: str | None = None
    publisher: Publisher | None = None
    local_loops: tuple[str, ...] = ()  # loops running in this process (`homeward run`)
    # For the synchronous alerts services, run in FastAPI's worker threads.
    sync_redis: redis_sync.Redis | None = None


async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def get_redis(ctx: Annotated[AppContext, Depends(get_context)]) -> aioredis.Redis:
    return ctx.redis


async def get_clock(ctx: Annotated[AppContext, Depends(get_context)]) -> Clock:
    return ctx.clock


T = TypeVar("T")
_bearer = HTTPBearer(auto_error=False, description="Token from `homeward token create`")


def client_address(request: Request) -> str:
    """The caller's address (uvicorn puts a trusted proxy's X-Forwarded-For here)."""
    return request.client.host if request.client else "unknown"


async def login_with(
    redis: aioredis.Redis, request: Request, attempt: Callable[[], Awaitable[T]]
) -> T:
    """Run a token check unless this address failed too often; count it if it fails."""
    client = client_address(request)
    await login_limit.check(redis, client=client)
    try:
        return await attempt()
    except Unauthorized:
        await login_limit.failed(redis, client=client)
        raise


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# The shell's check that an SMS link's session may go on: (context, incident, volunteer).
# Set on ``app.state.link_guard`` by the app factory (locator.core cannot read incidents).
LinkGuard = Callable[[AppContext, int, Principal], Awaitable[bool]]


async def session_principal(request: Request, session: str) -> Principal:
    """The principal of a session cookie; an SMS link's only while its guard allows it."""
    ctx: AppContext = request.app.state.ctx
    found = await resolve_session(ctx.redis, session, now=ctx.clock.time())
    if found.incident_id is not None:
        guard: LinkGuard | None = getattr(request.app.state, "link_guard", None)
        if guard is None or not await guard(ctx, found.incident_id, found.principal):
            await end_session(ctx.redis, session)
            raise Unauthorized("this alert is over for you: its link's session has ended")
    return found.principal


async def get_principal(
    request: Request,
    ctx: Annotated[AppContext, Depends(get_context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller: a bearer token, or the session cookie the web pages log in with."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        token = credentials.credentials
        return await login_with(
            ctx.redis, request, lambda: resolve_token(ctx.redis, token, now=ctx.clock.time())
        )
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        # A cookie rides along on cross-site requests too: a page of ours says so in a
        # header another site cannot set without CORS, which we never grant.
        if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
            raise Forbidden(f"a cookie session must send the {CSRF_HEADER}: 1 header")
        return await session_principal(request, session)
    raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")


async def get_sync_redis(ctx: Annotated[AppContext, Depends(get_context)]) -> redis_sync.Redis:
    assert ctx.sync_redis is not None, "the app's lifespan sets it"
    return ctx.sync_redis


RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
ClockDep = Annotated[Clock, Depends(get_clock)]
CallerDep = Annotated[Principal, Depends(get_principal)]
ContextDep = Annotated[AppContext, Depends(get_context)]
SyncRedisDep = Annotated[redis_sync.Redis, Depends(get_sync_redis)]
