"""Redis client factory: timeouts, retries with backoff, and a client name per process."""

from __future__ import annotations

import os
from typing import Any, Protocol, cast

import hiredis
import redis
import redis.asyncio as aioredis
from redis._parsers.encoders import Encoder
from redis.backoff import ExponentialBackoff
from redis.connection import PythonRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from locator.core import keys, shards
from locator.core.errors import ConfigError

_RETRYABLE: list[type[Exception]] = [RedisConnectionError, RedisTimeoutError]
# Keyed by what HOMEWARD_REDIS_URL turned out to name.
_MODE_MISMATCH = {
    "plain": "bad setting HOMEWARD_REDIS_CLUSTER=true: HOMEWARD_REDIS_URL names a Redis "
    "without cluster mode (unset HOMEWARD_REDIS_CLUSTER or name a cluster node)",
    "cluster": "HOMEWARD_REDIS_URL names a Redis Cluster node: set HOMEWARD_REDIS_CLUSTER=true "
    "(or name a plain Redis)",
}


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


class CommandBatch(Protocol):
    """What a batch of pipelined commands offers (both kinds of pipeline below)."""

    def execute_command(self, *args: Any) -> Any: ...

    def get(self, name: str) -> Any: ...

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: str) -> Any: ...

    def zadd(self, name: str, mapping: dict[str, float]) -> Any: ...

    def zrem(self, name: str, *values: str) -> Any: ...

    def execute(self, raise_on_error: bool = True) -> list[Any]: ...

    def __len__(self) -> int: ...


class StreamingPipeline:
    """A non-transactional pipeline that writes while it is being filled.

    redis-py's pipeline writes everything at ``execute``: Redis sits idle while the caller
    builds a batch, then the caller sits idle while Redis runs it. Here every ``CHUNK``
    commands (or ``CHUNK_BYTES``: one call of many items) go out as they are added, so
    Redis runs a batch's first script calls while the caller still prepares the rest.
    Replies are read at ``execute``, in order, raw (no response callbacks: only for commands
    such as GET and EVALSHA that need none); an error reply is returned in its place or
    raised, like ``execute(raise_on_error=...)``.
    """

    CHUNK = 16
    CHUNK_BYTES = 8192

    def __init__(self, client: redis.Redis, *, after: StreamingPipeline | None = None) -> None:
        self._pool = client.connection_pool
        self._conn: Any = None
        self._buffer: list[bytes] = []
        self._buffered = 0  # bytes
        self._count = 0
        self._sent = False
        # Handed on to the pipeline that follows on this connection: that one releases it.
        self._handed_on = False
        if after is not None:
            after.send()
            if after._conn is not None:
                # Redis answers one connection in order: this pipeline's commands run after
                # every command of ``after``, and its replies come after that one's.
                self._conn, self._sent = after._conn, True
                after._handed_on = True

    def execute_command(self, *args: Any) -> None:
        packed = _PACKER.pack(*args)
        self._buffer += packed
        self._buffered += sum(len(part) for part in packed)
        self._count += 1
        if self._count % self.CHUNK == 0 or self._buffered >= self.CHUNK_BYTES:
            self._flush()

    def get(self, name: str) -> None:
        self.execute_command("GET", name)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: str) -> None:
        self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    def zadd(self, name: str, mapping: dict[str, float]) -> None:
        self.execute_command("ZADD", name, *(x for m, s in mapping.items() for x in (s, m)))

    def zrem(self, name: str, *values: str) -> None:
        self.execute_command("ZREM", name, *values)

    def __len__(self) -> int:
        return self._count

    def send(self) -> None:
        """Write every command added so far (``execute`` still reads the replies)."""
        self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._conn is None:
            self._conn = self._pool.get_connection()
        try:
            # The health check (a PING on a long-idle connection) only before the first write.
            self._conn.send_packed_command([b"".join(self._buffer)], check_health=not self._sent)
        except BaseException:
            self._close(broken=True)
            raise
        self._sent = True
        self._buffer = []
        self._buffered = 0

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Every reply, in the order the commands were added."""
        if not self._count:
            return []
        self._flush()
        replies: list[Any] = []
        try:
            for _ in range(self._count):
                try:
                    replies.append(self._conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            self._close(broken=True)
            raise
        self._close(broken=False)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, redis.ResponseError):
                    raise reply
        return replies

    def _close(self, *, broken: bool) -> None:
        conn, self._conn = self._conn, None
        self._count = 0
        if conn is None:
            return
        if broken:
            conn.disconnect()  # replies may still be on the way: never hand it to anyone else
        if not self._handed_on:  # else the pipeline that follows on it still reads from it
            self._pool.release(conn)

    def __del__(self) -> None:
        # Abandoned while filled (the caller raised): its connection has unread replies.
        if self._conn is not None:
            self._close(broken=True)


def command_batch(client: Any, *, after: CommandBatch | None = None) -> CommandBatch:
    """A streaming pipeline on a plain client; redis-py's own pipeline on anything else.

    ``after``: a streaming pipeline whose replies are not read yet; this one continues on
    its connection, so Redis runs these commands after all of its (a cluster pipeline
    sends nothing before ``execute``: there the caller's order of ``execute`` is the order).
    """
    if isinstance(client, redis.Redis):
        return StreamingPipeline(
            client, after=after if isinstance(after, StreamingPipeline) else None
        )
    batch: CommandBatch = client.pipeline(transaction=False)
    return batch


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

        try:
            node: Any = RedisCluster.from_url(url, retry=retry, **_policy(process))
        except RedisClusterException as exc:
            # redis-py's only sign of a plain server: the reason inside its generic message.
            if "Cluster mode is not enabled" not in str(exc):
                raise
            raise ConfigError(_MODE_MISMATCH["plain"]) from None
        return cast(redis.Redis, node)
    return redis.Redis.from_url(url, retry=retry, command_packer=_PACKER, **_policy(process))


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
    """Record the store's shard count; refuse another count or a plain client on a cluster.

    A different count would put an elder's new entries and timers in other shards than her
    old ones: the order per elder and pending timers would be lost without a word.
    """
    if not is_cluster(client) and client.info("cluster").get("cluster_enabled"):
        # A plain client on a cluster node would fail later, key by key, with MOVED or
        # "Hash slot not served".
        raise ConfigError(_MODE_MISMATCH["cluster"])
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
