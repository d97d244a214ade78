"""Repeated failed logins from one client address get 429 for a while.

A token is guessed by trying many: every failed bearer token and every failed
``POST /api/v1/session`` counts against the caller's address, in a fixed window that
opens with the first failure. Once ``MAX_FAILURES`` are counted, that address is refused
before its token is even looked up, until the window ends (``Retry-After``). Behind a proxy
the address is the one uvicorn takes from ``X-Forwarded-For`` for trusted proxies
(``--forwarded-allow-ips``).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from locator.core import keys
from locator.core.errors import TooManyRequests

MAX_FAILURES = 10
WINDOW_S = 600


async def check(redis: aioredis.Redis, *, client: str) -> None:
    """429 with the seconds left when this address has failed too often in its window."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.login_failures(client))
        pipe.ttl(keys.login_failures(client))
        count, ttl = await pipe.execute()
    if count is not None and int(count) >= MAX_FAILURES:
        raise TooManyRequests(
            "too many failed logins from this address: try again later",
            retry_after_s=int(ttl) if int(ttl) > 0 else WINDOW_S,
        )


async def failed(redis: aioredis.Redis, *, client: str) -> None:
    """Count one failed login; the first failure opens the window (Redis 6.2: no EXPIRE NX)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.login_failures(client), 0, ex=WINDOW_S, nx=True)
        pipe.incr(keys.login_failures(client))
        await pipe.execute()
