"""Redis client factory: timeouts, retries with backoff, and a client name per process."""

from __future__ import annotations

import os
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis._parsers.encoders import Encoder
from redis.backoff import ExponentialBackoff
from redis.connection import PythonRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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


class FastPacker:
    """Commands of str/bytes/int/float arguments packed by hiredis in one C call.

    redis-py encodes every argument in a Python generator before handing them to hiredis,
    which encodes them the same way itself: for the ingest's script calls (about 45
    arguments each) that pass cost more than the script call's own Python. Anything hiredis
    refuses (None, bool, bytearray) and multi-word command names take redis-py's own path,
    so errors (``DataError``) and output stay redis-py's.
    """

    def __init__(self) -> None:
        encoder = Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]
        self._fallback = PythonRespSerializer(6000, encoder.encode)

    def pack(self, *args: Any) -> list[bytes]:
        name = args[0]
        if isinstance(name, str) and " " not in name:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        return list(self._fallback.pack(*args))  # type: ignore[no-untyped-call]


_PACKER = FastPacker()


def async_client(url: str | None, *, process: str) -> aioredis.Redis:
    """An asyncio Redis client with bounded timeouts and retried connection errors."""
    if not url:
        raise ConfigError("no Redis URL: set HOMEWARD_REDIS_URL or start `homeward run`")
    from redis.asyncio.retry import Retry as AsyncRetry

    retry = AsyncRetry(ExponentialBackoff(cap=2.0, base=0.05), retries=3)
    return aioredis.Redis.from_url(url, retry=retry, **_policy(process))


def sync_client(url: str | None, *, process: str) -> redis.Redis:
    """A blocking Redis client with the same policy, for CLI commands and worker threads."""
    if not url:
        raise ConfigError("no Redis URL: set HOMEWARD_REDIS_URL or start `homeward run`")
    from redis.retry import Retry

    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=3)
    return redis.Redis.from_url(url, retry=retry, command_packer=_PACKER, **_policy(process))


StreamEntries = list[tuple[str, dict[str, str]]]


def stream_reply(reply: Any) -> list[tuple[str, StreamEntries]]:
    """An XREAD/XREADGROUP reply of a decode_responses client, typed (None when it timed out)."""
    return [(str(stream), list(entries)) for stream, entries in (reply or [])]


def claimed_entries(reply: Any) -> StreamEntries:
    """The entries of an XAUTOCLAIM reply (Redis 6.2: [cursor, entries])."""
    return list(reply[1]) if reply else []
