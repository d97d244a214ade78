"""The one way to run Lua: ``Script`` objects, from a package's ``.lua`` file or a string.

A script runs by EVALSHA. A server that does not know it (restarted, failed over, a new
cluster node) answers NOSCRIPT: the script is loaded once and the call repeated. Queued in
a pipeline, the script is registered with it, so redis-py checks SCRIPT EXISTS and loads it
before the pipeline runs. On redis-py's cluster clients EVALSHA goes to the slot of its
first key (every key of one call must share a hash tag) and SCRIPT LOAD to every primary;
a cluster pipeline cannot load scripts, so ``ensure_loaded`` runs first there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.asyncio.cluster import ClusterPipeline as AsyncClusterPipeline
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import NoScriptError

SyncClient = redis.Redis | RedisCluster | Pipeline | ClusterPipeline
AsyncClient = aioredis.Redis | AsyncRedisCluster | AsyncPipeline | AsyncClusterPipeline
Value = str | bytes | int | float


class Script:
    """One Lua script: its text and SHA1, run on sync or async clients, plain or cluster."""

    def __init__(self, source: str, *, name: str = "inline") -> None:
        # ``script`` and ``sha`` are the attributes redis-py's pipelines read and update
        # when they load the scripts registered with them (``Pipeline.load_scripts``).
        self.script = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self.name = name

    @classmethod
    def from_package(cls, package: str, filename: str) -> Script:
        """A script kept as a ``.lua`` file inside a package (shipped with the wheel)."""
        text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
        return cls(text, name=filename)

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:8]})"

    def __call__(
        self, client: SyncClient, *, keys: Sequence[str] = (), args: Sequence[Value] = ()
    ) -> Any:
        """Run it now (a client) or queue it (a pipeline: the reply comes from ``execute``)."""
        if isinstance(client, ClusterPipeline):
            return client.evalsha(self.sha, len(keys), *keys, *args)
        if isinstance(client, Pipeline):
            client.scripts.add(self)  # type: ignore[arg-type]  # duck-typed: script, sha
            return client.evalsha(self.sha, len(keys), *keys, *args)
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.script)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def run_many(
        self, client: SyncClient, calls: Sequence[tuple[Sequence[str], Sequence[Value]]]
    ) -> list[Any]:
        """Many calls (each its own keys) in one pipeline: one round trip per node; replies.

        Loaded only when a server does not know it (a restart, a new cluster node): the calls
        it refused did not run and are sent again (a cluster pipeline cannot load scripts).
        """
        if not calls:
            return []
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for index in todo:
                script_keys, args = calls[index]
                pipe.evalsha(self.sha, len(script_keys), *script_keys, *args)
            results = pipe.execute(raise_on_error=False)
            missing = []
            for index, result in zip(todo, results, strict=True):
                if isinstance(result, NoScriptError) and attempt == 0:
                    missing.append(index)
                elif isinstance(result, Exception):
                    raise result
                else:
                    replies[index] = result
            if not missing:
                break
            client.script_load(self.script)  # on a cluster: every primary
            todo = missing
        return replies

    async def run_async(
        self, client: AsyncClient, *, keys: Sequence[str] = (), args: Sequence[Value] = ()
    ) -> Any:
        """``__call__`` for the asyncio clients (a pipeline queues it, as there)."""
        if isinstance(client, AsyncClusterPipeline):
            # Queued synchronously: awaiting the pipeline here would drop the command.
            return client.evalsha(self.sha, len(keys), *keys, *args)
        if isinstance(client, AsyncPipeline):
            client.scripts.add(self)  # type: ignore[arg-type]  # duck-typed: script, sha
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.script)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(
        self, pipe: Pipeline | ClusterPipeline, *, keys: Sequence[str], args: Sequence[Value]
    ) -> None:
        """Queue EVALSHA only, for a hot pipeline that ``ensure_loaded`` once beforehand.

        Skips the SCRIPT EXISTS round trip a registered script costs every ``execute``; an
        entry answered with ``NoScriptError`` (Redis restarted) is the caller's to redo.
        """
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def ensure_loaded(self, client: redis.Redis | RedisCluster) -> None:
        """Load it now (on a cluster: on every primary), before pipelines that cannot."""
        client.script_load(self.script)
