"""Redis client factory: timeouts, retries with backoff, and a client name per process."""

from __future__ import annotations

import os
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from locator.core import keys, shards
from locator.core.errors import ConfigError

_RETRYABLE: list[type[Exception]] = [RedisConnectionError, RedisTimeoutError]


def _client_name(process: str) -> str:
    return f"homeward-{process}-{os.getpid()}"


def _policy(process: str) -> dict[str, Any]:
    """Bounded timeouts for both clients: a stuck Redis must surface, not hang a request."""
    return {
        "decode_responses": True,
        "socket_timeout": 5,
        "socket_connect_timeout": 3,
        "health_check_interval": 30,
        "retry_on_error": _RETRYABLE,
        "client_name": _client_name(process),
    }


def async_client(url: str | None, *, process: str, cluster: bool = False) -> aioredis.Redis:
    """An asyncio Redis client with bounded timeouts and retried connection errors.

    ``cluster``: ``url`` names any node of a Redis Cluster; the cluster client routes each
    command by its keys' slot (typed as a plain client: the commands we use are the same).
    """
    if not url:
        raise ConfigError("no Redis URL: set HOMEWARD_REDIS_URL or start `homeward run`")
    from redis.asyncio.retry import Retry as AsyncRetry

    retry = AsyncRetry(ExponentialBackoff(cap=2.0, base=0.05), retries=3)
    if cluster:
        from redis.asyncio.cluster import RedisCluster as AsyncCluster

        node: Any = AsyncCluster.from_url(url, retry=retry, **_policy(process))
        return cast(aioredis.Redis, node)
    return aioredis.Redis.from_url(url, retry=retry, **_policy(process))


def sync_client(url: str | None, *, process: str, cluster: bool = False) -> redis.Redis:
    """A blocking Redis client with the same policy, for CLI commands and worker threads."""
    if not url:
        raise ConfigError("no Redis URL: set HOMEWARD_REDIS_URL or start `homeward run`")
    from redis.retry import Retry

    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=3)
    if cluster:
        from redis.cluster import RedisCluster

        node: Any = RedisCluster.from_url(url, retry=retry, **_policy(process))
        return cast(redis.Redis, node)
    return redis.Redis.from_url(url, retry=retry, **_policy(process))


def is_cluster(client: object) -> bool:
    """A cluster client: no command may span two slots (one call per shard)."""
    from redis.asyncio.cluster import RedisCluster as AsyncCluster
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster | AsyncCluster)


def get_many(client: redis.Redis, names: list[str]) -> list[Any]:
    """MGET of keys in any slots: on a cluster, one MGET per slot (redis-py groups them)."""
    if is_cluster(client):
        return list(client.mget_nonatomic(names))  # type: ignore[attr-defined]
    return list(client.mget(names))


async def get_many_async(client: aioredis.Redis, names: list[str]) -> list[Any]:
    """``get_many`` for the async clients (the API's reads of documents in many slots)."""
    if not names:
        return []
    if is_cluster(client):
        return list(await client.mget_nonatomic(names))  # type: ignore[attr-defined]
    return list(await client.mget(names))


def check_layout(client: redis.Redis) -> None:
    """Record the store's shard count, or refuse a process configured with another one.

    A different count would put an elder's new entries and timers in other shards than her
    old ones: the order per elder and pending timers would be lost without a word.
    """
    count = str(shards.count())
    client.hsetnx(keys.LAYOUT, "shards", count)
    raw: Any = client.hget(keys.LAYOUT, "shards")
    stored = None if raw is None else str(raw)
    if stored is not None and stored != count:
        raise ConfigError(
            f"bad setting HOMEWARD_SHARDS: this store was written with {stored} shards, "
            f"not {count} (resharding is not supported: keep {stored})"
        )


StreamEntries = list[tuple[str, dict[str, str]]]


def stream_reply(reply: Any) -> list[tuple[str, StreamEntries]]:
    """An XREAD/XREADGROUP reply of a decode_responses client, typed (None when it timed out)."""
    return [(str(stream), list(entries)) for stream, entries in (reply or [])]


def claimed_entries(reply: Any) -> StreamEntries:
    """The entries of an XAUTOCLAIM reply (Redis 6.2: [cursor, entries])."""
    return list(reply[1]) if reply else []
